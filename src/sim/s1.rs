//! S1: simulated propagation over the real-world network model, as
//! ../shared/BENCHMARKS.md specifies it.

use std::time::{Duration, Instant};

use crate::config::NodeConfig;
use crate::gossip::{GossipConfig, MessageId};
use crate::rng::Rng;

use super::bound::earliest_arrivals;
use super::{CostModel, LinkModel, Simulation, NETWORK};

/// The topic S1 publishes on.
pub const TOPIC: &str = "s1";
/// Seed nodes every node bootstraps from.
const SEEDS: usize = 3;
/// Nodes start at random times within this (so 10,000 do not hit the seeds in
/// one instant).
const JOIN_SPREAD: Duration = Duration::from_secs(10);
/// Publishing starts by then at the latest.
const MESH_DEADLINE: Duration = Duration::from_secs(60);
/// Stragglers get this long after the last publish.
const STRAGGLERS: Duration = Duration::from_secs(30);

/// Which router settings the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterProfile {
    /// This library's defaults.
    Meshwire,
    /// Our router configured as GossipSub v1.2: no choking, IDONTWANT only after
    /// full receipt, flood publish at every size, whole messages forwarded once
    /// complete (no cut-through), D = 6, D_lo 5, D_hi 12, D_lazy 6, and
    /// rust-libp2p's timing: a 1 s heartbeat, 5 history windows, 3 gossiped; ids
    /// offered again in every gossip window, new mesh links eager, and a fixed
    /// IWANT delay.
    GossipSub12,
}

impl RouterProfile {
    /// The gossip settings of the profile.
    pub fn gossip_config(self) -> GossipConfig {
        let mut g = GossipConfig::default();
        if self == RouterProfile::GossipSub12 {
            g.d = 6;
            g.d_lo = 5;
            g.d_hi = 12;
            g.d_lazy = 6;
            g.choke = false;
            // rust-libp2p's defaults: a 1 s heartbeat, 5 windows kept, 3 gossiped.
            g.heartbeat = std::time::Duration::from_secs(1);
            g.history_length = 5;
            g.history_gossip = 3;
            g.idontwant_first_fragment = false;
            g.cut_through = false;
            g.flood_publish_max_size = usize::MAX;
            g.flood_publish_extra = usize::MAX;
            g.implied_dontwant = false;
            g.withdraw_chunks = false;
            g.ihave_batch = std::time::Duration::ZERO;
            g.gossip_offer_once = false;
            g.choke_new_links = false;
            g.iwant_adaptive = false;
        }
        g
    }

    /// Its name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            RouterProfile::Meshwire => "meshwire",
            RouterProfile::GossipSub12 => "gossipsub12",
        }
    }
}

/// The S1 flags.
#[derive(Debug, Clone)]
pub struct S1Options {
    /// Nodes, seeds included.
    pub nodes: usize,
    /// Messages published.
    pub msgs: usize,
    /// Payload bytes.
    pub size: usize,
    /// One publish every this long, open loop.
    pub interval: Duration,
    /// One seed for everything.
    pub seed: u64,
    /// The link model.
    pub model: LinkModel,
    /// The router settings.
    pub profile: RouterProfile,
    /// The gossip settings (defaults to the profile's; set to ablate one knob).
    pub gossip: Option<GossipConfig>,
    /// The processing-cost model.
    pub cost: CostModel,
    /// Threads that run the nodes (see [`Simulation::set_threads`]); `None`:
    /// the machine's cores. The figures do not depend on it.
    pub threads: Option<usize>,
}

impl Default for S1Options {
    fn default() -> Self {
        S1Options {
            nodes: 1000,
            msgs: 100,
            size: 1024,
            interval: Duration::from_millis(50),
            seed: 42,
            model: LinkModel::Regions,
            profile: RouterProfile::Meshwire,
            gossip: None,
            cost: CostModel::default(),
            threads: None,
        }
    }
}

