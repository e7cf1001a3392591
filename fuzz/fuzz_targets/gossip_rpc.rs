//! Arbitrary bytes into the gossip router, as RPCs, as first fragments, and as
//! chunks of a stream whose genuine head arrived first, from a connected peer, with
//! a mesh formed and a message in the cache.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshwire::gossip::{stream, GossipConfig, Router};
use meshwire::identity::Keypair;
use meshwire::rng::Rng;
use meshwire::PeerId;

/// A genuine stream from peer 0: its head RPC and its id.
fn genuine() -> &'static (Vec<u8>, Vec<u8>) {
    static S: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    S.get_or_init(|| {
        let (head, _) = stream::build(&Keypair::from_seed([2; 32]), "t", 1, 9, &[7; 40_000], 16_320);
        let id = stream::head_id(&head).to_vec();
        let rpc = meshwire::wire::GossipRpc {
            head: vec![head],
            ..Default::default()
        };
        (prost::Message::encode_to_vec(&rpc), id)
    })
}

fn keys() -> &'static (Arc<Keypair>, Vec<PeerId>) {
    static K: OnceLock<(Arc<Keypair>, Vec<PeerId>)> = OnceLock::new();
    K.get_or_init(|| {
        let me = Arc::new(Keypair::from_seed([1; 32]));
        let peers = (0..4u8).map(|i| Keypair::from_seed([i + 2; 32]).peer_id()).collect();
        (me, peers)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let (me, peers) = keys();
    let now = Instant::now();
    let mut r = Router::new(GossipConfig::default(), Some(me.clone()), None, Rng::new(1), now);
    r.subscribe("t", now);
    for (i, p) in peers.iter().enumerate() {
        r.add_peer(*p, [10, 0, i as u8, 1].into(), now);
    }
    let _ = r.publish("t", b"cached".to_vec(), now);
    let from = peers[usize::from(mode) % peers.len()];
    if mode & 0x80 != 0 {
        r.handle_first_fragment(from, input, now);
    } else if mode & 0x40 != 0 {
        // Chunks of a stream in progress: index and data are the fuzzer's.
        let (head, id) = genuine();
        r.handle_rpc(from, head, now);
        let (index, data) = input.split_first().map_or((0, &[][..]), |(i, d)| (*i, d));
        let rpc = meshwire::wire::GossipRpc {
            chunk: vec![meshwire::wire::StreamChunk {
                id: id.clone(),
                index: u32::from(index),
                data: data.to_vec(),
            }],
            ..Default::default()
        };
        r.handle_rpc(from, &prost::Message::encode_to_vec(&rpc), now);
    } else {
        r.handle_rpc(from, input, now);
    }
    r.heartbeat(now + Duration::from_millis(250));
    while r.poll_output().is_some() {}
});
