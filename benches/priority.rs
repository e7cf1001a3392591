//! T2 — urgent-message latency on a saturated link (see BENCHMARKS.md).
//!
//! `cargo bench --bench priority -- [--bulk-size B] [--small-size S] [--interval-ms I] [--secs T]`

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{node_addr, percentile, us, Args};
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, SendError};
use parking_lot::Mutex;

const BULK: u32 = 1;
const URGENT: u32 = 2;

fn main() {
    let args = Args::parse();
    let bulk_size: usize = args.get("bulk-size", 1 << 20);
    let small_size: usize = args.get("small-size", 256).max(8);
    let interval = Duration::from_millis(args.get("interval-ms", 10));
    let secs = Duration::from_secs_f64(args.get("secs", 5.0));

    let chans = [
        ChannelConfig::new(BULK)
            .priority(1)
            .max_message_size(bulk_size)
            .send_queue_capacity(8),
        ChannelConfig::new(URGENT)
            .priority(100)
            .max_message_size(small_size),
    ];
    let start = |i: usize| {
        let mut b = NodeBuilder::new("bench-t2").listen(node_addr(10 + i));
        for c in &chans {
            b = b.channel(c.clone());
        }
        b.dedicated_queue(BULK, 64)
            .dedicated_queue(URGENT, 4096)
            .start()
            .expect("start node")
    };
    let (tx, rx) = (start(0), start(1));
    common::connect(&tx, &rx);
    // The bulk receiver drains as fast as it can, in both phases.
    let bulk_bytes = Arc::new(AtomicU64::new(0));
    let bulk_rx = rx.channel_events(BULK).unwrap();
    let counter = bulk_bytes.clone();
    std::thread::spawn(move || {
        while let Ok(ev) = bulk_rx.recv() {
            if let Event::Message { data, .. } = ev {
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    });

    eprintln!("T2: idle baseline ...");
    let mut idle = urgent_stream(&tx, &rx, small_size, interval, secs);
    eprintln!("T2: under bulk load ...");
    let loading = Arc::new(AtomicBool::new(true));
    let (flag, sender, peer) = (loading.clone(), tx.clone(), rx.peer_id());
    let bulk = std::thread::spawn(move || {
        while flag.load(Ordering::Relaxed) {
            match sender.send(peer, BULK, vec![7u8; bulk_size]) {
                Ok(()) => {}
                Err(SendError::Full) => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => panic!("bulk send: {e}"),
            }
        }
    });
    // Let the link saturate first.
    std::thread::sleep(Duration::from_millis(500));
    let bytes0 = bulk_bytes.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut loaded = urgent_stream(&tx, &rx, small_size, interval, secs);
    let bulk_mb_per_s =
        (bulk_bytes.load(Ordering::Relaxed) - bytes0) as f64 / t0.elapsed().as_secs_f64() / 1e6;
    loading.store(false, Ordering::Relaxed);
    bulk.join().unwrap();

    println!(
        "{{\"bench\":\"T2\",\"impl\":\"meshwire\",\"bulk_mb_per_s\":{bulk_mb_per_s:.1},\"idle_p50_us\":{:.1},\"idle_p99_us\":{:.1},\"loaded_p50_us\":{:.1},\"loaded_p99_us\":{:.1},\"loaded_max_us\":{:.1}}}",
        percentile(&mut idle, 0.50),
        percentile(&mut idle, 0.99),
        percentile(&mut loaded, 0.50),
        percentile(&mut loaded, 0.99),
        percentile(&mut loaded, 1.0),
    );
    tx.shutdown();
    rx.shutdown();
}

/// Sends one urgent message every `interval` for `duration`; returns latencies in µs.
fn urgent_stream(
    tx: &NodeHandle,
    rx: &NodeHandle,
    size: usize,
    interval: Duration,
    duration: Duration,
) -> Vec<f64> {
    let count = (duration.as_secs_f64() / interval.as_secs_f64()).round() as usize;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let urgent_rx = rx.channel_events(URGENT).unwrap();
    let stamps = sent_at.clone();
    let receiver = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(count);
        while lat.len() < count {
            match urgent_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Message { data, .. }) => {
                    let now = Instant::now();
                    let seq = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
                    if let Some(Some(t)) = stamps.lock().get(seq) {
                        lat.push(us(now - *t));
                    }
                }
                Ok(_) => {}
                Err(_) => panic!("urgent message lost ({} of {count} arrived)", lat.len()),
            }
        }
        lat
    });
    let start = Instant::now();
    for seq in 0..count {
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut msg = vec![0u8; size];
        msg[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        sent_at.lock()[seq] = Some(Instant::now());
        tx.send(rx.peer_id(), URGENT, msg).expect("urgent send");
    }
    receiver.join().unwrap()
}