/// What an S1 run measured (virtual-time figures, milliseconds).
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct S1Report {
    pub nodes: usize,
    pub msgs: usize,
    pub size: usize,
    pub seed: u64,
    pub config: &'static str,
    pub model: &'static str,
    pub delivered_ratio: f64,
    pub lat_p50_ms: f64,
    pub lat_p90_ms: f64,
    pub lat_p99_ms: f64,
    pub lat_max_ms: f64,
    pub tta_p50_ms: f64,
    pub tta_p99_ms: f64,
    pub bound_lat_p50_ms: f64,
    pub bound_lat_p99_ms: f64,
    pub amplification: f64,
    pub dup_per_msg: f64,
    pub hops_p50: f64,
    pub hops_p99: f64,
    /// Virtual seconds the run took, joining included.
    pub virtual_s: f64,
    /// Virtual seconds until every node had its mesh (publishing started).
    pub mesh_ready_s: f64,
    pub wall_s: f64,
    /// Filled in by the program (the library reads no process state).
    pub peak_rss_mb: f64,
    pub trace_hash: String,
}

impl S1Report {
    /// The JSON line of ../shared/BENCHMARKS.md.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"S1\",\"impl\":\"meshwire-sim\",\"config\":\"{}\",\"model\":\"{}\",\"nodes\":{},\"msgs\":{},\"size\":{},\"seed\":{},\
\"delivered_ratio\":{:.6},\"lat_p50_ms\":{:.2},\"lat_p90_ms\":{:.2},\"lat_p99_ms\":{:.2},\"lat_max_ms\":{:.2},\"tta_p50_ms\":{:.2},\"tta_p99_ms\":{:.2},\
\"bound_lat_p50_ms\":{:.2},\"bound_lat_p99_ms\":{:.2},\"amplification\":{:.3},\"dup_per_msg\":{:.3},\"hops_p50\":{:.1},\"hops_p99\":{:.1},\
\"virtual_s\":{:.1},\"mesh_ready_s\":{:.1},\"wall_s\":{:.1},\"peak_rss_mb\":{:.0},\"trace_hash\":\"{}\"}}",
            self.config,
            self.model,
            self.nodes,
            self.msgs,
            self.size,
            self.seed,
            self.delivered_ratio,
            self.lat_p50_ms,
            self.lat_p90_ms,
            self.lat_p99_ms,
            self.lat_max_ms,
            self.tta_p50_ms,
            self.tta_p99_ms,
            self.bound_lat_p50_ms,
            self.bound_lat_p99_ms,
            self.amplification,
            self.dup_per_msg,
            self.hops_p50,
            self.hops_p99,
            self.virtual_s,
            self.mesh_ready_s,
            self.wall_s,
            self.peak_rss_mb,
            self.trace_hash
        )
    }
}

/// The `p`-th percentile (0..=100) of sorted `v`, nearest rank; 0 when empty.
pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Builds the S1 network: seeds, then nodes joining over the first seconds, all
/// subscribed to [`TOPIC`].
pub fn build_network(opts: &S1Options) -> Simulation {
    let mut template = NodeConfig::new(NETWORK);
    template.gossip = Some(
        opts.gossip
            .clone()
            .unwrap_or_else(|| opts.profile.gossip_config()),
    );
    let mut sim = Simulation::with_config(opts.seed, opts.model, opts.cost, template);
    if let Some(threads) = opts.threads {
        sim.set_threads(threads);
    }
    let mut rng = Rng::new(opts.seed ^ 0x5331);
    for i in 0..opts.nodes {
        if i < SEEDS {
            sim.add_seed_node(Duration::ZERO);
        } else {
            let start = Duration::from_nanos(rng.below(JOIN_SPREAD.as_nanos() as u64));
            sim.add_node(start);
        }
    }
    sim
}

/// Runs until every live node has at least `d_lo` mesh peers of [`TOPIC`], or the
/// deadline; returns whether all had.
pub fn wait_for_meshes(sim: &mut Simulation, deadline: Duration) -> bool {
    let want = sim.gossip_config().map_or(1, |g| g.d_lo);
    let n = sim.len();
    let mut from = 0;
    loop {
        while from < n
            && (!sim.is_alive(from) || sim.mesh(from, TOPIC).len() >= want.min(n.saturating_sub(1)))
        {
            from += 1;
        }
        if from == n {
            return true;
        }
        if sim.now() >= deadline {
            return false;
        }
        let next = sim.now() + Duration::from_millis(500);
        sim.run_until(next);
    }
}

