//! A connection flood (5,000 attempts a second for 10 s, each replaying a real
//! `InitHello`) against a node while an honest peer streams to it: the honest
//! stream keeps at least 90% of what it carried before the flood.
//!
//! The honest stream is paced (32 MB/s offered) rather than run flat out: on a
//! two-core machine a flat-out stream measures how much CPU the flooding thread
//! itself takes from the test process, not whether the node starves its peers.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{addr, connected};
use meshwire::secure::{Handshake, HandshakeConfig};
use meshwire::{ChannelConfig, Event, Keypair, NodeBuilder, SendError};

const BULK: u32 = 3;
const MSG: usize = 64 * 1024;
/// Messages a second the honest peer offers (32 MiB/s).
const RATE: u64 = 512;

fn node(i: usize) -> meshwire::NodeHandle {
    NodeBuilder::new(common::NET)
        .listen(addr(i))
        .channel(ChannelConfig::new(BULK).send_queue_capacity(64))
        .kad(None)
        .gossip(None)
        .start()
        .unwrap()
}

/// Bytes received per phase, counted by the receiving application.
fn receive(node: &meshwire::NodeHandle, counter: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let events = node.events();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Event::Message { data, .. }) = events.recv_timeout(Duration::from_millis(50))
            {
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    });
}

fn flood(target: SocketAddr, hello: Vec<u8>, secs: u64, attempts: Arc<AtomicU64>) {
    let start = Instant::now();
    let total = 5000 * secs;
    for k in 0..total {
        let due = start + Duration::from_micros(200 * k);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        // From four /24s: the per-subnet admission rate lets a few through.
        let from = IpAddr::from([127, 99, (k % 4) as u8, 1 + (k % 200) as u8]);
        let Ok(s) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) else {
            continue;
        };
        if s.bind(&SocketAddr::new(from, 0).into()).is_err() {
            continue;
        }
        let _ = s.set_linger(Some(Duration::ZERO));
        if s.connect_timeout(&target.into(), Duration::from_millis(50))
            .is_ok()
        {
            let _ = s.send(&hello);
        }
        attempts.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_connection_flood_leaves_an_honest_stream_at_least_90_percent() {
    let target = node(400);
    let honest = node(401);
    let (events, honest_events) = (target.events(), honest.events());
    honest
        .dial(target.listen_addrs()[0], Some(target.peer_id()))
        .unwrap();
    // Both ends: the target may announce the link before the dialer has.
    connected(&events, honest.peer_id());
    connected(&honest_events, target.peer_id());
    drop((events, honest_events));

    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    receive(&target, received.clone(), stop.clone());
    // The honest peer offers RATE messages a second, for the whole test.
    let sender = {
        let (honest, stop, to) = (honest.clone(), stop.clone(), target.peer_id());
        thread::spawn(move || {
            let start = Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = start + Duration::from_micros(1_000_000 * k / RATE);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                match honest.send(to, BULK, vec![7u8; MSG]) {
                    Ok(()) => k += 1,
                    Err(SendError::Full) => thread::sleep(Duration::from_millis(1)),
                    Err(e) => panic!("honest send: {e}"),
                }
            }
        })
    };
    let window = |secs: u64| {
        let before = received.load(Ordering::Relaxed);
        let t = Instant::now();
        thread::sleep(Duration::from_secs(secs));
        (received.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64()
    };
    thread::sleep(Duration::from_secs(1));
    let baseline = window(3);

    let rng = ring::rand::SystemRandom::new();
    let key = Arc::new(Keypair::generate().unwrap());
    let mut hs = Handshake::initiator(
        Arc::new(HandshakeConfig::new(common::NET)),
        key,
        None,
        Instant::now(),
        &rng,
    )
    .unwrap();
    let hello = hs.poll_transmit().unwrap();
    let attempts = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (to, attempts) = (target.listen_addrs()[0], attempts.clone());
        thread::spawn(move || flood(to, hello, 10, attempts))
    };
    let during = window(10);
    flooder.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    let tried = attempts.load(Ordering::Relaxed);
    let m = target.metrics().unwrap();
    eprintln!(
        "baseline {:.1} MB/s, during the flood {:.1} MB/s, {tried} attempts, refused {:?}",
        baseline / 1e6,
        during / 1e6,
        m.refused
    );
    assert!(tried >= 40_000, "the flood ran: {tried} attempts");
    assert!(
        m.refused.get("handshake_rate").copied().unwrap_or(0) > 0,
        "most attempts are refused at accept"
    );
    assert!(
        during >= 0.9 * baseline,
        "honest stream fell from {baseline} to {during} bytes/s"
    );
    assert!(honest.peers().iter().any(|p| p.id == target.peer_id()));
    target.shutdown();
    honest.shutdown();
}
