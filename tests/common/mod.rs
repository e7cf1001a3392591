//! Helpers shared by the loopback integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, PeerId, Runtime};

pub const NET: &str = "meshwire-test";

/// The i-th node's own loopback address, spread over many /24s.
pub fn addr(i: usize) -> SocketAddr {
    let i = i + 1;
    SocketAddr::from(([127, 10 + (i / 250) as u8, (i % 250) as u8, 1], 0))
}

pub fn builder(i: usize, channels: &[ChannelConfig]) -> NodeBuilder {
    let mut b = NodeBuilder::new(NET).listen(addr(i)).seed(i as u64);
    for c in channels {
        b = b.channel(c.clone());
    }
    b
}

pub fn start(i: usize, channels: &[ChannelConfig], rt: Option<&Runtime>) -> NodeHandle {
    let b = builder(i, channels);
    match rt {
        Some(rt) => b.start_on(rt).expect("start node"),
        None => b.start().expect("start node"),
    }
}

/// Waits for the first event that `pick` accepts.
pub fn wait_for<T>(
    rx: &Receiver<Event>,
    timeout: Duration,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => {
                if let Some(t) = pick(ev) {
                    return t;
                }
            }
            Err(_) => panic!("timed out waiting for an event"),
        }
    }
}

pub fn connected(rx: &Receiver<Event>, peer: PeerId) {
    wait_for(rx, Duration::from_secs(10), |ev| match ev {
        Event::PeerConnected { peer: p, .. } if p == peer => Some(()),
        _ => None,
    })
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// CPU seconds (user + system) of this process so far.
pub fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
