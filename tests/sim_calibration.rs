//! The simulator against the real loopback: the same 64-node, 1 KiB workload (the
//! P1 topology: every node dials 5 random others, DHT off) on real sockets and in
//! the simulator with zero latency and unbounded bandwidth. Delivered ratio,
//! duplicates and hops must agree within the tolerances stated below: what the
//! protocol does may not depend on the simulator.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshwire::config::PeerLimits;
use meshwire::rng::Rng;
use meshwire::sim::{CostModel, LinkModel, Simulation};
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeConfig, NodeHandle, Runtime};

const TOPIC: &str = "p1";
const NODES: usize = 64;
const DIAL: usize = 5;
const MSGS: usize = 40;
const SIZE: usize = 1024;
const INTERVAL: Duration = Duration::from_millis(10);

/// Tolerances: delivered ratio exactly alike (both must deliver everything);
/// duplicates per delivery within 0.75 absolute (they depend on which copy wins a
/// race, which on a loaded loopback is the scheduler's choice); mean hops within 1.
/// How much slower a test (debug) build does the same work than the release
/// build the cost model was measured on.
const DEBUG_SLOWDOWN: f64 = if cfg!(debug_assertions) { 8.0 } else { 1.0 };
const DUP_TOLERANCE: f64 = 0.75;
const HOPS_TOLERANCE: f64 = 1.0;

