//! Bytes from a BGP peer, handled as a session handles them: netgauze's codec frames and
//! decodes messages until it needs more bytes or fails; a decode error becomes the
//! NOTIFICATION we would send back, an OPEN is read for its capabilities.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netgauze_bgp_pkt::{
    codec::{BgpCodec, BgpCodecDecoderError},
    notification::BgpNotificationMessage,
    BgpMessage,
};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let mut codec = BgpCodec::new(true);
    let mut buf = BytesMut::from(data);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some((msg, _))) => {
                if let BgpMessage::Open(o) = &msg {
                    let _ = vip_userspace::bgp::wire::peer_open(o);
                }
                let _ = format!("{:?}", msg.get_type());
            }
            Ok(None) => break,
            Err(e) => {
                if let BgpCodecDecoderError::BgpMessageParsingError(pe) = &e {
                    let n: BgpNotificationMessage = pe.clone().into();
                    let mut out = BytesMut::new();
                    let _ = BgpCodec::new(true).encode(BgpMessage::Notification(n), &mut out);
                }
                let _ = e.to_string();
                break;
            }
        }
    }
});
