//! A local meshwire testnet: N real nodes on loopback in one process, joined through
//! the DHT from one seed, gossiping messages from random nodes. Prints a summary and
//! writes `testnet-report.svg` (latency CDF and hop histogram).
//!
//! ```sh
//! cargo run --release --example testnet -- [--nodes N --msgs M --size S --interval-ms I --seed X]
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire::rng::Rng;
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, Runtime};
use parking_lot::Mutex;

const TOPIC: &str = "testnet";

/// One delivery seen by the application: node, message, hops, when.
type Delivery = (usize, usize, u32, Instant);

struct Params {
    nodes: usize,
    msgs: usize,
    size: usize,
    interval_ms: u64,
    seed: u64,
    /// Gossip settings changed by name (`--set a=1,b=2`), for ablations.
    gossip: meshwire::gossip::GossipConfig,
}

fn parse() -> Params {
    let mut p = Params {
        nodes: 200,
        msgs: 100,
        size: 1024,
        interval_ms: 20,
        seed: 42,
        gossip: meshwire::gossip::GossipConfig::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("testnet [--nodes N (200)] [--msgs M (100)] [--size S (1024)] [--interval-ms I (20)] [--seed X (42)] [--set gossip_knob=value,...]");
            std::process::exit(0);
        }
        let v = args.next().unwrap_or_default();
        let n = || {
            v.parse::<u64>()
                .unwrap_or_else(|_| fail(&format!("{flag} needs a number")))
        };
        match flag.as_str() {
            "--nodes" => p.nodes = n().max(2) as usize,
            "--msgs" => p.msgs = n().max(1) as usize,
            "--size" => p.size = n().max(8) as usize,
            "--interval-ms" => p.interval_ms = n(),
            "--seed" => p.seed = n(),
            "--set" => {
                if let Err(e) = p.gossip.set_knobs(&v) {
                    fail(&format!("--set: {e}"))
                }
            }
            other => fail(&format!("unknown flag {other} (see --help)")),
        }
    }
    p
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

/// Progress on stderr: a bar redrawn in place on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    last_line: Instant,
}

impl Progress {
    fn show(&mut self, stage: &str, done: usize, total: usize) {
        let frac = done as f64 / total.max(1) as f64;
        if self.tty {
            let filled = (frac * 30.0) as usize;
            eprint!(
                "\r{stage:<12} [{}{}] {done}/{total}   ",
                "#".repeat(filled),
                " ".repeat(30 - filled)
            );
            let _ = std::io::stderr().flush();
        } else if self.last_line.elapsed() >= Duration::from_secs(2) || done == total {
            eprintln!("{stage}: {done}/{total}");
            self.last_line = Instant::now();
        }
    }

    fn end(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Per-reason counters summed over all nodes, `after` minus `before`, zeros left out.
fn counted_since<'a>(
    before: &'a [meshwire::Metrics],
    after: &'a [meshwire::Metrics],
    pick: impl Fn(&'a meshwire::Metrics) -> &'a std::collections::BTreeMap<&'static str, u64>,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut sum = std::collections::BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        for (reason, n) in pick(a) {
            let was = pick(b).get(reason).copied().unwrap_or(0);
            *sum.entry(*reason).or_default() += n.saturating_sub(was);
        }
    }
    sum.retain(|_, n| *n > 0);
    sum
}

fn node_addr(i: usize) -> SocketAddr {
    let i = i + 1;
    SocketAddr::from(([127, 100 + (i / 250) as u8, (i % 250) as u8, 1], 0))
}

