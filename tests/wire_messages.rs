//! The wire contract's forward-compatibility rules on the generated types.

use meshwire::wire;
use prost::Message;

#[test]
fn packets_round_trip() {
    let packets = vec![
        wire::Packet {
            sum: Some(wire::packet::Sum::Ping(wire::Ping { nonce: 7 })),
        },
        wire::Packet {
            sum: Some(wire::packet::Sum::Pong(wire::Pong { nonce: 7 })),
        },
        wire::Packet {
            sum: Some(wire::packet::Sum::Msg(wire::PacketMsg {
                channel: 3,
                eof: true,
                data: vec![1, 2, 3],
                total_len: 0,
                kind: wire::MsgKind::Response as i32,
                request_id: 77,
                refuse_reason: 0,
            })),
        },
        wire::Packet {
            sum: Some(wire::packet::Sum::Credit(wire::Credit {
                channel: 3,
                bytes: 1 << 20,
            })),
        },
        wire::Packet {
            sum: Some(wire::packet::Sum::Close(wire::Close {
                reason: wire::CloseReason::Shutdown as i32,
            })),
        },
    ];
    let mut buf = Vec::new();
    for p in &packets {
        p.encode_length_delimited(&mut buf).unwrap();
    }
    let mut rest = buf.as_slice();
    for p in &packets {
        assert_eq!(
            &wire::Packet::decode_length_delimited(&mut rest).unwrap(),
            p
        );
    }
    assert!(rest.is_empty());
}

#[test]
fn unknown_fields_are_ignored() {
    let hello = wire::InitHello {
        version: 1,
        network_id: "net".into(),
        ephemeral: vec![9; 32],
        ciphers: vec![1, 2],
    };
    let mut bytes = hello.encode_to_vec();
    // Field 99, varint 5; and field 100, bytes "future".
    bytes.extend_from_slice(&[0x98, 0x06, 0x05]);
    bytes.extend_from_slice(&[0xa2, 0x06, 0x06]);
    bytes.extend_from_slice(b"future");
    assert_eq!(wire::InitHello::decode(bytes.as_slice()).unwrap(), hello);
}

#[test]
fn truncated_messages_are_errors_not_panics() {
    let msg = wire::PacketMsg {
        channel: 1,
        eof: false,
        data: vec![0; 100],
        ..Default::default()
    }
    .encode_to_vec();
    // Bytes 0..2 are the complete `channel` field; every cut after that falls inside
    // the `data` field's key, length or body.
    for cut in 3..msg.len() {
        assert!(
            wire::PacketMsg::decode(&msg[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}
