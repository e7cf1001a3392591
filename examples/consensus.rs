//! A toy round-based consensus on meshwire's consensus API, to show the pieces
//! working together and to measure what a consensus engine cares about: the time
//! from a proposal to 2/3 of the votes, with and without bulk traffic beside it.
//!
//! N validators on loopback, fully connected. In round `r` the proposer (`r mod N`)
//! sends its block as parts on a low-priority channel; each validator votes on a
//! high-priority channel once it holds every part; a validator commits the round
//! when it holds the block and more than 2/3 of the votes, and the next round's
//! proposer then proposes. Transactions spread by gossip with deferred validation:
//! each validator's mempool thread checks them off the loop thread. The consensus
//! part of each validator is a reactor (its own ordered stream of peers and
//! messages). The second half of the rounds runs while validator 0 streams bulk
//! data to validator 1 on a third channel.
//!
//! `cargo run --release --example consensus -- --validators 7 --rounds 20`
//! prints per-round latency and exits 0 only if every round committed at every
//! validator and every transaction reached every mempool.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use meshwire::gossip::{GossipConfig, Validation};
use meshwire::mux::SendOptions;
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, PeerId, ReactorEvent, SendError};

const VOTES: u32 = 1;
const PARTS: u32 = 2;
const BULK: u32 = 3;
const TXS: &str = "txs";
/// Parts per block and bytes per part.
const PARTS_PER_BLOCK: u32 = 8;
const PART_SIZE: usize = 32 * 1024;
const TXS_PER_ROUND: usize = 5;
const ROUND_TIMEOUT: Duration = Duration::from_secs(15);

struct Args {
    validators: usize,
    rounds: u32,
}

fn args() -> Args {
    let mut a = Args {
        validators: 7,
        rounds: 20,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--validators", Some(v)) if v >= 2 => a.validators = v as usize,
            ("--rounds", Some(v)) if v >= 1 => a.rounds = v as u32,
            _ => {
                eprintln!("usage: consensus [--validators N (>= 2)] [--rounds R (>= 1)]");
                std::process::exit(2);
            }
        }
    }
    a
}

fn start(i: usize) -> NodeHandle {
    let gossip = GossipConfig {
        deferred_validation: true,
        ..GossipConfig::default()
    };
    let node = NodeBuilder::new("consensus-example")
        // One loopback address each: the per-IP limit counts connections per address.
        .listen(std::net::SocketAddr::from((
            [127, 0, 3 + (i / 250) as u8, (i % 250) as u8 + 1],
            0,
        )))
        .rng_seed(i as u64)
        .kad(None)
        .gossip(Some(gossip))
        .channel(ChannelConfig::new(VOTES).priority(10))
        .channel(
            ChannelConfig::new(PARTS)
                .priority(3)
                .max_message_size(PART_SIZE + 64),
        )
        .channel(
            ChannelConfig::new(BULK)
                .priority(1)
                .max_message_size(1 << 20)
                .send_queue_capacity(8),
        )
        .start()
        .unwrap_or_else(|e| {
            eprintln!("validator {i}: {e}");
            std::process::exit(1)
        });
    node.subscribe(TXS).expect("subscribe");
    node
}

/// What one validator saw of one round.
#[derive(Default)]
struct Round {
    parts: HashSet<u32>,
    /// When the proposer sent the first part, in microseconds since the epoch.
    proposed_at: Option<u64>,
    votes: HashSet<u32>,
    voted: bool,
    committed: bool,
}