fn main() {
    let p = parse();
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        last_line: Instant::now(),
    };
    let mut rng = Rng::new(p.seed);
    let runtimes = [Runtime::new().expect("loop"), Runtime::new().expect("loop")];
    // A thousand nodes share this process's descriptors: keep each one's
    // connection budget modest for big networks.
    // (The descriptor limit here is 20,000: at 1,000 nodes, 4 outbound and 3 lookup
    // connections each stay well inside it, counting both ends.)
    let (max_out, lookup_conns) = match p.nodes {
        0..=300 => (8, 16),
        301..=500 => (5, 6),
        _ => (4, 3),
    };
    let build = |i: usize| {
        let mut b = NodeBuilder::new("meshwire-testnet")
            .listen(node_addr(i))
            .channel(ChannelConfig::new(1))
            .rng_seed(p.seed ^ ((i as u64) << 16))
            .gossip(Some(p.gossip.clone()));
        let c = b.config_mut();
        c.limits.max_outbound = max_out;
        c.max_lookup_conns = lookup_conns;
        c.lookup_idle = Duration::from_secs(2);
        b
    };

    let t_start = Instant::now();
    // The seed is configured as a bootnode is: every joiner's first DHT query goes
    // to it, so it keeps more lookup connections than the others (with 3, it let in
    // about ten joiners a second: 1,000 nodes joined after 125 s).
    let mut seed = build(0);
    seed.config_mut().max_lookup_conns = 64;
    let seed = seed.start_on(&runtimes[0]).expect("start seed");
    let (seed_addr, seed_id) = (seed.listen_addrs()[0], seed.peer_id());
    let mut nodes: Vec<NodeHandle> = vec![seed];
    for i in 1..p.nodes {
        let node = build(i)
            .bootstrap_peer(seed_addr, Some(seed_id))
            .start_on(&runtimes[i % 2])
            .expect("start node");
        nodes.push(node);
        progress.show("starting", i + 1, p.nodes);
    }
    progress.end();
    for n in &nodes {
        n.subscribe(TOPIC).expect("subscribe");
    }
    // Joined: every node has peers and a gossip mesh (popular peers may refuse
    // grafts while their own mesh is full, so two mesh links count as joined).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = nodes
            .iter()
            .filter(|n| {
                let peers = n.peers().len();
                peers > 0
                    && n.mesh_peers(TOPIC)
                        .map(|m| m.len() >= peers.min(2))
                        .unwrap_or(false)
            })
            .count();
        progress.show("joining", ready, p.nodes);
        if ready == p.nodes || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    progress.end();
    let joined_after = t_start.elapsed();

    // Collectors: each polls a share of the nodes' event queues.
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; p.msgs]));
    let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let collectors: Vec<_> = nodes
        .chunks(nodes.len().div_ceil(4))
        .enumerate()
        .map(|(c, chunk)| {
            let first = c * nodes.len().div_ceil(4);
            let rxs: Vec<_> = chunk.iter().map(|n| n.events()).collect();
            let (out, halt) = (deliveries.clone(), stop.clone());
            std::thread::spawn(move || {
                while !halt.load(Ordering::Relaxed) {
                    let mut idle = true;
                    for (i, rx) in rxs.iter().enumerate() {
                        while let Ok(ev) = rx.try_recv() {
                            if let Event::Gossip(g) = ev {
                                let now = Instant::now();
                                let seq =
                                    u64::from_le_bytes(g.data[..8].try_into().unwrap_or([0; 8]))
                                        as usize;
                                out.lock().push((first + i, seq, g.hops, now));
                                idle = false;
                            }
                        }
                    }
                    if idle {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();

    let before: Vec<_> = nodes
        .iter()
        .map(|n| n.metrics().unwrap_or_default())
        .collect();
    let dups0 = duplicates(&nodes);
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let mut published_by = vec![0usize; p.nodes];
    for seq in 0..p.msgs {
        let due = start + Duration::from_millis(p.interval_ms * seq as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let origin = rng.below(p.nodes as u64) as usize;
        published_by[origin] += 1;
        let mut data = vec![0u8; p.size];
        data[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        for b in data[8..].iter_mut() {
            *b = rng.next_u64() as u8;
        }
        sent_at.lock()[seq] = Some(Instant::now());
        if let Err(e) = nodes[origin].publish(TOPIC, data) {
            eprintln!("publish failed: {e}");
        }
        progress.show("publishing", seq + 1, p.msgs);
    }
    progress.end();
    // Stragglers: wait while deliveries still come in (5 s without one ends it).
    let expected = p.msgs * (p.nodes - 1);
    let give_up = Instant::now() + Duration::from_secs(120);
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let got = deliveries.lock().len();
        progress.show("delivering", got, expected);
        if got != last {
            (last, last_change) = (got, Instant::now());
        }
        let stalled = last_change.elapsed() > Duration::from_secs(5);
        if got >= expected || stalled || Instant::now() > give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    progress.end();
    let cpu = cpu_secs() - cpu0;
    stop.store(true, Ordering::Relaxed);
    for c in collectors {
        let _ = c.join();
    }
    let after: Vec<_> = nodes
        .iter()
        .map(|n| n.metrics().unwrap_or_default())
        .collect();
    let dups = duplicates(&nodes) - dups0;
    let connections: u64 = after.iter().map(|m| m.inbound + m.outbound).sum::<u64>() / 2;
    let written: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.bytes_written.saturating_sub(b.bytes_written))
        .sum();

    let sent = sent_at.lock();
    let got = deliveries.lock();
    let mut lat = Vec::with_capacity(got.len());
    let mut tta = vec![0f64; p.msgs];
    let mut hops: HashMap<u32, u64> = HashMap::new();
    for &(_, seq, h, t) in got.iter() {
        let Some(Some(s)) = sent.get(seq) else {
            continue;
        };
        let ms = t.saturating_duration_since(*s).as_secs_f64() * 1e3;
        lat.push(ms);
        tta[seq] = tta[seq].max(ms);
        *hops.entry(h).or_default() += 1;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    tta.sort_by(|a, b| a.total_cmp(b));
    let q = |v: &[f64], x: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((x * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    let peak_mb = peak_rss_mb();
    let amplification = written as f64 / (p.msgs * p.size * (p.nodes - 1)) as f64;
    let ratio = got.len() as f64 / expected as f64;

    let mut table = String::new();
    let row = |t: &mut String, k: &str, v: String| {
        let _ = writeln!(t, "  {k:<22} {v}");
    };
    let _ = writeln!(
        table,
        "\nmeshwire testnet: {} nodes, {} messages of {} B every {} ms (seed {})",
        p.nodes, p.msgs, p.size, p.interval_ms, p.seed
    );
    row(&mut table, "nodes", p.nodes.to_string());
    row(&mut table, "connections", connections.to_string());
    row(
        &mut table,
        "joined after",
        format!("{:.1} s", joined_after.as_secs_f64()),
    );
    row(
        &mut table,
        "delivery ratio",
        format!("{ratio:.4} ({} of {expected})", got.len()),
    );
    row(
        &mut table,
        "latency p50/p90/p99",
        format!(
            "{:.2} / {:.2} / {:.2} ms",
            q(&lat, 0.5),
            q(&lat, 0.9),
            q(&lat, 0.99)
        ),
    );
    row(&mut table, "latency max", format!("{:.2} ms", q(&lat, 1.0)));
    // What the nodes dropped and which connections ended while publishing, by
    // reason (nothing is lost silently).
    let drops = counted_since(&before, &after, |m| &m.drops);
    let disconnects = counted_since(&before, &after, |m| &m.disconnects);
    row(&mut table, "dropped (by reason)", format!("{drops:?}"));
    row(
        &mut table,
        "disconnects (by reason)",
        format!("{disconnects:?}"),
    );
    // Where deliveries are missing: per node, how many of the messages it lacks
    // (the publisher itself is not expected to deliver its own message).
    let mut per_node = vec![0usize; p.nodes];
    let mut have = std::collections::HashSet::new();
    for &(node, seq, _, _) in got.iter() {
        if have.insert((node, seq)) {
            per_node[node] += 1;
        }
    }
    let mut short: Vec<(usize, usize)> = per_node
        .iter()
        .enumerate()
        .filter(|(i, n)| **n < p.msgs - published_by[*i])
        .map(|(i, n)| (i, p.msgs - published_by[i] - n))
        .collect();
    short.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = short
        .iter()
        .take(8)
        .map(|(i, k)| {
            format!(
                "node {i}: {k} (mesh {})",
                after[*i].topics.get(TOPIC).map_or(0, |t| t.mesh)
            )
        })
        .collect();
    row(
        &mut table,
        "nodes missing messages",
        format!("{} {}", short.len(), shown.join(", ")),
    );
    let gossip_rpcs: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            let sent = |m: &meshwire::Metrics| {
                m.channels
                    .get(&meshwire::gossip::GOSSIP_CHANNEL)
                    .map_or(0, |c| c.sent_msgs)
            };
            sent(a).saturating_sub(sent(b))
        })
        .sum();
    row(
        &mut table,
        "gossip RPCs sent",
        format!(
            "{gossip_rpcs} ({:.1} per delivery)",
            gossip_rpcs as f64 / got.len().max(1) as f64
        ),
    );
    row(
        &mut table,
        "time-to-all p50/p99",
        format!("{:.2} / {:.2} ms", q(&tta, 0.5), q(&tta, 0.99)),
    );
    row(
        &mut table,
        "amplification",
        format!("{amplification:.2} (bytes written / payload bytes delivered)"),
    );
    row(
        &mut table,
        "duplicates per msg",
        format!("{:.3}", dups as f64 / expected as f64),
    );
    let mut hop_keys: Vec<_> = hops.keys().copied().collect();
    hop_keys.sort_unstable();
    let hist: Vec<String> = hop_keys
        .iter()
        .map(|h| format!("{h}:{}", hops[h]))
        .collect();
    row(&mut table, "hops (hops:deliveries)", hist.join(" "));
    row(&mut table, "CPU (publish phase)", format!("{cpu:.2} s"));
    row(&mut table, "peak memory", format!("{peak_mb:.0} MB"));
    println!("{table}");

    let title = format!(
        "meshwire testnet: {} nodes, {} msgs x {} B every {} ms, seed {}",
        p.nodes, p.msgs, p.size, p.interval_ms, p.seed
    );
    let svg = report_svg(
        &title,
        &lat,
        &hop_keys.iter().map(|h| (*h, hops[h])).collect::<Vec<_>>(),
        ratio,
    );
    match std::fs::write("testnet-report.svg", svg) {
        Ok(()) => eprintln!("wrote testnet-report.svg"),
        Err(e) => eprintln!("could not write testnet-report.svg: {e}"),
    }
    for n in &nodes {
        n.shutdown();
    }
}

fn duplicates(nodes: &[NodeHandle]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            n.gossip_metrics()
                .ok()
                .and_then(|m| m.get(TOPIC).map(|t| t.duplicates))
                .unwrap_or(0)
        })
        .sum()
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Two panels: the latency CDF and the hop histogram, with axes, units and a title.
fn report_svg(title: &str, lat_sorted: &[f64], hops: &[(u32, u64)], ratio: f64) -> String {
    let (w, h) = (1000.0, 460.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        w / 2.0,
        xml(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="42" text-anchor="middle" fill="#555">delivery ratio {ratio:.4} over {} deliveries</text>"##,
        w / 2.0,
        lat_sorted.len()
    );

    // Panel 1: latency CDF.
    let (x0, y0, pw, ph) = (70.0, 70.0, 400.0, 320.0);
    let max_ms = lat_sorted.last().copied().unwrap_or(1.0).max(1e-3);
    axes(
        &mut s,
        x0,
        y0,
        pw,
        ph,
        "delivery latency (ms)",
        "fraction of deliveries",
    );
    for i in 0..=5 {
        let v = max_ms * i as f64 / 5.0;
        let x = x0 + pw * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{v:.1}</text>"#,
            y0 + ph + 16.0
        );
        let f = i as f64 / 5.0;
        let y = y0 + ph - ph * f;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{f:.1}</text>"#,
            x0 - 6.0,
            y + 4.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/>"##,
            x0 + pw
        );
    }
    let mut path = String::new();
    let n = lat_sorted.len().max(1);
    let step = (n / 400).max(1);
    for (i, v) in lat_sorted
        .iter()
        .enumerate()
        .step_by(step)
        .chain(lat_sorted.iter().enumerate().next_back())
    {
        let x = x0 + pw * v / max_ms;
        let y = y0 + ph - ph * (i + 1) as f64 / n as f64;
        let _ = write!(
            path,
            "{}{x:.1},{y:.1} ",
            if path.is_empty() { "M" } else { "L" }
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">Latency CDF</text>"#,
        x0 + pw / 2.0,
        y0 - 8.0
    );

    // Panel 2: hop histogram.
    let (x1, pw2) = (560.0, 400.0);
    axes(
        &mut s,
        x1,
        y0,
        pw2,
        ph,
        "hops from the origin",
        "deliveries",
    );
    let max_count = hops.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1) as f64;
    let bars = hops.len().max(1) as f64;
    let bw = pw2 / bars;
    for (k, (hop, count)) in hops.iter().enumerate() {
        let bh = ph * *count as f64 / max_count;
        let x = x1 + bw * k as f64;
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#ff7f0e"/>"##,
            x + bw * 0.1,
            y0 + ph - bh,
            bw * 0.8
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{hop}</text>"#,
            x + bw / 2.0,
            y0 + ph + 16.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{count}</text>"#,
            x + bw / 2.0,
            y0 + ph - bh - 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">Hop histogram</text>"#,
        x1 + pw2 / 2.0,
        y0 - 8.0
    );
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, x: f64, y: f64, w: f64, h: f64, xlabel: &str, ylabel: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        y + h,
        x + w,
        y + h
    );
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{y}" x2="{x}" y2="{}" stroke="black"/>"#,
        y + h
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{xlabel}</text>"#,
        x + w / 2.0,
        y + h + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{ylabel}</text>"#,
        x - 46.0,
        y + h / 2.0,
        x - 46.0,
        y + h / 2.0
    );
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
