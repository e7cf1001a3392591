//! The DHT over real loopback TCP: joining through one seed, finding every node,
//! provider records, and punishment of garbage.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwire::kad::KAD_CHANNEL;
use meshwire::mux::packet;
use meshwire::{ChannelConfig, Keypair, NodeBuilder, NodeHandle, Runtime};

fn kad_node(i: usize, seed: Option<std::net::SocketAddr>, rt: &Runtime) -> NodeHandle {
    let mut b = NodeBuilder::new(NET)
        .listen(addr(i))
        .rng_seed(i as u64)
        .channel(ChannelConfig::new(1));
    if let Some(s) = seed {
        b = b.bootstrap(s);
    }
    b.start_on(rt).expect("start")
}

#[test]
fn fifty_nodes_that_know_one_seed_find_every_other_node() {
    // Two loop threads, one per core: 2,450 lookups on one thread of a debug
    // build can outlast the 2 s request timeout, which is not what this tests.
    let rts = [Runtime::new().unwrap(), Runtime::new().unwrap()];
    let seed = kad_node(500, None, &rts[0]);
    let seed_addr = seed.listen_addrs()[0];
    let mut nodes = vec![seed];
    for i in 1..50 {
        nodes.push(kad_node(500 + i, Some(seed_addr), &rts[i % 2]));
    }
    // Everyone joins: tables fill through the seed.
    assert!(eventually(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| n.routing_table().map(|t| t.len() >= 10).unwrap_or(false))
    }));
    let ids: Vec<_> = nodes.iter().map(|n| n.peer_id()).collect();
    let handles: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|n| {
            let ids = ids.clone();
            std::thread::spawn(move || {
                let mut found = 0;
                for id in ids.iter().filter(|id| **id != n.peer_id()) {
                    let t = std::time::Instant::now();
                    let r = n
                        .find_node_blocking(*id.as_bytes(), Duration::from_secs(20))
                        .unwrap_or_else(|e| {
                            panic!(
                                "lookup: {e} after {:?}, metrics {:?}",
                                t.elapsed(),
                                n.metrics()
                                    .map(|m| (m.drops, m.outbound, m.inbound, m.pending, m.bans))
                            )
                        });
                    if r.closest.first().map(|p| p.id) == Some(*id) {
                        found += 1;
                    }
                }
                found
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), 49, "node {i} did not find everyone");
    }
    // Outbound slots were filled from the table, at most 2 per /24 (one node each here).
    assert!(nodes
        .iter()
        .skip(1)
        .all(|n| n.metrics().unwrap().outbound >= 5));
    // Records are numbered by wall-clock seconds (a restarted node's record wins),
    // not all 1.
    let table = nodes[3].routing_table().unwrap();
    assert!(
        table.iter().all(|r| r.seq > 1_600_000_000),
        "record seq from the clock"
    );
    // A service announced by one node is found by another.
    let service = [0x5e; 32];
    nodes[17].provide(service).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        nodes[42]
            .find_providers_blocking(service, Duration::from_secs(10))
            .map(|r| r.providers.iter().any(|p| p.id() == ids[17]))
            .unwrap_or(false)
    }));
    for n in &nodes {
        n.shutdown();
    }
}

#[test]
fn a_peer_sending_dht_garbage_is_penalized_and_banned() {
    let rt = Runtime::new().unwrap();
    let node = kad_node(600, None, &rt);
    let key = Arc::new(Keypair::generate().unwrap());
    let target = node.listen_addrs()[0];
    for round in 0..3 {
        let mut raw = raw_handshake(
            target,
            "127.66.0.1".parse().unwrap(),
            key.clone(),
            vec![1, KAD_CHANNEL],
        )
        .unwrap();
        let mut frame = Vec::new();
        packet::put_msg(
            &mut frame,
            KAD_CHANNEL,
            true,
            b"\xff\xff\xff not a kad message",
            0,
            meshwire::mux::Tag::Plain,
        );
        raw.send_frame(&frame);
        if round < 2 {
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(node.metrics().unwrap().bans, 0);
        } else {
            assert!(
                raw.closed_by_peer(Duration::from_secs(5)),
                "not disconnected once banned"
            );
        }
    }
    assert_eq!(node.metrics().unwrap().bans, 1);
    node.shutdown();
}

#[test]
fn named_services_stop_being_found_once_their_provider_stops_and_records_carry_the_announced_address(
) {
    let kc = meshwire::kad::KadConfig {
        provider_ttl: Duration::from_secs(2),
        republish_every: Duration::from_millis(300),
        ..Default::default()
    };
    let node =
        |i: usize, seed: Option<std::net::SocketAddr>, announce: Option<std::net::SocketAddr>| {
            let mut b = NodeBuilder::new(NET)
                .listen(addr(i))
                .rng_seed(i as u64)
                .channel(ChannelConfig::new(1))
                .kad(Some(kc.clone()));
            if let Some(s) = seed {
                b = b.bootstrap(s);
            }
            if let Some(a) = announce {
                // It listens there too, or the dial-back would keep its record
                // out of every table; the announced one is all it announces.
                b = b.listen(a).announce(a);
            }
            b.start().expect("start")
        };
    let seed = node(560, None, None);
    let s_addr = seed.listen_addrs()[0];
    let public: std::net::SocketAddr = "127.77.0.1:42420".parse().unwrap();
    let provider = node(561, Some(s_addr), Some(public));
    let seeker = node(562, Some(s_addr), None);
    let (partition, other) = (
        meshwire::kad::key::key_from_name("acc/partition/X"),
        meshwire::kad::key::key_from_name("acc/partition/Y"),
    );
    assert_ne!(partition, other);
    // The record carries the announced address, not every bound one.
    let rec = record_in_table(&seed, provider.peer_id());
    assert_eq!(rec.addrs, vec![public]);
    provider.provide(partition).unwrap();
    provider.provide(other).unwrap();
    let finds = |key| {
        seeker
            .find_providers_blocking(key, Duration::from_secs(5))
            .is_ok_and(|r| r.providers.iter().any(|p| p.id() == provider.peer_id()))
    };
    assert!(eventually(Duration::from_secs(10), || finds(partition)));
    provider.stop_providing(partition).unwrap();
    // Past the TTL the stopped one is gone; the other, still republished, is found.
    std::thread::sleep(kc.provider_ttl + Duration::from_millis(700));
    assert!(!finds(partition), "found after stop_providing and the TTL");
    assert!(finds(other));
    for n in [seed, provider, seeker] {
        n.shutdown();
    }
}

