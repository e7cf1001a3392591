//! Gossip over real loopback TCP: delivery exactly once, validation, mesh bounds,
//! churn and late joiners.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use meshwire::gossip::{MessageId, Validation};
use meshwire::rng::Rng;
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, PeerId, Runtime};

const TOPIC: &str = "blocks";

struct Net {
    nodes: Vec<NodeHandle>,
    _rts: [Runtime; 2],
}

fn node(i: usize, rt: &Runtime, reject_bad: bool) -> NodeHandle {
    let mut b = NodeBuilder::new(NET)
        .listen(addr(1000 + i))
        .rng_seed(i as u64)
        .kad(None)
        .channel(ChannelConfig::new(1));
    if reject_bad {
        b = b.gossip_validator(|_, data| {
            if data.starts_with(b"bad") {
                Validation::Reject
            } else {
                Validation::Accept
            }
        });
    }
    let n = b.start_on(rt).expect("start");
    n.subscribe(TOPIC).unwrap();
    n
}

/// `n` nodes, each dialing `dial` random others, meshes formed.
fn network(n: usize, dial: usize, reject_bad: bool) -> Net {
    let rts = [Runtime::new().unwrap(), Runtime::new().unwrap()];
    let nodes: Vec<_> = (0..n).map(|i| node(i, &rts[i % 2], reject_bad)).collect();
    let mut rng = Rng::new(5);
    for (i, a) in nodes.iter().enumerate() {
        let mut picked = HashSet::new();
        while picked.len() < dial {
            let j = rng.below(n as u64) as usize;
            if j != i && picked.insert(j) {
                a.dial(nodes[j].listen_addrs()[0], Some(nodes[j].peer_id()))
                    .unwrap();
            }
        }
    }
    assert!(eventually(Duration::from_secs(20), || nodes.iter().all(
        |x| {
            let peers = x.peers().len();
            peers > 0
                && x.mesh_peers(TOPIC)
                    .map(|m| m.len() >= peers.min(6))
                    .unwrap_or(false)
        }
    )));
    Net { nodes, _rts: rts }
}

