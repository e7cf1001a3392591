//! K1 — DHT lookup (see BENCHMARKS.md).
//!
//! `cargo bench --bench lookup -- [--nodes N] [--lookups L] [--seed X]`

mod common;

use std::time::{Duration, Instant};

use common::{node_addr, percentile, Args};
use meshwire::kad::key::distance;
use meshwire::rng::Rng;
use meshwire::{ChannelConfig, NodeBuilder, NodeHandle, PeerId, Runtime};

fn main() {
    let args = Args::parse();
    let n: usize = args.get("nodes", 500);
    let lookups: usize = args.get("lookups", 200);
    let seed: u64 = args.get("seed", 42);
    let mut rng = Rng::new(seed);
    // Two loop threads for two cores.
    let runtimes = [Runtime::new().unwrap(), Runtime::new().unwrap()];

    eprintln!("K1: starting {n} nodes ...");
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = NodeBuilder::new("bench-k1")
            .listen(node_addr(100 + i))
            .channel(ChannelConfig::new(1))
            .rng_seed(seed ^ i as u64);
        {
            // Hundreds of nodes share this process's descriptors: no outbound filling,
            // and lookup connections are few and short-lived.
            let c = b.config_mut();
            c.fill_outbound = false;
            c.max_lookup_conns = 24;
            c.lookup_idle = Duration::from_secs(2);
        }
        if i > 0 {
            let j = rng.below(i as u64) as usize;
            b = b.bootstrap(nodes[j].listen_addrs()[0]);
        }
        let node = b.start_on(&runtimes[i % 2]).expect("start node");
        if i > 0 {
            // Joined: it knows someone, and its bootstrap lookups are under way.
            let t = Instant::now();
            while node.routing_table().map(|t| t.is_empty()).unwrap_or(true)
                && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        nodes.push(node);
        if (i + 1) % 100 == 0 {
            eprintln!("  {} nodes up", i + 1);
        }
    }
    // Let the joins' refresh lookups finish.
    let mut last = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let total: usize = nodes
            .iter()
            .map(|x| x.routing_table().map(|t| t.len()).unwrap_or(0))
            .sum();
        if total == last {
            break;
        }
        last = total;
    }
    eprintln!("K1: tables hold {last} entries in all; {lookups} lookups ...");

    let ids: Vec<PeerId> = nodes.iter().map(|x| x.peer_id()).collect();
    let (mut hops, mut lat) = (Vec::new(), Vec::new());
    let mut exact = 0;
    for _ in 0..lookups {
        let origin = rng.below(n as u64) as usize;
        let mut key = [0u8; 32];
        for c in key.chunks_mut(8) {
            c.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let t = Instant::now();
        let r = nodes[origin]
            .find_node_blocking(key, Duration::from_secs(30))
            .expect("lookup");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        hops.push(f64::from(r.hops));
        let mut truth: Vec<PeerId> = ids
            .iter()
            .copied()
            .filter(|id| *id != ids[origin])
            .collect();
        truth.sort_by_key(|id| distance(id.as_bytes(), &key));
        truth.truncate(20);
        let got: Vec<PeerId> = r.closest.iter().map(|p| p.id).collect();
        if got == truth {
            exact += 1;
        }
    }
    println!(
        "{{\"bench\":\"K1\",\"impl\":\"meshwire\",\"nodes\":{n},\"lookups\":{lookups},\"hops_p50\":{:.1},\"hops_p99\":{:.1},\"lat_p50_ms\":{:.2},\"lat_p99_ms\":{:.2},\"exact_k_closest_ratio\":{:.3}}}",
        percentile(&mut hops, 0.5),
        percentile(&mut hops, 0.99),
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        exact as f64 / lookups as f64
    );
    for x in &nodes {
        x.shutdown();
    }
}