/// Runs S1; `progress` hears what happens (for stderr).
pub fn run_s1(opts: &S1Options, progress: &mut dyn FnMut(&str)) -> S1Report {
    let wall = Instant::now();
    let mut sim = build_network(opts);
    for n in 0..sim.len() {
        sim.subscribe(n, TOPIC);
    }
    let all = wait_for_meshes(&mut sim, MESH_DEADLINE);
    let ready = sim.now();
    if !all {
        let want = sim.gossip_config().map_or(1, |g| g.d_lo);
        let short: Vec<(usize, usize)> = (0..sim.len())
            .map(|n| (sim.mesh(n, TOPIC).len(), sim.overlay(n).len()))
            .filter(|(m, _)| *m < want)
            .collect();
        progress(&format!(
            "{} nodes below {want} mesh peers; (mesh, peers) of the first: {:?}",
            short.len(),
            &short[..short.len().min(12)]
        ));
    }
    progress(&format!(
        "{} nodes: meshes {} at {:.1} s virtual ({:.1} s wall)",
        opts.nodes,
        if all { "complete" } else { "INCOMPLETE" },
        ready.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    ));

    progress(&format!("events while joining: {:?}", sim.event_counts()));
    progress(&join_cost(&sim));
    let dups_before: u64 = (0..sim.len()).map(|n| sim.duplicates(n, TOPIC)).sum();
    let bytes_before = sim.bytes_written();
    let gossip_before = gossip_bytes(&sim);
    let deliveries_before = sim.deliveries().len();
    let mut rng = Rng::new(opts.seed ^ 0x7075_626c);
    let mut published: Vec<(MessageId, usize, Duration, Vec<Option<Duration>>)> = Vec::new();
    for seq in 0..opts.msgs {
        let origin = rng.below(sim.len() as u64) as usize;
        let mut data = vec![0u8; opts.size.max(8)];
        data[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        for b in &mut data[8..] {
            *b = rng.next_u64() as u8;
        }
        data.truncate(opts.size.max(8));
        let bound = earliest_arrivals(&sim, origin, opts.size);
        let at = sim.now();
        let id = sim.publish(origin, TOPIC, data);
        published.push((id, origin, at, bound));
        let next = at + opts.interval;
        sim.run_until(next);
        if (seq + 1) % 10 == 0 {
            progress(&format!(
                "published {} of {} ({:.1} s virtual, {:.1} s wall)",
                seq + 1,
                opts.msgs,
                sim.now().as_secs_f64(),
                wall.elapsed().as_secs_f64()
            ));
        }
    }
    let end = sim.now() + STRAGGLERS;
    sim.run_until(end);

    progress(&format!("events in all: {:?}", sim.event_counts()));
    progress(&publish_bytes(&sim, bytes_before, gossip_before));
    let n = sim.len();
    let index: crate::collections::Map<MessageId, usize> = published
        .iter()
        .enumerate()
        .map(|(i, p)| (p.0, i))
        .collect();
    let mut first: Vec<Vec<Option<(Duration, u32)>>> = vec![vec![None; n]; published.len()];
    for d in &sim.deliveries()[deliveries_before..] {
        if let Some(&i) = index.get(&d.id) {
            let slot = &mut first[i][d.node];
            if slot.is_none() {
                *slot = Some((d.at - published[i].2, d.hops));
            }
        }
    }
    let (mut lat, mut bound, mut hops, mut tta) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (_, origin, _, b)) in published.iter().enumerate() {
        let mut last = 0.0f64;
        for node in 0..n {
            if node == *origin {
                continue;
            }
            if let Some((l, h)) = first[i][node] {
                let ms = l.as_secs_f64() * 1e3;
                lat.push(ms);
                last = last.max(ms);
                hops.push(f64::from(h));
                bound.push(b[node].map_or(ms, |d| d.as_secs_f64() * 1e3));
            }
        }
        tta.push(last);
    }
    let expected = (published.len() * (n - 1)).max(1) as f64;
    let dups_after: u64 = (0..n).map(|i| sim.duplicates(i, TOPIC)).sum();
    let bytes = (sim.bytes_written() - bytes_before) as f64;
    let delivered = lat.len() as f64;
    let (lat, bound, hops, tta) = (sorted(lat), sorted(bound), sorted(hops), sorted(tta));
    S1Report {
        nodes: n,
        msgs: opts.msgs,
        size: opts.size,
        seed: opts.seed,
        config: opts.profile.name(),
        model: match opts.model {
            LinkModel::Regions => "regions",
            LinkModel::Zero => "zero",
        },
        delivered_ratio: delivered / expected,
        lat_p50_ms: percentile(&lat, 50.0),
        lat_p90_ms: percentile(&lat, 90.0),
        lat_p99_ms: percentile(&lat, 99.0),
        lat_max_ms: lat.last().copied().unwrap_or(0.0),
        tta_p50_ms: percentile(&tta, 50.0),
        tta_p99_ms: percentile(&tta, 99.0),
        bound_lat_p50_ms: percentile(&bound, 50.0),
        bound_lat_p99_ms: percentile(&bound, 99.0),
        amplification: bytes / (expected * opts.size as f64),
        dup_per_msg: (dups_after - dups_before) as f64 / expected,
        hops_p50: percentile(&hops, 50.0),
        hops_p99: percentile(&hops, 99.0),
        virtual_s: sim.now().as_secs_f64(),
        mesh_ready_s: ready.as_secs_f64(),
        wall_s: wall.elapsed().as_secs_f64(),
        peak_rss_mb: 0.0,
        trace_hash: sim.trace().hex(),
    }
}