/// The pairs P1 dials, from one seed.
fn topology(seed: u64) -> Vec<(usize, usize)> {
    let mut rng = Rng::new(seed);
    let mut pairs = Vec::new();
    for i in 0..NODES {
        let mut picked = HashSet::new();
        while picked.len() < DIAL {
            let j = rng.below(NODES as u64) as usize;
            if j != i && picked.insert(j) {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// (delivered ratio, duplicates per delivery, mean hops).
type Figures = (f64, f64, f64);

fn limits() -> PeerLimits {
    PeerLimits {
        max_inbound: 64,
        ..PeerLimits::default()
    }
}

fn loopback(seed: u64) -> Figures {
    let runtimes = [Runtime::new().unwrap(), Runtime::new().unwrap()];
    let nodes: Vec<NodeHandle> = (0..NODES)
        .map(|i| {
            // Each node in a /24 of its own, as in the simulator (the mesh keeps a
            // per-subnet limit).
            let addr = SocketAddr::from(([127, 30 + (i / 250) as u8, (i % 250) as u8, 1], 0));
            NodeBuilder::new("calibration")
                .listen(addr)
                .channel(ChannelConfig::new(1))
                .rng_seed(seed ^ (i as u64) << 8)
                .kad(None)
                .limits(limits())
                .start_on(&runtimes[i % 2])
                .expect("start node")
        })
        .collect();
    for n in &nodes {
        n.subscribe(TOPIC).unwrap();
    }
    for (i, j) in topology(seed) {
        nodes[i]
            .dial(nodes[j].listen_addrs()[0], Some(nodes[j].peer_id()))
            .unwrap();
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let formed = nodes.iter().all(|x| {
            let peers = x.peers().len();
            let mesh = x.mesh_peers(TOPIC).map(|m| m.len()).unwrap_or(0);
            peers > 0 && mesh >= peers.min(6)
        });
        if formed {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "loopback overlay after {:?}: {} peers, {} mesh links",
        t.elapsed(),
        nodes.iter().map(|x| x.peers().len()).sum::<usize>(),
        nodes
            .iter()
            .map(|x| x.mesh_peers(TOPIC).map_or(0, |m| m.len()))
            .sum::<usize>()
    );
    let events: Vec<_> = nodes.iter().map(NodeHandle::events).collect();
    let dups = |nodes: &[NodeHandle]| -> u64 {
        nodes
            .iter()
            .map(|n| {
                n.gossip_metrics()
                    .ok()
                    .and_then(|m| m.get(TOPIC).map(|t| t.duplicates))
                    .unwrap_or(0)
            })
            .sum()
    };
    let dups_before = dups(&nodes);
    let mut rng = Rng::new(seed ^ 1);
    for seq in 0..MSGS {
        let origin = rng.below(NODES as u64) as usize;
        let mut data = vec![0u8; SIZE];
        data[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        nodes[origin].publish(TOPIC, data).unwrap();
        std::thread::sleep(INTERVAL);
    }
    let (mut delivered, mut hops) = (0usize, 0u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered < MSGS * (NODES - 1) && Instant::now() < deadline {
        for rx in &events {
            while let Ok(ev) = rx.try_recv() {
                if let Event::Gossip(g) = ev {
                    delivered += 1;
                    hops += u64::from(g.hops);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let dup = (dups(&nodes) - dups_before) as f64;
    let expected = (MSGS * (NODES - 1)) as f64;
    for n in &nodes {
        n.shutdown();
    }
    (
        delivered as f64 / expected,
        dup / expected,
        hops as f64 / delivered.max(1) as f64,
    )
}

fn simulated(seed: u64) -> Figures {
    let mut template = NodeConfig::new("calibration");
    template.kad = None;
    template.limits = limits();
    template.mux.channels.push(ChannelConfig::new(1));
    // Like the loopback: the nodes share 2 cores (node i on core i mod 2, as node i
    // runs on loop thread i mod 2), at debug-build speed.
    let cost = CostModel {
        shared_cores: 2,
        scale: DEBUG_SLOWDOWN,
        ..CostModel::default()
    };
    let mut sim = Simulation::with_config(seed, LinkModel::Zero, cost, template);
    for _ in 0..NODES {
        let n = sim.add_node(Duration::ZERO);
        sim.subscribe(n, TOPIC);
    }
    for (i, j) in topology(seed) {
        sim.dial(i, j);
    }
    sim.run_until(Duration::from_secs(5));
    let dups = |sim: &mut Simulation| -> u64 { (0..NODES).map(|n| sim.duplicates(n, TOPIC)).sum() };
    let dups_before = dups(&mut sim);
    let before = sim.deliveries().len();
    let mut rng = Rng::new(seed ^ 1);
    for seq in 0..MSGS {
        let origin = rng.below(NODES as u64) as usize;
        let mut data = vec![0u8; SIZE];
        data[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        sim.publish(origin, TOPIC, data);
        let next = sim.now() + INTERVAL;
        sim.run_until(next);
    }
    let end = sim.now() + Duration::from_secs(10);
    sim.run_until(end);
    let got = &sim.deliveries()[before..];
    let delivered = got.len();
    let hops: u64 = got.iter().map(|d| u64::from(d.hops)).sum();
    let dup = (dups(&mut sim) - dups_before) as f64;
    let expected = (MSGS * (NODES - 1)) as f64;
    (
        delivered as f64 / expected,
        dup / expected,
        hops as f64 / delivered.max(1) as f64,
    )
}

#[test]
fn simulator_and_loopback_agree_on_the_p1_workload() {
    let (real_ratio, real_dup, real_hops) = loopback(42);
    let (sim_ratio, sim_dup, sim_hops) = simulated(42);
    eprintln!(
        "loopback: delivered {real_ratio:.4}, dup/msg {real_dup:.3}, hops {real_hops:.2}; \
         simulator: delivered {sim_ratio:.4}, dup/msg {sim_dup:.3}, hops {sim_hops:.2}"
    );
    assert_eq!(real_ratio, 1.0, "the loopback lost deliveries");
    assert_eq!(sim_ratio, 1.0, "the simulator lost deliveries");
    assert!(
        (real_dup - sim_dup).abs() <= DUP_TOLERANCE,
        "duplicates: loopback {real_dup:.3}, simulator {sim_dup:.3}"
    );
    assert!(
        (real_hops - sim_hops).abs() <= HOPS_TOLERANCE,
        "hops: loopback {real_hops:.2}, simulator {sim_hops:.2}"
    );
}
