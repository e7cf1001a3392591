//! A multi-partition system on meshwire: three partitions of ten nodes, each its own
//! overlay, and a router at each node that reaches "a node of partition X" with a
//! message and a request, without joining X's overlay, falling back when the
//! provider it chose first is dead.
//!
//! **One network, partition-aware peer selection.** Every node runs the same
//! network id and one DHT; a node keeps full peers of its own partition only (its
//! partition's nodes as persistent peers, no filling of outbound slots from the
//! DHT) and subscribes to its partition's topic. Separate network ids would make
//! separate overlays too, but nodes of different networks refuse each other's
//! handshake, so no router could ever reach another partition. Every node provides
//! `acc/partition/<X>` in the DHT; a router finds the providers of the partition it
//! wants and sends a request over a lookup-only connection, which takes no peer
//! slot and joins no mesh.
//!
//! `cargo run --release --example partitions` prints each route's outcome (the
//! provider that answered, each fallback taken) and exits 0 only if every route
//! succeeded and the fallback after the kill was taken.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meshwire::kad::key::key_from_name;
use meshwire::{
    ChannelConfig, Event, NodeBuilder, NodeHandle, PeerId, RouteOptions, RouteOutcome, Runtime,
};

const PARTITIONS: usize = 3;
const PER_PARTITION: usize = 10;
/// Routed traffic: transactions (a message, acknowledged empty) and queries.
const ROUTED: u32 = 7;
const NET: &str = "partitions-demo";

fn partition_key(p: usize) -> meshwire::kad::key::Key {
    key_from_name(&format!("acc/partition/{p}"))
}

/// Answers what is routed to this node: a transaction with an empty
/// acknowledgement, a query with this node's partition and index.
fn serve(node: NodeHandle, partition: usize, index: usize) {
    let events = node.events();
    std::thread::spawn(move || {
        while let Ok(ev) = events.recv() {
            if let Event::Request { id, data, .. } = ev {
                let answer = if data.starts_with(b"tx:") {
                    Vec::new()
                } else {
                    format!(
                        "partition {partition} node {index} answers {}",
                        String::from_utf8_lossy(&data)
                    )
                    .into_bytes()
                };
                let _ = node.respond(id, answer);
            }
        }
    });
}

/// Node `n` listens on a loopback address of its own /24, as nodes of a real
/// network would be spread (the DHT keeps few nodes of one /24 in a table).
fn start(rt: &Runtime, n: usize, seeds: &[(std::net::SocketAddr, PeerId)]) -> NodeHandle {
    let addr = std::net::SocketAddr::from(([127, 30 + n as u8, 0, 1], 0));
    let mut b = NodeBuilder::new(NET)
        .listen(addr)
        .channel(ChannelConfig::new(ROUTED));
    for (addr, id) in seeds {
        b = b.bootstrap_peer(*addr, Some(*id));
    }
    // Partition-aware peer selection: full peers come from the partition only.
    b.config_mut().fill_outbound = false;
    b.start_on(rt).expect("start node")
}

