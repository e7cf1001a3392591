//! P1 — gossip propagation delay (see BENCHMARKS.md).
//!
//! `cargo bench --bench propagation -- [--nodes N] [--dial D] [--msgs M] [--size S] [--interval-ms I] [--seed X]`
//!
//! Diagnostic switches, not part of the standard workload: `--no-idontwant`,
//! `--no-cut-through`, `--stream-eager N`, `--stream-publish N`, `--stream-chunk BYTES`,
//! `--set knob=value,...` (any setting `GossipConfig::set_knob` knows).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cpu_secs, node_addr, percentile, Args};
use meshwire::config::PeerLimits;
use meshwire::rng::Rng;
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, Runtime};
use parking_lot::Mutex;

const TOPIC: &str = "p1";

fn main() {
    let args = Args::parse();
    let n: usize = args.get("nodes", 64);
    let dial: usize = args.get("dial", 5);
    let msgs: usize = args.get("msgs", 200);
    let size: usize = args.get("size", 1024).max(8);
    let interval = Duration::from_millis(args.get("interval-ms", 10));
    let seed: u64 = args.get("seed", 42);
    let no_idontwant = args.flag("no-idontwant");
    let defaults = meshwire::gossip::GossipConfig::default();
    let cut_through = !args.flag("no-cut-through");
    let stream_eager: usize = args.get("stream-eager", defaults.stream_eager);
    let stream_publish: usize = args.get("stream-publish", defaults.stream_publish);
    let stream_chunk: usize = args.get("stream-chunk", defaults.stream_chunk);
    let mut gossip = meshwire::gossip::GossipConfig {
        idontwant: !no_idontwant,
        cut_through,
        stream_eager,
        stream_publish,
        stream_chunk,
        ..defaults
    };
    if let Err(e) = gossip.set_knobs(&args.get("set", String::new())) {
        panic!("--set: {e}");
    }
    let mut rng = Rng::new(seed);

    let runtimes = [Runtime::new().unwrap(), Runtime::new().unwrap()];
    eprintln!("P1: {n} nodes, each dialing {dial} ...");
    let nodes: Vec<NodeHandle> = (0..n)
        .map(|i| {
            NodeBuilder::new("bench-p1")
                .listen(node_addr(2000 + i))
                .channel(ChannelConfig::new(1))
                .rng_seed(seed ^ (i as u64) << 8)
                .kad(None)
                .gossip(Some(gossip.clone()))
                .limits(PeerLimits {
                    max_inbound: 64,
                    ..PeerLimits::default()
                })
                .start_on(&runtimes[i % 2])
                .expect("start node")
        })
        .collect();
    for node in &nodes {
        node.subscribe(TOPIC).unwrap();
    }
    for (i, node) in nodes.iter().enumerate() {
        let mut picked = HashSet::new();
        while picked.len() < dial.min(n - 1) {
            let j = rng.below(n as u64) as usize;
            if j != i && picked.insert(j) {
                node.dial(nodes[j].listen_addrs()[0], Some(nodes[j].peer_id()))
                    .unwrap();
            }
        }
    }
    // The overlay is formed when every node has its gossip mesh (at most 5 s).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
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
        "P1: overlay formed after {:?}; publishing {msgs} x {size} B ...",
        t.elapsed()
    );

    // One collector thread takes every node's events.
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; msgs]));
    let deliveries: Arc<Mutex<Vec<(usize, usize, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = nodes.iter().map(|x| x.events()).collect();
    let (got, halt) = (deliveries.clone(), stop.clone());
    let collector = std::thread::spawn(move || {
        let mut sel = crossbeam_channel::Select::new();
        for r in &receivers {
            sel.recv(r);
        }
        while !halt.load(Ordering::Relaxed) {
            let Ok(op) = sel.select_timeout(Duration::from_millis(50)) else {
                continue;
            };
            let i = op.index();
            if let Ok(Event::Gossip(ev)) = op.recv(&receivers[i]) {
                let now = Instant::now();
                let seq = u64::from_le_bytes(ev.data[..8].try_into().unwrap()) as usize;
                got.lock().push((seq, i, now));
            }
        }
    });

    let before: Vec<_> = nodes.iter().map(|x| x.metrics().unwrap()).collect();
    let dups_before = duplicates(&nodes);
    let cpu0 = cpu_secs();
    let mut origins = Vec::with_capacity(msgs);
    let start = Instant::now();
    for seq in 0..msgs {
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let origin = rng.below(n as u64) as usize;
        origins.push(origin);
        let mut payload = vec![0u8; size];
        payload[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        for b in payload[8..].iter_mut() {
            *b = rng.next_u64() as u8;
        }
        sent_at.lock()[seq] = Some(Instant::now());
        nodes[origin].publish(TOPIC, payload).expect("publish");
    }
    let expected = msgs * (n - 1);
    let wait_until = Instant::now() + Duration::from_secs(5);
    while deliveries.lock().len() < expected && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = cpu_secs() - cpu0;
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    let after: Vec<_> = nodes.iter().map(|x| x.metrics().unwrap()).collect();
    let dups_after = duplicates(&nodes);

    let bans: u64 = after.iter().map(|m| m.bans).sum();
    let drops: u64 = after.iter().flat_map(|m| m.drops.values()).sum();
    let disconnects: u64 = after.iter().flat_map(|m| m.disconnects.values()).sum();
    eprintln!("P1: bans {bans}, disconnects {disconnects}, drops {drops}");
    if std::env::var_os("P1_DEBUG").is_some() {
        let reasons: Vec<_> = after.iter().flat_map(|m| m.disconnects.iter()).collect();
        eprintln!("P1: disconnect reasons {reasons:?}");
        let have: HashSet<(usize, usize)> =
            deliveries.lock().iter().map(|(s, n, _)| (*s, *n)).collect();
        let mut missing = Vec::new();
        for (seq, origin) in origins.iter().enumerate() {
            for node in 0..n {
                if !have.contains(&(seq, node)) && *origin != node {
                    missing.push((seq, node));
                }
            }
        }
        eprintln!(
            "P1: missing (seq, node) incl. origins: {} e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(12)]
        );
    }
    let sent = sent_at.lock();
    let got = deliveries.lock();
    let mut lat = Vec::with_capacity(got.len());
    let mut tta = vec![0f64; msgs];
    for &(seq, _, t) in got.iter() {
        let Some(Some(s)) = sent.get(seq) else {
            continue;
        };
        let ms = t.saturating_duration_since(*s).as_secs_f64() * 1e3;
        lat.push(ms);
        tta[seq] = tta[seq].max(ms);
    }
    let written: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.bytes_written - b.bytes_written)
        .sum();
    let amplification = written as f64 / (msgs * size * (n - 1)) as f64;
    let dup_per_msg = (dups_after - dups_before) as f64 / expected as f64;
    println!(
        "{{\"bench\":\"P1\",\"impl\":\"meshwire\",\"nodes\":{n},\"dial\":{dial},\"msgs\":{msgs},\"size\":{size},\"delivered_ratio\":{:.6},\"lat_p50_ms\":{:.2},\"lat_p90_ms\":{:.2},\"lat_p99_ms\":{:.2},\"lat_max_ms\":{:.2},\"tta_p50_ms\":{:.2},\"tta_p99_ms\":{:.2},\"amplification\":{:.3},\"dup_per_msg\":{:.3},\"cpu_s\":{:.2}}}",
        got.len() as f64 / expected as f64,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.9),
        percentile(&mut lat, 0.99),
        percentile(&mut lat, 1.0),
        percentile(&mut tta, 0.5),
        percentile(&mut tta, 0.99),
        amplification,
        dup_per_msg,
        cpu
    );
    for x in &nodes {
        x.shutdown();
    }
}

/// Full copies received beyond the first, summed over the nodes.
fn duplicates(nodes: &[NodeHandle]) -> u64 {
    nodes
        .iter()
        .map(|x| {
            x.gossip_metrics()
                .unwrap()
                .get(TOPIC)
                .map_or(0, |m| m.duplicates)
        })
        .sum()
}
