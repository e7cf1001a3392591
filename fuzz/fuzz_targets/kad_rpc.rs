//! Arbitrary bytes into the Kademlia RPC handler: as requests or answers from a
//! connected peer, and as answers to a real pending lookup request.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshwire::identity::Keypair;
use meshwire::kad::record::PeerRecord;
use meshwire::kad::{KadConfig, KadOutput, Kademlia};
use meshwire::rng::Rng;
use meshwire::wire;
use prost::Message;

struct Fixture {
    me: Keypair,
    peers: Vec<Keypair>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        me: Keypair::from_seed([1; 32]),
        peers: (0..4u8).map(|i| Keypair::from_seed([i + 2; 32])).collect(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let now = Instant::now();
    let addr = "10.0.0.1:4000".parse().unwrap();
    let mut kad = Kademlia::new(&f.me, &[addr], KadConfig::default(), Rng::new(1), now);
    // Introduce the peers so lookups have somewhere to go.
    for (i, p) in f.peers.iter().enumerate() {
        let rec = PeerRecord::sign(p, &[format!("10.0.{i}.1:4000").parse().unwrap()], 1);
        let ping = wire::KadRequest {
            id: i as u64,
            sender: Some(rec.to_wire()),
            body: Some(wire::kad_request::Body::Ping(wire::KadPing {})),
        };
        let msg = wire::KadMessage { msg: Some(wire::kad_message::Msg::Request(ping)) };
        kad.handle_message(p.peer_id(), None, &msg.encode_to_vec(), now);
    }
    kad.find_node([mode; 32], now);
    // The requests the lookup sent: answer one of them with fuzz bytes.
    let mut pending = Vec::new();
    while let Some(out) = kad.poll_output() {
        if let KadOutput::Send { peer, bytes, .. } = out {
            if let Ok(wire::KadMessage { msg: Some(wire::kad_message::Msg::Request(r)) }) =
                wire::KadMessage::decode(bytes.as_slice())
            {
                pending.push((peer, r.id));
            }
        }
    }
    let from = f.peers[usize::from(mode) % f.peers.len()].peer_id();
    if mode & 0x80 != 0 {
        // Raw bytes as a message.
        kad.handle_message(from, None, input, now);
    } else if let Ok(mut resp) = wire::KadResponse::decode(input) {
        // A structured answer to a real request.
        if let Some((peer, id)) = pending.get(usize::from(mode) % pending.len().max(1)) {
            resp.id = *id;
            let msg = wire::KadMessage { msg: Some(wire::kad_message::Msg::Response(resp)) };
            kad.handle_message(*peer, None, &msg.encode_to_vec(), now);
        }
    }
    kad.handle_timeout(now + Duration::from_secs(5));
    while kad.poll_output().is_some() {}
    while kad.poll_result().is_some() {}
});
