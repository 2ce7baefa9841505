//! A UDP datagram on the Raft port, decoded as the election loop decodes it
//! (`serde_json::from_slice::<Envelope>`, election/raft/mod.rs `receive`). What decodes must
//! encode and decode back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vip_userspace::election::raft::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        let bytes = serde_json::to_vec(&env).expect("an Envelope always encodes");
        let back: Envelope = serde_json::from_slice(&bytes).expect("our own encoding decodes");
        assert_eq!(back, env);
    }
});
