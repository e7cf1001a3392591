//! Arbitrary bytes into the gossip router, as RPCs and as first fragments from a
//! connected peer, with a mesh formed and a message in the cache.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshwire::gossip::{GossipConfig, Router};
use meshwire::identity::Keypair;
use meshwire::rng::Rng;
use meshwire::PeerId;

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
    } else {
        r.handle_rpc(from, input, now);
    }
    r.heartbeat(now + Duration::from_millis(250));
    while r.poll_output().is_some() {}
});
