//! Request/response over real loopback TCP: answers matched to their requests,
//! timeouts, refusals at the limits, and requests to a peer we are not connected to
//! over a lookup-only connection that takes no slot.

mod common;

use std::time::{Duration, Instant};

use common::*;
use meshwire::config::PeerLimits;
use meshwire::kad::key::key_from_name;
use meshwire::kad::KadConfig;
use meshwire::{
    ChannelConfig, Event, NodeHandle, RefuseReason, RequestConfig, RequestError, RouteOptions,
    RouteOutcome,
};

const CH: u32 = 3;
const T: Duration = Duration::from_secs(5);

/// Answers every request with "re:" and its bytes, except those starting "quiet".
fn serve(node: &NodeHandle) {
    let node = node.clone();
    let events = node.events();
    std::thread::spawn(move || {
        while let Ok(ev) = events.recv() {
            if let Event::Request { id, data, .. } = ev {
                if !data.starts_with(b"quiet") {
                    let _ = node.respond(id, [b"re:".as_slice(), &data].concat());
                }
            }
        }
    });
}

fn pair(i: usize, server: RequestConfig) -> (NodeHandle, NodeHandle) {
    let a = builder(i, &[ChannelConfig::new(CH)]).start().unwrap();
    let mut b = builder(i + 1, &[ChannelConfig::new(CH)]);
    b.config_mut().requests = server;
    let b = b.start().unwrap();
    let ea = a.events();
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    (a, b)
}

