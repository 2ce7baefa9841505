//! A UDP datagram on the Raft port, decoded as the election loop decodes it: the frame
//! (`election::raft::auth::parse`: header, message, tag) and the message body
//! (`serde_json::from_slice::<Msg>`, reached in `Session::open` only after the tag checks
//! out). A frame that parses keeps its parts inside the datagram; a message that decodes
//! must encode and decode back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vip_userspace::election::raft::{auth, Msg};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body, tag)) = auth::parse(data) {
        assert!(body.len() + tag.len() <= data.len());
    }
    if let Ok(msg) = serde_json::from_slice::<Msg>(data) {
        let bytes = serde_json::to_vec(&msg).expect("a Msg always encodes");
        let back: Msg = serde_json::from_slice(&bytes).expect("our own encoding decodes");
        assert_eq!(back, msg);
    }
});
