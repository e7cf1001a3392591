//! The application's say over peers, over real loopback TCP: misbehavior reports
//! and good marks feed the one score, a peer's details, and the connection limits
//! that persistent and unconditional peers are exempt from.

mod common;

use std::time::{Duration, Instant};

use common::*;
use meshwire::config::PeerLimits;
use meshwire::error::LocalClose;
use meshwire::{ChannelConfig, Direction, DisconnectReason, Event, Keypair, Misbehavior};

const CH: u32 = 1;

#[test]
fn reports_feed_the_score_peer_info_tells_it_and_malice_bans() {
    let node = |i: usize| {
        builder(i, &[ChannelConfig::new(CH)])
            .keepalive(Duration::from_millis(100), Duration::from_secs(2))
            .start()
            .unwrap()
    };
    let (a, b) = (node(700), node(701));
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    connected(&eb, a.peer_id());
    let before = Instant::now();
    for i in 0..3u8 {
        a.send(b.peer_id(), CH, vec![i; 100]).unwrap();
    }
    for _ in 0..3 {
        wait_for(&eb, Duration::from_secs(5), |ev| {
            matches!(ev, Event::Message { .. }).then_some(())
        });
    }
    let info = || b.peer_info(a.peer_id()).unwrap().expect("connected");
    assert!(eventually(Duration::from_secs(5), || info().rtt.is_some()));
    let d = info();
    assert_eq!(d.id, a.peer_id());
    assert_eq!(d.direction, Direction::Inbound);
    assert!(d.version.starts_with("meshwire/"), "{}", d.version);
    assert!(d.channels.contains(&CH));
    assert!(!d.persistent && !d.unconditional);
    assert!(d.connected_since <= before);
    assert!(d.rtt.unwrap() < Duration::from_secs(1));
    let traffic = d.traffic.iter().find(|(c, _)| *c == CH).unwrap().1;
    assert_eq!((traffic.recv_msgs, traffic.recv_bytes), (3, 300));
    assert!(
        d.bytes_read > 300 && d.bytes_written > 0,
        "wire bytes: {d:?}"
    );
    // Each side tells the other where it sees it: a saw b on the address it
    // dialed; b saw a on a's source address (bound to a's listen IP).
    let seen_by_b = d.addr;
    let d_at_a = a.peer_info(b.peer_id()).unwrap().expect("connected");
    assert_eq!(d_at_a.observed_addr, Some(seen_by_b));
    assert_eq!(d.observed_addr, Some(b.listen_addrs()[0]));
    assert_eq!(seen_by_b.ip(), a.listen_addrs()[0].ip());
    assert_eq!(d.score.total, 0.0);
    // The Prometheus text carries the same RTT.
    let text = b.metrics().unwrap().to_prometheus();
    assert!(
        text.contains(&format!(
            "meshwire_peer_rtt_seconds{{peer=\"{}\"}}",
            a.peer_id()
        )),
        "{text}"
    );
    assert_eq!(
        b.peer_info(Keypair::generate().unwrap().peer_id()),
        Ok(None)
    );

    // Graded: a minor report costs a tenth of an invalid one; marks make up for it.
    b.report(a.peer_id(), Misbehavior::Minor, "stale vote")
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || info()
        .score
        .application
        < 0.0));
    let minor = info().score;
    assert_eq!(minor.total, minor.application);
    b.report(a.peer_id(), Misbehavior::Invalid, "bad block part")
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        (info().score.application / minor.application - 11.0).abs() < 0.01
    }));
    b.mark_good(a.peer_id()).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        (info().score.application / minor.application - 10.0).abs() < 0.01
    }));
    // Malice bans at once: disconnected, and its redial is refused.
    b.report(a.peer_id(), Misbehavior::Malicious, "equivocation")
        .unwrap();
    let reason = wait_for(&eb, Duration::from_secs(5), |ev| match ev {
        Event::PeerDisconnected { peer, reason } if peer == a.peer_id() => Some(reason),
        _ => None,
    });
    assert_eq!(reason, DisconnectReason::Local(LocalClose::Banned));
    let m = b.metrics().unwrap();
    assert_eq!(m.bans, 1);
    assert_eq!(m.reports.get("malicious"), Some(&1));
    assert_eq!(m.reports.get("minor"), Some(&1));
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.peers().is_empty(), "a banned peer came back");
    a.shutdown();
    b.shutdown();
}

#[test]
fn persistent_and_unconditional_peers_get_in_past_full_limits() {
    let full = PeerLimits {
        max_inbound: 1,
        max_outbound: 0,
        ..PeerLimits::default()
    };
    let chans = [ChannelConfig::new(CH)];
    let sentry_key = Keypair::generate().unwrap();
    let sentry_id = sentry_key.peer_id();
    let target = builder(710, &chans)
        .limits(full.clone())
        .unconditional_peer(sentry_id)
        .start()
        .unwrap();
    let t_addr = target.listen_addrs()[0];
    let events = target.events();
    // An ordinary peer takes the one inbound slot; a second is refused.
    let x = builder(711, &chans).start().unwrap();
    x.dial(t_addr, Some(target.peer_id())).unwrap();
    connected(&events, x.peer_id());
    let y = builder(712, &chans).start().unwrap();
    let ey = y.events();
    y.dial(t_addr, Some(target.peer_id())).unwrap();
    wait_for(&ey, Duration::from_secs(5), |ev| match ev {
        Event::PeerDisconnected { .. } | Event::DialFailed { .. } => Some(()),
        _ => None,
    });
    // The unconditional one gets in all the same.
    let sentry = builder(713, &chans).keypair(sentry_key).start().unwrap();
    sentry.dial(t_addr, Some(target.peer_id())).unwrap();
    connected(&events, sentry_id);
    let d = target.peer_info(sentry_id).unwrap().unwrap();
    assert!(d.unconditional);
    assert_eq!(target.peers().len(), 2);
    // No outbound slot at all, yet a persistent peer added at runtime is dialed,
    // and kept: it comes back after a restart.
    let p = builder(714, &chans).start().unwrap();
    let (p_addr, p_key_id) = (p.listen_addrs()[0], p.peer_id());
    target.add_persistent_peer(p_addr, Some(p_key_id)).unwrap();
    connected(&events, p_key_id);
    assert!(target.peer_info(p_key_id).unwrap().unwrap().persistent);
    assert_eq!(target.peers().len(), 3);
    let m = target.metrics().unwrap();
    assert_eq!((m.inbound, m.outbound), (2, 1), "{m:?}");
    for n in [x, y, sentry, p] {
        n.shutdown();
    }
    target.shutdown();
}
