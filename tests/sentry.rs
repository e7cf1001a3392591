//! Validators behind sentries, over real loopback TCP: a validator that runs no DHT
//! is never sent DHT traffic by the sentries that do, so it never bans them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use meshwire::{ChannelConfig, Keypair, NodeBuilder, NodeHandle, PeerId};

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

const VOTES_TOPIC: &str = "votes";

/// A full node of the public network on `rt`, knowing `seed`.
fn public_node(i: usize, seed: SocketAddr, rt: &meshwire::Runtime) -> NodeHandle {
    let n = NodeBuilder::new(NET)
        .listen(addr(i))
        .rng_seed(i as u64)
        .channel(ChannelConfig::new(VOTES))
        .bootstrap(seed)
        .start_on(rt)
        .expect("start node");
    n.subscribe(VOTES_TOPIC).unwrap();
    n
}

/// A sentry: DHT and gossip on, its validator unconditional and private.
fn sentry_of(
    i: usize,
    seed: u8,
    at: SocketAddr,
    validator: PeerId,
    bootstrap: Option<SocketAddr>,
) -> NodeHandle {
    let mut b = NodeBuilder::new(NET)
        .listen(at)
        .rng_seed(i as u64)
        .keypair(Keypair::from_seed([seed; 32]))
        .channel(ChannelConfig::new(VOTES))
        .unconditional_peer(validator)
        .private_peer(validator);
    if let Some(s) = bootstrap {
        b = b.bootstrap(s);
    }
    let n = b.start().expect("start sentry");
    n.subscribe(VOTES_TOPIC).unwrap();
    n
}

/// Every node but the validator has every one of `ids` within the timeout.
fn all_got(nodes: &[NodeHandle], ids: &[meshwire::gossip::MessageId], timeout: Duration) -> bool {
    let rxs: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    let mut got: Vec<std::collections::HashSet<_>> = vec![Default::default(); nodes.len()];
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        for (i, rx) in rxs.iter().enumerate() {
            for ev in rx.try_iter() {
                if let meshwire::Event::Gossip(g) = ev {
                    got[i].insert(g.id);
                }
            }
        }
        if got.iter().all(|g| ids.iter().all(|id| g.contains(id))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_validator_behind_two_sentries_stays_hidden_connected_and_heard_through_restarts() {
    let v_key = Keypair::generate().unwrap();
    let v_id = v_key.peer_id();
    let seeds = [62u8, 63];
    let ids = seeds.map(|s| Keypair::from_seed([s; 32]).peer_id());
    let mut sentries = vec![sentry_of(620, seeds[0], addr(620), v_id, None)];
    let first = sentries[0].listen_addrs()[0];
    sentries.push(sentry_of(621, seeds[1], addr(621), v_id, Some(first)));
    let s_addrs = [first, sentries[1].listen_addrs()[0]];
    let rt = meshwire::Runtime::new().unwrap();
    let public: Vec<NodeHandle> = (0..27)
        .map(|i| public_node(630 + i, s_addrs[0], &rt))
        .collect();
    // The validator: no DHT, no outbound or inbound slots; only its sentries, as
    // persistent peers in reserved slots.
    let validator = NodeBuilder::new(NET)
        .listen(addr(650))
        .rng_seed(650)
        .keypair(v_key)
        .channel(ChannelConfig::new(VOTES))
        .kad(None)
        .limits(meshwire::config::PeerLimits {
            max_inbound: 0,
            max_outbound: 0,
            ..Default::default()
        })
        .persistent_peer(s_addrs[0], Some(ids[0]))
        .persistent_peer(s_addrs[1], Some(ids[1]))
        .start()
        .expect("start validator");
    validator.subscribe(VOTES_TOPIC).unwrap();
    let only_sentries = |v: &NodeHandle| {
        let mut p: Vec<_> = v.peers().iter().map(|p| p.id).collect();
        p.sort();
        let mut want = ids.to_vec();
        want.sort();
        p == want
    };
    assert!(eventually(Duration::from_secs(20), || only_sentries(
        &validator
    )));
    assert!(eventually(Duration::from_secs(30), || public.iter().all(
        |n| n.mesh_peers(VOTES_TOPIC).is_ok_and(|m| !m.is_empty())
    )));
    let mut round = 0u32;
    let mut vote = |v: &NodeHandle| {
        let ids: Vec<_> = (0..5)
            .map(|k| {
                round += 1;
                v.publish(VOTES_TOPIC, format!("vote {round}.{k}").into_bytes())
                    .unwrap()
            })
            .collect();
        ids
    };
    // The validator votes; every other node (the public ones and `sentries`) hears.
    let mut heard_everywhere = |sentries: &[NodeHandle]| {
        let heard = vote(&validator);
        let listeners: Vec<NodeHandle> = public.iter().chain(sentries).cloned().collect();
        all_got(&listeners, &heard, Duration::from_secs(20))
    };
    assert!(
        heard_everywhere(&sentries),
        "a vote did not reach every node"
    );
    // Each sentry restarts in turn (same key, same address); the validator redials.
    for i in 0..2 {
        sentries[i].shutdown();
        assert!(eventually(Duration::from_secs(10), || !validator
            .peers()
            .iter()
            .any(|p| p.id == ids[i])));
        let other = s_addrs[1 - i];
        sentries[i] = sentry_of(620 + i, seeds[i], s_addrs[i], v_id, Some(other));
        assert!(
            eventually(Duration::from_secs(30), || only_sentries(&validator)),
            "the validator did not get back to exactly its sentries"
        );
        assert!(eventually(Duration::from_secs(30), || sentries[i]
            .mesh_peers(VOTES_TOPIC)
            .is_ok_and(|m| m.len() >= 2)));
        assert!(
            heard_everywhere(&sentries),
            "after sentry {i} restarted, a vote did not reach every node"
        );
    }
    // Hidden: no table anywhere holds the validator, and it never banned a sentry.
    for n in public.iter().chain(sentries.iter()) {
        let table = n.routing_table().unwrap();
        assert!(
            table.iter().all(|r| r.id != v_id),
            "the validator is in a table"
        );
    }
    let m = validator.metrics().unwrap();
    assert_eq!(m.bans, 0, "{m:?}");
    assert!(only_sentries(&validator));
    validator.shutdown();
    for n in public.iter().chain(sentries.iter()) {
        n.shutdown();
    }
}