/// Every gossip delivery per node, collected until `want` per node or the timeout.
fn collect(nodes: &[NodeHandle], want: usize, timeout: Duration) -> Vec<Vec<(MessageId, Vec<u8>)>> {
    let rxs: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    let mut got = vec![Vec::new(); nodes.len()];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && got.iter().any(|g| g.len() < want) {
        for (i, rx) in rxs.iter().enumerate() {
            for ev in rx.try_iter() {
                if let Event::Gossip(g) = ev {
                    got[i].push((g.id, g.data));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Anything late (a duplicate would show here).
    std::thread::sleep(Duration::from_millis(300));
    for (i, rx) in rxs.iter().enumerate() {
        for ev in rx.try_iter() {
            if let Event::Gossip(g) = ev {
                got[i].push((g.id, g.data));
            }
        }
    }
    got
}

#[test]
fn sixty_four_nodes_deliver_every_message_exactly_once_with_meshes_in_bounds() {
    let net = network(64, 5, false);
    // Between heartbeats a mesh may hold grafts past d_hi (12), never past d_max,
    // and may drop below d_lo for a while: a neighbour trimming its own mesh prunes
    // us, and a node with few peers may graft that one again only after the prune
    // backoff. So every mesh must be within bounds at one moment within a backoff,
    // not at any given instant.
    let config = meshwire::gossip::GossipConfig::default();
    let d_max = config.d_max;
    let out_of_bounds = || -> Vec<(usize, usize)> {
        net.nodes
            .iter()
            .map(|n| (n.mesh_peers(TOPIC).unwrap().len(), n.peers().len()))
            .filter(|&(mesh, peers)| peers >= 6 && !(6..=d_max).contains(&mesh))
            .collect()
    };
    let deadline = Instant::now() + config.prune_backoff + Duration::from_secs(1);
    let mut bad = out_of_bounds();
    while !bad.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        bad = out_of_bounds();
    }
    assert!(bad.is_empty(), "(mesh, peers) out of bounds: {bad:?}");
    let mut ids: HashMap<MessageId, usize> = HashMap::new();
    for k in 0..40usize {
        let origin = (k * 11) % 64;
        let id = net.nodes[origin]
            .publish(TOPIC, format!("block {k}").into_bytes())
            .unwrap();
        ids.insert(id, origin);
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = collect(&net.nodes, 39, Duration::from_secs(20));
    for (i, g) in got.iter().enumerate() {
        let mut seen = HashSet::new();
        for (id, _) in g {
            assert!(seen.insert(*id), "node {i} got a message twice");
            assert!(ids.contains_key(id));
        }
        let expected = ids.values().filter(|o| **o != i).count();
        assert_eq!(seen.len(), expected, "node {i} missed messages");
    }
    for n in &net.nodes {
        n.shutdown();
    }
}

#[test]
fn invalid_messages_are_not_forwarded_and_their_sender_is_penalized() {
    let net = network(16, 3, true);
    let liar = &net.nodes[0];
    for k in 0..12 {
        liar.publish(TOPIC, format!("bad {k}").into_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    net.nodes[5].publish(TOPIC, b"good".to_vec()).unwrap();
    let got = collect(&net.nodes, 1, Duration::from_secs(10));
    for (i, g) in got.iter().enumerate().skip(1) {
        assert!(
            g.iter().all(|(_, d)| !d.starts_with(b"bad")),
            "node {i} delivered an invalid message"
        );
        if i != 5 {
            assert_eq!(g.len(), 1, "node {i} missed the valid message");
        }
    }
    // Its direct peers rejected them all and penalized it: banned after enough.
    let liar_id: PeerId = liar.peer_id();
    let rejected: u64 = net.nodes[1..]
        .iter()
        .map(|n| {
            n.gossip_metrics()
                .unwrap()
                .get(TOPIC)
                .map_or(0, |m| m.rejected)
        })
        .sum();
    // Once its score sinks it is graylisted, then banned, so later ones are not even
    // validated: at least its first few were rejected.
    assert!(rejected >= 3, "only {rejected} rejections");
    assert!(eventually(Duration::from_secs(5), || net.nodes[1..]
        .iter()
        .any(|n| n.metrics().unwrap().bans > 0)));
    for n in &net.nodes[1..] {
        if n.metrics().unwrap().bans > 0 {
            assert!(
                n.peers().iter().all(|p| p.id != liar_id),
                "banned liar still connected"
            );
        }
    }
    for n in &net.nodes {
        n.shutdown();
    }
}

#[test]
fn after_16_of_64_nodes_die_every_live_node_gets_every_new_message() {
    let net = network(64, 5, false);
    // Kill a quarter while messages are flowing.
    for k in 0..10 {
        net.nodes[(k * 7) % 64]
            .publish(TOPIC, format!("before {k}").into_bytes())
            .unwrap();
    }
    let dead: HashSet<usize> = (0..64).filter(|i| i % 4 == 3).collect();
    for i in &dead {
        net.nodes[*i].shutdown();
    }
    let live: Vec<NodeHandle> = (0..64)
        .filter(|i| !dead.contains(i))
        .map(|i| net.nodes[i].clone())
        .collect();
    // Drop what arrived so far.
    let _ = collect(&live, 0, Duration::from_millis(1));
    let mut ids = HashMap::new();
    for k in 0..30usize {
        let origin = (k * 5) % live.len();
        let id = live[origin]
            .publish(TOPIC, format!("after {k}").into_bytes())
            .unwrap();
        ids.insert(id, origin);
        std::thread::sleep(Duration::from_millis(10));
    }
    let got = collect(&live, 29, Duration::from_secs(20));
    for (i, g) in got.iter().enumerate() {
        let seen: HashSet<MessageId> = g
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| ids.contains_key(id))
            .collect();
        let expected = ids.values().filter(|o| **o != i).count();
        assert_eq!(
            seen.len(),
            expected,
            "live node {i} missed messages after the kill"
        );
    }
    for n in &live {
        n.shutdown();
    }
}

#[test]
fn a_late_joiner_gets_into_the_mesh_and_receives_new_messages() {
    let net = network(20, 3, false);
    let rt = Runtime::new().unwrap();
    let late = node(900, &rt, false);
    for j in [2, 7, 13] {
        late.dial(net.nodes[j].listen_addrs()[0], None).unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || late
        .mesh_peers(TOPIC)
        .map(|m| m.len() >= 3)
        .unwrap_or(false)));
    let id = net.nodes[17].publish(TOPIC, b"news".to_vec()).unwrap();
    let got = collect(std::slice::from_ref(&late), 1, Duration::from_secs(10));
    assert_eq!(got[0].iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![id]);
    late.shutdown();
    for n in &net.nodes {
        n.shutdown();
    }
}