/// The consensus reactor of validator `me`: returns its commit latencies by round.
#[allow(clippy::too_many_arguments)]
fn run_consensus(
    me: u32,
    n: u32,
    rounds: u32,
    node: NodeHandle,
    peers: Vec<PeerId>,
    reactor: meshwire::Reactor,
    epoch: Instant,
    bulk_from: u32,
    bulk_on: Arc<AtomicBool>,
) -> Result<Vec<Duration>, String> {
    let mut state: HashMap<u32, Round> = HashMap::new();
    let mut latencies = vec![Duration::ZERO; rounds as usize];
    let mut committed = 0u32;
    let micros = || epoch.elapsed().as_micros() as u64;
    let send_all = |channel: u32, data: Vec<u8>| -> Result<(), String> {
        for p in &peers {
            node.send_timeout(
                *p,
                channel,
                data.clone(),
                SendOptions::default(),
                ROUND_TIMEOUT,
            )
            .map_err(|e| format!("validator {me}: send on {channel}: {e}"))?;
        }
        Ok(())
    };
    let propose = |round: u32| -> Result<(), String> {
        if round == bulk_from {
            bulk_on.store(true, Ordering::Release);
        }
        let at = micros();
        for part in 0..PARTS_PER_BLOCK {
            let mut data = vec![part as u8; PART_SIZE];
            data[..4].copy_from_slice(&round.to_le_bytes());
            data[4..8].copy_from_slice(&part.to_le_bytes());
            data[8..16].copy_from_slice(&at.to_le_bytes());
            send_all(PARTS, data)?;
        }
        Ok(())
    };
    // The proposer holds its own block and votes for it at once.
    let on_block = |state: &mut HashMap<u32, Round>, round: u32, at: u64| -> Result<(), String> {
        let r = state.entry(round).or_default();
        r.proposed_at.get_or_insert(at);
        if !r.voted {
            r.voted = true;
            r.votes.insert(me);
            let mut vote = round.to_le_bytes().to_vec();
            vote.extend_from_slice(&me.to_le_bytes());
            send_all(VOTES, vote)?;
        }
        Ok(())
    };
    if me == 0 {
        propose(0)?;
        let at = micros();
        on_block(&mut state, 0, at)?;
    }
    while committed < rounds {
        // Commit whatever round is ready (in order), then propose the next if ours.
        loop {
            let r = state.entry(committed).or_default();
            let quorum = r.votes.len() as u32 * 3 > 2 * n;
            let have_block = r.voted;
            if !(quorum && have_block && !r.committed) {
                break;
            }
            r.committed = true;
            let at = r.proposed_at.unwrap_or(0);
            latencies[committed as usize] = Duration::from_micros(micros().saturating_sub(at));
            committed += 1;
            if committed < rounds && committed % n == me {
                propose(committed)?;
                let at = micros();
                on_block(&mut state, committed, at)?;
            }
        }
        if committed >= rounds {
            break;
        }
        let ev = reactor
            .recv_timeout(ROUND_TIMEOUT)
            .map_err(|e| format!("validator {me}: round {committed} did not commit ({e})"))?;
        match ev {
            ReactorEvent::Message {
                channel: PARTS,
                data,
                ..
            } if data.len() >= 16 => {
                let round = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
                let part = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
                let at = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
                let r = state.entry(round).or_default();
                r.parts.insert(part);
                r.proposed_at.get_or_insert(at);
                if r.parts.len() as u32 == PARTS_PER_BLOCK {
                    on_block(&mut state, round, at)?;
                }
            }
            ReactorEvent::Message {
                channel: VOTES,
                data,
                ..
            } if data.len() == 8 => {
                let round = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
                let voter = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
                state.entry(round).or_default().votes.insert(voter);
            }
            ReactorEvent::PeerRemoved { peer, reason } => {
                return Err(format!("validator {me}: lost {peer}: {reason}"));
            }
            _ => {}
        }
        // Rounds long committed are forgotten.
        state.retain(|round, _| *round + 2 >= committed);
    }
    Ok(latencies)
}