#[test]
fn answers_come_back_to_their_requests_and_silence_times_out() {
    let (a, b) = pair(900, RequestConfig::default());
    serve(&b);
    // Blocking, one after another.
    for i in 0..5u8 {
        let got = a.request(b.peer_id(), CH, vec![i; 3], T).unwrap();
        assert_eq!(got, [b"re:".as_slice(), &[i; 3]].concat());
    }
    // Many at once, answered out of order of asking is fine: each finds its own.
    let ids: Vec<_> = (0..20u8)
        .map(|i| {
            a.request_async(b.peer_id(), CH, vec![i; 70_000], T)
                .unwrap()
        })
        .collect();
    let ea = a.events();
    let mut answered = 0;
    while answered < ids.len() {
        match ea.recv_timeout(T).expect("a response") {
            Event::Response { id, peer, result } => {
                let i = ids.iter().position(|x| *x == id).expect("one of ours") as u8;
                assert_eq!(peer, b.peer_id());
                let data = result.unwrap();
                assert_eq!(&data[..3], b"re:");
                assert_eq!(data[3..], vec![i; 70_000][..]);
                answered += 1;
            }
            _ => continue,
        }
    }
    // An unanswered request times out at its deadline, as its own error.
    let started = Instant::now();
    let err = a
        .request(
            b.peer_id(),
            CH,
            b"quiet".to_vec(),
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert_eq!(err, RequestError::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Channels checked before anything is sent: unknown, the DHT's, too large.
    assert_eq!(
        a.request(b.peer_id(), 99, vec![], T),
        Err(RequestError::UnknownChannel(99))
    );
    assert_eq!(
        a.request(b.peer_id(), meshwire::kad::KAD_CHANNEL, vec![], T),
        Err(RequestError::UnknownChannel(meshwire::kad::KAD_CHANNEL))
    );
    assert!(matches!(
        a.request(b.peer_id(), CH, vec![0; 5 << 20], T),
        Err(RequestError::TooLarge { .. })
    ));
    let m = a.metrics().unwrap();
    assert!(m.requests_sent >= 26 && m.requests_timed_out == 1, "{m:?}");
    let mb = b.metrics().unwrap();
    assert_eq!(mb.responses_sent, 25);
    let text = mb.to_prometheus();
    assert!(text.contains("meshwire_responses_sent_total 25"), "{text}");
}

#[test]
fn a_peer_over_its_limit_is_refused_busy_and_a_departed_one_fails_the_wait() {
    let limits = RequestConfig {
        max_inbound_per_peer: 2,
        ..RequestConfig::default()
    };
    let (a, b) = pair(910, limits);
    let eb = b.events();
    // Two held by the server's application (never answered), the third refused at
    // once without reaching it.
    for _ in 0..2 {
        a.request_async(b.peer_id(), CH, b"quiet".to_vec(), T)
            .unwrap();
    }
    assert_eq!(
        a.request(b.peer_id(), CH, b"quiet".to_vec(), T),
        Err(RequestError::Refused(RefuseReason::Busy))
    );
    let held: Vec<_> = (0..2)
        .map(|_| {
            wait_for(&eb, T, |ev| match ev {
                Event::Request {
                    id, peer, channel, ..
                } => {
                    assert_eq!((peer, channel), (a.peer_id(), CH));
                    Some(id)
                }
                _ => None,
            })
        })
        .collect();
    assert_eq!(
        eb.recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|e| matches!(e, Event::Request { .. })),
        None,
        "the refused request never reached the application"
    );
    assert_eq!(b.metrics().unwrap().requests_refused.get("busy"), Some(&1));
    // An answer frees a place.
    b.respond(held[0], b"late but fine".to_vec()).unwrap();
    serve(&b);
    assert_eq!(
        a.request(b.peer_id(), CH, b"x".to_vec(), T).unwrap(),
        b"re:x"
    );
    // The peer leaves with our request unanswered: the wait ends with the reason.
    let waiter = {
        let a = a.clone();
        let b_id = b.peer_id();
        std::thread::spawn(move || a.request(b_id, CH, b"quiet".to_vec(), Duration::from_secs(20)))
    };
    std::thread::sleep(Duration::from_millis(200));
    b.shutdown();
    let got = waiter.join().unwrap();
    assert!(
        matches!(
            got,
            Err(RequestError::Disconnected)
                | Err(RequestError::Refused(RefuseReason::ShuttingDown))
        ),
        "{got:?}"
    );
}

#[test]
fn a_peer_we_are_not_connected_to_is_reached_without_a_slot() {
    // A hub; A and C know each other only through it. A takes no peers either way,
    // so the request must travel on a lookup-only connection.
    let kad = || Some(KadConfig::default());
    let hub = builder(920, &[ChannelConfig::new(CH)])
        .kad(kad())
        .start()
        .unwrap();
    let hub_addr = hub.listen_addrs()[0];
    let c = builder(921, &[ChannelConfig::new(CH)])
        .kad(kad())
        .bootstrap_peer(hub_addr, Some(hub.peer_id()))
        .start()
        .unwrap();
    serve(&c);
    let mut a = builder(922, &[ChannelConfig::new(CH)])
        .kad(kad())
        .limits(PeerLimits {
            max_outbound: 0,
            max_inbound: 0,
            ..PeerLimits::default()
        })
        .bootstrap_peer(hub_addr, Some(hub.peer_id()));
    a.config_mut().lookup_idle = Duration::from_millis(500);
    let a = a.start().unwrap();
    // C is in the hub's table before A asks, and A knows the hub (A finds C
    // through it).
    assert!(eventually(Duration::from_secs(10), || hub
        .routing_table()
        .unwrap()
        .iter()
        .any(|r| r.id == c.peer_id())));
    assert!(eventually(Duration::from_secs(10), || !a
        .routing_table()
        .unwrap()
        .is_empty()));
    let got = a
        .request(c.peer_id(), CH, b"hello".to_vec(), Duration::from_secs(10))
        .expect("answered over a lookup-only connection");
    assert_eq!(got, b"re:hello");
    // Neither side counts the other as a peer, and no mesh took it.
    assert!(a.peers().iter().all(|p| p.id != c.peer_id()));
    assert!(c.peers().iter().all(|p| p.id != a.peer_id()));
    assert_eq!(c.metrics().unwrap().requests_received, 1);
    // A second request reuses the connection; once idle it closes, and a later one
    // dials again.
    assert_eq!(
        a.request(c.peer_id(), CH, b"again".to_vec(), T).unwrap(),
        b"re:again"
    );
    let dials = a.metrics().unwrap().dials;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        a.request(c.peer_id(), CH, b"later".to_vec(), T).unwrap(),
        b"re:later"
    );
    assert!(
        a.metrics().unwrap().dials > dials,
        "the idle connection was closed"
    );
    // Routing by key: nobody provides this one; C provides that one, but its
    // application answers nothing "quiet", so every attempt fails.
    let opts = RouteOptions {
        fanout: 1,
        timeout: Duration::from_millis(500),
        attempts: 2,
    };
    assert_eq!(
        a.route(key_from_name("test/nobody"), CH, vec![], opts.clone()),
        RouteOutcome::NoProvider
    );
    let key = key_from_name("test/echo");
    c.provide_with(key, b"echo v1".to_vec()).unwrap();
    assert!(eventually(Duration::from_secs(10), || a
        .find_providers_blocking(key, T)
        .is_ok_and(|r| {
            r.providers
                .iter()
                .any(|p| p.id() == c.peer_id() && p.metadata == b"echo v1")
        })));
    assert!(matches!(
        c.provide_with(key, vec![0; 257]),
        Err(meshwire::SendError::TooLarge {
            size: 257,
            max: 256
        })
    ));
    assert_eq!(
        a.route(key, CH, b"quiet".to_vec(), opts.clone()),
        RouteOutcome::AllFailed {
            tried: vec![(c.peer_id(), RequestError::TimedOut)]
        }
    );
    match a.route(key, CH, b"routed".to_vec(), opts) {
        RouteOutcome::Delivered {
            peer,
            answer,
            failed,
        } => {
            assert_eq!(
                (peer, answer, failed),
                (c.peer_id(), b"re:routed".to_vec(), vec![])
            );
        }
        other => panic!("{other:?}"),
    }
    // Nobody: unreachable, not a hang.
    let nobody = meshwire::Keypair::generate().unwrap().peer_id();
    assert_eq!(
        a.request(nobody, CH, vec![], Duration::from_secs(10)),
        Err(RequestError::Unreachable)
    );
}