#[test]
fn a_node_listening_on_the_unspecified_address_announces_one_peers_can_dial() {
    let seed = NodeBuilder::new(NET)
        .listen(addr(570))
        .rng_seed(570)
        .channel(ChannelConfig::new(1))
        .start()
        .expect("start");
    let any = NodeBuilder::new(NET)
        .listen("0.0.0.0:0".parse().unwrap())
        .rng_seed(571)
        .channel(ChannelConfig::new(1))
        .bootstrap(seed.listen_addrs()[0])
        .start()
        .expect("start");
    let port = any.listen_addrs()[0].port();
    let rec = record_in_table(&seed, any.peer_id());
    assert!(!rec.addrs.is_empty());
    for a in &rec.addrs {
        assert!(!a.ip().is_unspecified(), "announced {a}");
        assert_eq!(a.port(), port);
    }
    // And it is dialable there.
    let probe = NodeBuilder::new(NET)
        .listen(addr(572))
        .kad(None)
        .channel(ChannelConfig::new(1))
        .start()
        .expect("start");
    let events = probe.events();
    probe.dial(rec.addrs[0], Some(any.peer_id())).unwrap();
    connected(&events, any.peer_id());
    for n in [seed, any, probe] {
        n.shutdown();
    }
}

#[test]
fn a_lookup_that_outlasts_its_timeout_says_timed_out_not_closed() {
    // The node's loop is busy for a second in a (badly written) gossip validator,
    // so nothing it is asked meanwhile can be answered in time.
    let busy = NodeBuilder::new(NET)
        .listen(addr(575))
        .channel(ChannelConfig::new(1))
        .gossip_validator(|_, _| {
            std::thread::sleep(Duration::from_secs(1));
            meshwire::gossip::Validation::Accept
        })
        .start()
        .expect("start");
    let other = NodeBuilder::new(NET)
        .listen(addr(576))
        .channel(ChannelConfig::new(1))
        .start()
        .expect("start");
    busy.subscribe("t").unwrap();
    other.subscribe("t").unwrap();
    let events = busy.events();
    other
        .dial(busy.listen_addrs()[0], Some(busy.peer_id()))
        .unwrap();
    connected(&events, other.peer_id());
    assert!(eventually(Duration::from_secs(10), || other
        .mesh_peers("t")
        .is_ok_and(|m| m.contains(&busy.peer_id()))));
    other.publish("t", b"slow to check".to_vec()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        busy.find_node_blocking([7; 32], Duration::from_millis(200))
            .unwrap_err(),
        meshwire::SendError::TimedOut
    );
    other.shutdown();
    busy.shutdown();
}

/// `peer`'s record once it is in `node`'s DHT table (within 10 s).
fn record_in_table(node: &NodeHandle, peer: meshwire::PeerId) -> meshwire::record::PeerRecord {
    let find = || {
        node.routing_table()
            .ok()
            .and_then(|t| t.into_iter().find(|r| r.id == peer))
    };
    assert!(
        eventually(Duration::from_secs(10), || find().is_some()),
        "{peer} never entered the table"
    );
    find().expect("it is there")
}

#[test]
fn a_record_naming_an_address_nobody_answers_on_stays_out_of_the_table() {
    let rt = Runtime::new().unwrap();
    let seed = kad_node(580, None, &rt);
    let s_addr = seed.listen_addrs()[0];
    // It listens on one address and claims another, where nothing answers (it
    // could be a victim's): every node that took its word would dial there.
    let liar = NodeBuilder::new(NET)
        .listen(addr(581))
        .announce("127.78.0.1:9".parse().unwrap())
        .channel(ChannelConfig::new(1))
        .bootstrap(s_addr)
        .start_on(&rt)
        .expect("start");
    let honest = kad_node(582, Some(s_addr), &rt);
    // The honest joiner was dialed back and is in; so is the seed in its table.
    record_in_table(&seed, honest.peer_id());
    record_in_table(&honest, seed.peer_id());
    let in_table = |n: &NodeHandle| {
        n.routing_table()
            .unwrap()
            .iter()
            .any(|r| r.id == liar.peer_id())
    };
    assert!(
        !eventually(Duration::from_secs(3), || in_table(&seed)),
        "the unreachable record entered the table"
    );
    // The liar still talked to the seed: its lookups were served.
    assert!(liar
        .routing_table()
        .unwrap()
        .iter()
        .any(|r| r.id == seed.peer_id()));
    for n in [liar, honest, seed] {
        n.shutdown();
    }
}
