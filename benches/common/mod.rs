//! Shared by the benchmark programs: flags, percentiles, CPU time.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

/// `--flag value` pairs and bare `--switch`es.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    pub fn parse() -> Args {
        let mut values = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                continue;
            };
            if name == "bench" {
                continue; // passed by `cargo bench`
            }
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => String::from("true"),
            };
            values.insert(name.to_string(), value);
        }
        Args { values }
    }

    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.values.get(name) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("--{name}: cannot parse {v:?}")),
            None => default,
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// The `q`-quantile (0..=1) of `xs`, nearest rank.
pub fn percentile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// CPU seconds (user + system) this process used so far.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The i-th node's own loopback address.
pub fn node_addr(i: usize) -> std::net::SocketAddr {
    let i = i + 1;
    std::net::SocketAddr::from(([127, 20 + (i / 250) as u8, (i % 250) as u8, 1], 0))
}

/// `a` dials `b` and waits until connected.
pub fn connect(a: &meshwire::NodeHandle, b: &meshwire::NodeHandle) {
    let events = a.events();
    a.dial(b.listen_addrs()[0], Some(b.peer_id()))
        .expect("dial");
    loop {
        match events
            .recv_timeout(Duration::from_secs(10))
            .expect("connect")
        {
            meshwire::Event::PeerConnected { .. } => return,
            meshwire::Event::DialFailed { reason, .. } => panic!("dial failed: {reason}"),
            _ => {}
        }
    }
}
