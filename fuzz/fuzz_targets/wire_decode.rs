//! Every wire message decoded from arbitrary bytes, plain and length-delimited; what
//! decodes must re-encode and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwire::wire;
use prost::Message;

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(msg) = M::decode(data) {
        let again = M::decode(msg.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(msg, again);
    }
    let _ = M::decode_length_delimited(data);
}

fuzz_target!(|data: &[u8]| {
    check::<wire::InitHello>(data);
    check::<wire::RespHello>(data);
    check::<wire::HandshakeReject>(data);
    check::<wire::ResponderMessage>(data);
    check::<wire::InitFinish>(data);
    check::<wire::Auth>(data);
    check::<wire::NodeInfo>(data);
    check::<wire::Packet>(data);
    check::<wire::Ping>(data);
    check::<wire::PacketMsg>(data);
    check::<wire::Credit>(data);
    check::<wire::Close>(data);
});
