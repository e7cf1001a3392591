//! Peer manager tests: limits, reserved slots, scores, bans and redials.

use super::*;
use crate::config::DEFAULT_MAX_OUTBOUND;

fn manager(limits: PeerLimits) -> (PeerManager, Instant) {
    let now = Instant::now();
    (PeerManager::new(limits, vec![], now, Rng::new(1)), now)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn inbound_outbound_and_per_ip_limits() {
    let (mut m, _) = manager(PeerLimits::default());
    // 64 may handshake at once; 40 become peers; the 41st is refused.
    let slots: Vec<Slot> = (0..64)
        .map(|i| {
            m.admit(Direction::Inbound, ip(&format!("10.0.{i}.1")))
                .unwrap()
        })
        .collect();
    assert_eq!(
        m.admit(Direction::Inbound, ip("10.1.0.1")),
        Err(Refusal::TooManyPending)
    );
    let mut established = 0;
    for (i, s) in slots.into_iter().enumerate() {
        match m.establish(s, false) {
            Ok(Slot::Inbound) => established += 1,
            Err(Slot::IpOnly) => assert!(i >= 40, "refused early at {i}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(established, 40);
    m.release(Slot::Inbound, ip("10.0.0.1"));
    let s = m.admit(Direction::Inbound, ip("10.1.0.1")).unwrap();
    assert_eq!(m.establish(s, false), Ok(Slot::Inbound));
    // A lookup-only connection gives its slot back.
    let s = m.admit(Direction::Inbound, ip("10.1.0.2")).unwrap();
    assert_eq!(m.unslot(s), Slot::IpOnly);

    let (mut m, _) = manager(PeerLimits::default());
    for _ in 0..4 {
        m.admit(Direction::Inbound, ip("10.0.0.9")).unwrap();
    }
    assert_eq!(
        m.admit(Direction::Inbound, ip("10.0.0.9")),
        Err(Refusal::TooManyFromIp)
    );
    assert_eq!(
        m.admit(Direction::Outbound, ip("10.0.0.9")),
        Err(Refusal::TooManyFromIp)
    );
    for i in 0..10 {
        m.admit(Direction::Outbound, ip(&format!("10.2.{i}.1")))
            .unwrap();
    }
    assert_eq!(
        m.admit(Direction::Outbound, ip("10.3.0.1")),
        Err(Refusal::TooManyOutbound)
    );
    assert_eq!(m.slots(), (0, 10));
}

#[test]
fn banned_ips_and_handshake_floods_are_refused_at_accept() {
    let (mut m, now) = manager(PeerLimits::default());
    let limit = PeerLimits::default().handshake_rate.unwrap();
    let mut admitted = 0;
    for i in 0..1000 {
        // One /24, many addresses: the rate is per subnet, not per address.
        let a = ip(&format!("10.9.9.{}", i % 250));
        match m.admit_inbound(a, now) {
            Ok(slot) => {
                admitted += 1;
                m.release(slot, a);
            }
            Err(r) => assert_eq!(r, Refusal::HandshakeRate),
        }
    }
    assert_eq!(admitted, limit.burst as usize);
    // Another subnet is not affected; the first refills with time.
    assert!(m.admit_inbound(ip("10.9.10.1"), now).is_ok());
    assert!(m
        .admit_inbound(ip("10.9.9.1"), now + Duration::from_secs(1))
        .is_ok());
    m.ban_ip(ip("10.8.0.1"), Duration::from_secs(60), now);
    assert_eq!(m.admit_inbound(ip("10.8.0.1"), now), Err(Refusal::BannedIp));
    assert!(m
        .admit_inbound(ip("10.8.0.1"), now + Duration::from_secs(61))
        .is_ok());
}

#[test]
fn reserved_slots_are_outside_every_limit_and_fill_none() {
    let (mut m, now) = manager(PeerLimits::default());
    for i in 0..DEFAULT_MAX_OUTBOUND {
        m.admit(Direction::Outbound, ip(&format!("10.2.{i}.1")))
            .unwrap();
    }
    for _ in 0..4 {
        m.admit(Direction::Inbound, ip("10.3.0.1")).unwrap();
    }
    // Outbound and per-IP limits reached: a persistent peer still gets its slot,
    // and it does not take one of the outbound slots.
    assert_eq!(m.admit_reserved(ip("10.3.0.1")), Slot::Reserved);
    assert_eq!(m.slots().1, DEFAULT_MAX_OUTBOUND);
    // Inbound full: an unconditional peer is established all the same.
    let (mut m, _) = manager(PeerLimits {
        max_inbound: 1,
        ..PeerLimits::default()
    });
    let a = m.admit(Direction::Inbound, ip("10.4.0.1")).unwrap();
    let b = m.admit(Direction::Inbound, ip("10.4.0.2")).unwrap();
    let c = m.admit(Direction::Inbound, ip("10.4.0.3")).unwrap();
    assert_eq!(m.establish(a, false), Ok(Slot::Inbound));
    assert_eq!(m.establish(b, false), Err(Slot::IpOnly));
    assert_eq!(m.establish(c, true), Ok(Slot::Reserved));
    assert_eq!(m.slots(), (1, 0));
    m.release(Slot::Reserved, ip("10.4.0.3"));
    assert_eq!(m.slots(), (1, 0));
    // Added at runtime, dialed at once; removed, never again.
    let addr: SocketAddr = "10.5.0.1:1".parse().unwrap();
    assert!(m.add_persistent(PersistentPeer { addr, id: None }, now));
    assert!(!m.add_persistent(PersistentPeer { addr, id: None }, now));
    assert_eq!(m.due_dials(now).len(), 1);
    m.persistent_lost(addr, None, now);
    m.remove_persistent(Some(addr), None);
    assert_eq!(m.next_dial(), None);
    assert!(!m.is_persistent(addr, None));
}

#[test]
fn application_reports_are_graded_and_malice_bans_at_once() {
    let (mut m, now) = manager(PeerLimits::default());
    let p = PeerId::from_bytes([3; 32]);
    // Good marks first: capped, so they cannot shield a malicious peer.
    for _ in 0..1000 {
        m.adjust(p, ScoreSource::Application, m.good_mark(), now);
    }
    assert_eq!(m.score(&p, now).application, 50.0);
    assert!(!m.adjust(
        p,
        ScoreSource::Application,
        m.report_penalty(Misbehavior::Minor),
        now
    ));
    assert!(!m.adjust(
        p,
        ScoreSource::Application,
        m.report_penalty(Misbehavior::Invalid),
        now
    ));
    assert!((m.score(&p, now).total + 5.0).abs() < 1e-9);
    assert!(m.adjust(
        p,
        ScoreSource::Application,
        m.report_penalty(Misbehavior::Malicious),
        now
    ));
    assert!(m.is_banned(&p, now));
    // From the best score the application allows, malice still bans.
    let q = PeerId::from_bytes([4; 32]);
    for _ in 0..1000 {
        m.adjust(q, ScoreSource::Application, m.good_mark(), now);
    }
    assert!(m.adjust(
        q,
        ScoreSource::Application,
        m.report_penalty(Misbehavior::Malicious),
        now
    ));
}

#[test]
fn violations_lead_to_a_ban_that_expires_and_scores_decay() {
    let (mut m, now) = manager(PeerLimits::default());
    let p = PeerId::from_bytes([1; 32]);
    assert!(!m.violation(p, now));
    assert!(!m.violation(p, now));
    assert!(m.violation(p, now), "third violation crosses -100");
    assert!(m.is_banned(&p, now));
    assert!(m.is_banned(&p, now + Duration::from_secs(599)));
    assert!(!m.is_banned(&p, now + Duration::from_secs(600)));
    // Decay: one half-life later, -50 is -25.
    let q = PeerId::from_bytes([2; 32]);
    m.violation(q, now);
    let later = m.score(&q, now + Duration::from_secs(600)).total;
    assert!((later + 25.0).abs() < 1e-6, "{later}");
}

#[test]
fn persistent_peers_back_off_exponentially_with_jitter() {
    let now = Instant::now();
    let addr: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let mut m = PeerManager::new(
        PeerLimits::default(),
        vec![PersistentPeer { addr, id: None }],
        now,
        Rng::new(7),
    );
    assert_eq!(m.due_dials(now).len(), 1);
    assert!(m.due_dials(now).is_empty(), "already dialing");
    let mut t = now;
    let mut delays = Vec::new();
    for _ in 0..8 {
        m.persistent_lost(addr, None, t);
        let next = m.next_dial().unwrap();
        delays.push(next - t);
        t = next;
        assert_eq!(m.due_dials(t).len(), 1);
    }
    for (i, d) in delays.iter().enumerate() {
        let base = Duration::from_secs(1 << i).min(Duration::from_secs(120));
        assert!(*d >= base && *d <= base.mul_f64(1.5), "delay {i}: {d:?}");
    }
    m.persistent_connected(addr, PeerId::from_bytes([3; 32]));
    m.persistent_lost(addr, None, t);
    assert!(
        m.next_dial().unwrap() - t <= Duration::from_millis(1500),
        "reset after connect"
    );
}
