//! Validators behind sentries, over real loopback TCP: a validator that runs no DHT
//! is never sent DHT traffic by the sentries that do, so it never bans them.

mod common;

use std::time::Duration;

use common::*;
use meshwire::{ChannelConfig, Keypair, NodeBuilder, NodeHandle};

const VOTES: u32 = 1;

fn sentry(i: usize, seed: Option<std::net::SocketAddr>) -> NodeHandle {
    let mut b = NodeBuilder::new(NET)
        .listen(addr(i))
        .rng_seed(i as u64)
        .channel(ChannelConfig::new(VOTES));
    if let Some(s) = seed {
        b = b.bootstrap(s);
    }
    b.start().expect("start sentry")
}

#[test]
fn a_validator_without_the_dht_is_sent_no_dht_traffic_and_keeps_its_sentry() {
    let s = sentry(600, None);
    let others: Vec<NodeHandle> = (1..4)
        .map(|i| sentry(600 + i, Some(s.listen_addrs()[0])))
        .collect();
    let validator = NodeBuilder::new(NET)
        .listen(addr(610))
        .rng_seed(610)
        .channel(ChannelConfig::new(VOTES))
        .kad(None)
        .persistent_peer(s.listen_addrs()[0], Some(s.peer_id()))
        .start()
        .expect("start validator");
    let v = validator.peer_id();
    assert!(eventually(Duration::from_secs(10), || s
        .peers()
        .iter()
        .any(|p| p.id == v)));
    // The sentry looks up keys: before, each lookup could ask the validator too
    // (it was in the sentry's table), a violation on the validator's side.
    for k in 0..20u8 {
        let key = *Keypair::from_seed([k; 32]).peer_id().as_bytes();
        let _ = s.find_node_blocking(key, Duration::from_secs(5));
    }
    let table = s.routing_table().expect("table");
    assert!(
        table.iter().all(|r| r.id != v),
        "the validator is in its sentry's DHT table"
    );
    let m = validator.metrics().expect("metrics");
    assert_eq!(m.bans, 0, "{m:?}");
    assert!(m.disconnects.is_empty(), "{:?}", m.disconnects);
    assert!(validator.peers().iter().any(|p| p.id == s.peer_id()));
    validator.shutdown();
    for n in others {
        n.shutdown();
    }
    s.shutdown();
}