fn main() {
    let started = Instant::now();
    let rt = Runtime::new().expect("event loop");
    // The first node of each partition starts first and seeds the one DHT.
    let mut nodes: Vec<Vec<NodeHandle>> = vec![Vec::new(); PARTITIONS];
    let mut seeds = Vec::new();
    for (p, part) in nodes.iter_mut().enumerate() {
        let seed = start(&rt, p * PER_PARTITION, &seeds);
        seeds.push((seed.listen_addrs()[0], seed.peer_id()));
        part.push(seed);
    }
    for (p, part) in nodes.iter_mut().enumerate() {
        for i in 1..PER_PARTITION {
            part.push(start(&rt, p * PER_PARTITION + i, &seeds));
        }
    }
    // Each partition's overlay: a ring with chords, kept as persistent peers.
    for part in &nodes {
        for (i, n) in part.iter().enumerate() {
            for step in [1, 3] {
                let other = &part[(i + step) % PER_PARTITION];
                let _ = n.add_persistent_peer(other.listen_addrs()[0], Some(other.peer_id()));
            }
        }
    }
    let mut partition_of: HashMap<PeerId, (usize, usize)> = HashMap::new();
    for (p, part) in nodes.iter().enumerate() {
        for (i, n) in part.iter().enumerate() {
            partition_of.insert(n.peer_id(), (p, i));
            serve(n.clone(), p, i);
            let _ = n.subscribe(&format!("acc/partition/{p}/blocks"));
        }
    }
    // Everyone's DHT table fills before anyone provides, so the records land on
    // the nodes closest to each key.
    let tables_ready = wait(Duration::from_secs(30), || {
        nodes.iter().flatten().all(|n| {
            n.routing_table()
                .map(|t| t.len() >= PARTITIONS * PER_PARTITION / 2)
                .unwrap_or(false)
        })
    });

    eprintln!(
        "DHT tables filled: {tables_ready} ({:.1?})",
        started.elapsed()
    );
    for (p, part) in nodes.iter().enumerate() {
        for n in part {
            let _ = n.provide_with(partition_key(p), format!("partition={p}").into_bytes());
        }
    }
    // Every partition has its providers findable from everywhere.
    let findable = wait(Duration::from_secs(30), || {
        (0..PARTITIONS).all(|p| {
            let asker = &nodes[(p + 1) % PARTITIONS][0];
            asker
                .find_providers_blocking(partition_key(p), Duration::from_secs(5))
                .map(|r| {
                    // What each provider signed comes with it.
                    let tag = format!("partition={p}").into_bytes();
                    r.providers.len() >= PER_PARTITION / 2
                        && r.providers.iter().all(|pr| pr.metadata == tag)
                })
                .unwrap_or(false)
        })
    });
    eprintln!("providers findable: {findable} ({:.1?})", started.elapsed());
    // No partition's overlay holds a node of another.
    let mut mixed = 0;
    for n in nodes.iter().flatten() {
        let mine = partition_of[&n.peer_id()].0;
        mixed += n
            .peers()
            .iter()
            .filter(|p| partition_of.get(&p.id).is_some_and(|(q, _)| *q != mine))
            .count();
    }

    let opts = RouteOptions {
        fanout: 1,
        timeout: Duration::from_secs(5),
        attempts: 4,
    };
    let mut ok = 0;
    let mut failed = 0;
    let mut report =
        |what: &str, from: usize, to: usize, outcome: &RouteOutcome| -> Option<PeerId> {
            match outcome {
                RouteOutcome::Delivered {
                    peer,
                    answer,
                    failed: fallbacks,
                } => {
                    let (p, i) = partition_of.get(peer).copied().unwrap_or((usize::MAX, 0));
                    let good = p == to;
                    let mut line = format!(
                    "route {what:<7} partition {from} -> {to}: answered by partition {p} node {i}"
                );
                    if !answer.is_empty() {
                        line += &format!(" ({})", String::from_utf8_lossy(answer));
                    }
                    for (dead, why) in fallbacks {
                        let (dp, di) = partition_of.get(dead).copied().unwrap_or((usize::MAX, 0));
                        line += &format!("; fallback past partition {dp} node {di} ({why})");
                    }
                    println!("{line}");
                    if good {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                    Some(*peer)
                }
                other => {
                    println!("route {what:<7} partition {from} -> {to}: FAILED {other:?}");
                    failed += 1;
                    None
                }
            }
        };
    for (from, part) in nodes.iter().enumerate() {
        let router = &part[1];
        for to in (0..PARTITIONS).filter(|t| *t != from) {
            let key = partition_key(to);
            let tx = router.route(
                key,
                ROUTED,
                format!("tx:{from}->{to}").into_bytes(),
                opts.clone(),
            );
            report("message", from, to, &tx);
            let q = router.route(
                key,
                ROUTED,
                format!("height? from {from}").into_bytes(),
                opts.clone(),
            );
            report("request", from, to, &q);
        }
    }
    // Kill the provider partition 0's router last chose for partition 1: it ranks
    // first (the only one with a measured round trip), so the next routes must
    // fall back past it.
    let router = nodes[0][1].clone();
    let key = partition_key(1);
    let first = router.route(
        key,
        ROUTED,
        b"height? before the kill".to_vec(),
        opts.clone(),
    );
    let chosen = report("request", 0, 1, &first);
    let mut fallback_seen = false;
    if let Some(victim) = chosen {
        let (_, vi) = partition_of[&victim];
        println!("killing partition 1 node {vi}");
        nodes[1][vi].shutdown();
        for what in ["message", "request"] {
            let data = if what == "message" {
                b"tx:after the kill".to_vec()
            } else {
                b"height? after the kill".to_vec()
            };
            let outcome = router.route(key, ROUTED, data, opts.clone());
            if let RouteOutcome::Delivered { peer, failed, .. } = &outcome {
                fallback_seen |= *peer != victim && failed.iter().any(|(p, _)| *p == victim);
            }
            report(what, 0, 1, &outcome);
        }
    }
    println!(
        "{ok} routes delivered, {failed} failed; fallback past the killed provider: {}; \
         nodes of other partitions in any overlay: {mixed}; {:.1?}",
        if fallback_seen { "taken" } else { "NOT taken" },
        started.elapsed()
    );
    for n in nodes.iter().flatten() {
        n.shutdown();
    }
    let success = failed == 0 && fallback_seen && mixed == 0 && ok > 0;
    if success {
        println!("every route succeeded");
    }
    std::process::exit(if success { 0 } else { 1 });
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}