/// The mempool of a validator: checks each transaction off the loop thread and
/// reports the verdict; counts the valid ones it saw (others' only: gossip does not
/// deliver a node's own messages to it).
fn run_mempool(node: NodeHandle, seen: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let events = node.events();
    let mut ids = HashSet::new();
    while !stop.load(Ordering::Acquire) {
        let Ok(ev) = events.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        if let Event::Gossip(g) = ev {
            // CheckTx: well-formed transactions only.
            let verdict = if g.data.starts_with(b"tx:") {
                Validation::Accept
            } else {
                Validation::Reject
            };
            if g.needs_verdict {
                let _ = node.report_validation(g.id, verdict);
            }
            if verdict == Validation::Accept && ids.insert(g.id) {
                seen.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let Args { validators, rounds } = args();
    let n = validators as u32;
    let nodes: Vec<NodeHandle> = (0..validators).map(start).collect();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    // Reactors first, so each sees every peer arrive.
    let reactors: Vec<meshwire::Reactor> = nodes
        .iter()
        .map(|n| n.reactor(&[VOTES, PARTS], 4096).expect("reactor"))
        .collect();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            a.dial(b.listen_addrs()[0], Some(b.peer_id()))
                .expect("dial");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|x| x.peers().len() + 1 < validators) {
        if Instant::now() > deadline {
            eprintln!("validators did not connect");
            std::process::exit(1);
        }
        thread::sleep(Duration::from_millis(20));
    }
    // Meshes: the gossip heartbeat grafts within a second or two.
    thread::sleep(Duration::from_millis(1500));
    let epoch = Instant::now();
    let bulk_from = rounds / 2;
    let bulk_on = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<AtomicUsize>> = (0..validators).map(|_| Arc::default()).collect();
    let mempools: Vec<_> = nodes
        .iter()
        .zip(&seen)
        .map(|(node, s)| {
            let (node, s, stop) = (node.clone(), s.clone(), stop.clone());
            thread::spawn(move || run_mempool(node, s, stop))
        })
        .collect();
    // Bulk: validator 0 streams 1 MiB messages to validator 1 once the second half starts.
    let bulk = {
        let (from, to) = (nodes[0].clone(), ids[1]);
        let (on, stop) = (bulk_on.clone(), stop.clone());
        thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Acquire) {
                if !on.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let t = Duration::from_millis(100);
                match from.send_timeout(to, BULK, vec![0xb1; 1 << 20], SendOptions::default(), t) {
                    Ok(()) => sent += 1 << 20,
                    Err(SendError::TimedOut) => {}
                    Err(_) => break,
                }
            }
            sent
        })
    };
    let workers: Vec<_> = reactors
        .into_iter()
        .enumerate()
        .map(|(i, reactor)| {
            let node = nodes[i].clone();
            let peers: Vec<PeerId> = ids.iter().copied().filter(|p| *p != ids[i]).collect();
            let on = bulk_on.clone();
            thread::spawn(move || {
                run_consensus(
                    i as u32, n, rounds, node, peers, reactor, epoch, bulk_from, on,
                )
            })
        })
        .collect();
    // Transactions, published by every validator while the rounds run.
    let mut published = vec![0usize; validators];
    for k in 0..rounds as usize {
        for (i, node) in nodes.iter().enumerate() {
            for t in 0..TXS_PER_ROUND {
                let tx = format!("tx:{i}:{k}:{t}").into_bytes();
                if node.publish(TXS, tx).is_ok() {
                    published[i] += 1;
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    let total: usize = published.iter().sum();
    // A mempool gets the others' transactions by gossip (its own it had already).
    let missing = |seen: &[Arc<AtomicUsize>]| -> usize {
        seen.iter()
            .zip(&published)
            .map(|(s, own)| (total - own).saturating_sub(s.load(Ordering::Acquire)))
            .sum()
    };
    let mut failed = false;
    let mut per_round: Vec<Vec<Duration>> = vec![Vec::new(); rounds as usize];
    for (i, w) in workers.into_iter().enumerate() {
        match w.join().expect("validator thread") {
            Ok(lat) => {
                for (r, l) in lat.into_iter().enumerate() {
                    per_round[r].push(l);
                }
            }
            Err(e) => {
                eprintln!("validator {i}: {e}");
                failed = true;
            }
        }
    }
    // Every transaction at every mempool (each sees the others' and its own).
    let deadline = Instant::now() + Duration::from_secs(10);
    while missing(&seen) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    let bulk_bytes = bulk.join().unwrap_or(0);
    for m in mempools {
        let _ = m.join();
    }
    let missed = missing(&seen);
    if !failed {
        println!("round  proposer  all committed after (ms)  bulk");
        for (r, lat) in per_round.iter().enumerate() {
            let worst = lat.iter().max().copied().unwrap_or_default();
            let bulk = if r as u32 >= bulk_from { "on" } else { "" };
            println!(
                "{r:>5}  {:>8}  {:>24.2}  {bulk}",
                r % validators,
                worst.as_secs_f64() * 1e3
            );
        }
        for (label, range) in [
            ("without bulk", 0..bulk_from),
            ("with bulk", bulk_from..rounds),
        ] {
            let mut all: Vec<Duration> = range
                .clone()
                .flat_map(|r| per_round[r as usize].iter().copied())
                .collect();
            all.sort();
            println!(
                "{label}: {} rounds, commit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                range.len(),
                percentile(&all, 0.5).as_secs_f64() * 1e3,
                percentile(&all, 0.99).as_secs_f64() * 1e3,
                all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
            );
        }
        println!(
            "bulk: {:.0} MiB from validator 0 to 1 during the second half",
            bulk_bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "transactions: {total} published, every mempool checked off the loop thread; {missed} deliveries missing"
    );
    for node in &nodes {
        node.shutdown();
    }
    if failed || missed > 0 {
        eprintln!("FAILED");
        std::process::exit(1);
    }
    println!("every round committed at every validator");
}
