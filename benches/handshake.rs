//! H1 — connection setup rate (see BENCHMARKS.md).
//!
//! `cargo bench --bench handshake -- [--count K]`

mod common;

use std::time::{Duration, Instant};

use common::{node_addr, percentile, us, Args};
use meshwire::config::PeerLimits;
use meshwire::{ChannelConfig, Event, NodeBuilder};

fn main() {
    let args = Args::parse();
    let count: usize = args.get("count", 2000);
    // One dialer from one IP opening connections back to back: the per-IP and
    // inbound limits must not count connections that are still closing.
    let limits = PeerLimits {
        max_inbound: 1024,
        max_outbound: 1024,
        max_per_ip: 1024,
        // H1 measures what a connection costs to set up, from one dialer: the
        // per-subnet admission rate (a defence against floods) is not what it measures.
        handshake_rate: None,
        ..PeerLimits::default()
    };
    let listener = NodeBuilder::new("bench-h1")
        .listen(node_addr(30))
        .channel(ChannelConfig::new(1))
        .limits(limits.clone())
        // The DHT is not part of connection setup; with it, every reconnect's DHT
        // ping counts against the request rate and the dialer is banned after a
        // few hundred (now at accept, by address).
        .kad(None)
        .start()
        .expect("listener");
    let dialer = NodeBuilder::new("bench-h1")
        .listen(node_addr(31))
        .channel(ChannelConfig::new(1))
        .limits(limits)
        .kad(None)
        .start()
        .expect("dialer");
    let target = listener.listen_addrs()[0];
    let events = dialer.events();
    let mut setup = Vec::with_capacity(count);
    eprintln!("H1: {count} connections ...");
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        dialer.dial(target, Some(listener.peer_id())).unwrap();
        loop {
            match events
                .recv_timeout(Duration::from_secs(10))
                .expect("dial outcome")
            {
                Event::PeerConnected { peer, .. } => {
                    setup.push(us(t.elapsed()));
                    dialer.disconnect(peer).unwrap();
                    break;
                }
                Event::DialFailed { reason, .. } => panic!("dial failed: {reason}"),
                _ => {}
            }
        }
        // The next dial starts once this one is closed, so dials do not overlap.
        loop {
            match events
                .recv_timeout(Duration::from_secs(10))
                .expect("disconnect")
            {
                Event::PeerDisconnected { .. } => break,
                _ => continue,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"H1\",\"impl\":\"meshwire\",\"count\":{count},\"secs\":{secs:.3},\"per_s\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
        count as f64 / secs,
        percentile(&mut setup, 0.50),
        percentile(&mut setup, 0.99),
    );
    dialer.shutdown();
    listener.shutdown();
}