/// What joining cost, summed over all nodes: dials, handshakes and DHT traffic.
fn join_cost(sim: &Simulation) -> String {
    let (mut dials, mut handshakes, mut kad_sent, mut kad_bytes) = (0u64, 0u64, 0u64, 0u64);
    for n in 0..sim.len() {
        let m = sim.metrics(n);
        dials += m.dials;
        handshakes += m.handshakes_ok;
        if let Some(c) = m.channels.get(&crate::kad::KAD_CHANNEL) {
            kad_sent += c.sent_msgs;
            kad_bytes += c.sent_bytes;
        }
    }
    let mut reasons: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for n in 0..sim.len() {
        let m = sim.metrics(n);
        for (k, v) in m
            .disconnects
            .iter()
            .chain(&m.refused)
            .chain(&m.handshakes_failed)
        {
            *reasons.entry(k).or_default() += v;
        }
    }
    let per = |x: u64| x as f64 / sim.len().max(1) as f64;
    format!(
        "join cost per node: {:.1} dials, {:.1} handshakes, {:.1} DHT messages sent ({:.0} bytes); ends: {:?}",
        per(dials),
        per(handshakes),
        per(kad_sent),
        per(kad_bytes),
        reasons
    )
}

/// Gossip payload bytes sent so far on the nodes' connections now open.
fn gossip_bytes(sim: &Simulation) -> u64 {
    (0..sim.len())
        .filter_map(|n| {
            let m = sim.metrics(n);
            m.channels
                .get(&crate::gossip::GOSSIP_CHANNEL)
                .map(|c| c.sent_bytes)
        })
        .sum()
}

/// How much of the publish phase's bytes the gossip channel took (counted on the
/// connections still open at both ends of the phase; the rest is the DHT,
/// framing, keepalives and handshakes).
fn publish_bytes(sim: &Simulation, bytes_before: u64, gossip_before: u64) -> String {
    let total = (sim.bytes_written() - bytes_before).max(1) as f64;
    let gossip = gossip_bytes(sim).saturating_sub(gossip_before) as f64;
    format!(
        "publish-phase bytes: {:.0} MB, of which gossip payload {:.1}%",
        total / 1e6,
        100.0 * gossip / total
    )
}
