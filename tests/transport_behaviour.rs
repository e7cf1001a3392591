//! The consensus transport's promises, over real loopback TCP: priority under load,
//! flow control per channel, limits, keepalive, duplicate dials, bad peers, redials.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use meshwire::config::PeerLimits;
use meshwire::mux::packet;
use meshwire::{ChannelConfig, DisconnectReason, Event, Keypair, MuxError, SendError};

const BULK: u32 = 1;
const URGENT: u32 = 2;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn an_urgent_message_is_delivered_before_a_64_mib_bulk_transfer_ends() {
    let chans = vec![
        ChannelConfig::new(BULK)
            .priority(1)
            .max_message_size(1 << 20)
            .send_queue_capacity(16),
        ChannelConfig::new(URGENT).priority(10),
    ];
    let a = start(200, &chans, None);
    let b = start(201, &chans, None);
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    connected(&eb, a.peer_id());

    let (peer, sender) = (b.peer_id(), a.clone());
    let bulk = std::thread::spawn(move || {
        for i in 0..64u8 {
            let mut msg = vec![i; 1 << 20];
            loop {
                match sender.send(peer, BULK, msg) {
                    Ok(()) => break,
                    Err(SendError::Full) => {
                        msg = vec![i; 1 << 20];
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    let mut order = Vec::new();
    let mut urgent_sent = false;
    while order.iter().filter(|&&c| c == BULK).count() < 64 {
        let channel = wait_for(&eb, Duration::from_secs(30), |ev| match ev {
            Event::Message { channel, .. } => Some(channel),
            _ => None,
        });
        order.push(channel);
        // Once the bulk transfer is well under way, the urgent message goes out.
        if !urgent_sent && order.len() == 8 {
            a.send(b.peer_id(), URGENT, b"vote".to_vec()).unwrap();
            urgent_sent = true;
        }
    }
    bulk.join().unwrap();
    let urgent_at = order
        .iter()
        .position(|&c| c == URGENT)
        .expect("urgent delivered");
    assert!(
        urgent_at < order.len() - 1,
        "urgent came after the whole bulk transfer"
    );
    // Ahead of it can be only what was already past the sender's mux: the receive
    // window (8 MiB: 8 messages), the kernel's socket buffers and the receiver's event
    // queue. The 16 bulk messages queued behind the mux are overtaken.
    assert!(
        urgent_at < 8 + 32,
        "urgent delivered at position {urgent_at}"
    );
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_stalled_channel_stalls_neither_other_channels_nor_keepalive_and_loses_nothing() {
    let chans = vec![
        ChannelConfig::new(BULK)
            .max_message_size(64 * 1024)
            .recv_window(256 * 1024),
        ChannelConfig::new(URGENT),
    ];
    let fast = Duration::from_millis(100);
    let a = builder(210, &chans)
        .keepalive(fast, Duration::from_millis(300))
        .start()
        .unwrap();
    let b = builder(211, &chans)
        .keepalive(fast, Duration::from_millis(300))
        .dedicated_queue(BULK, 2)
        .dedicated_queue(URGENT, 1000)
        .start()
        .unwrap();
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], None).unwrap();
    connected(&ea, b.peer_id());
    connected(&eb, a.peer_id());
    let stalled = b.channel_events(BULK).unwrap();
    let flowing = b.channel_events(URGENT).unwrap();

    for i in 0..100u8 {
        a.send(b.peer_id(), BULK, vec![i; 64 * 1024]).unwrap();
    }
    // The application takes nothing from BULK; URGENT keeps flowing.
    for i in 0..50u8 {
        a.send(b.peer_id(), URGENT, vec![i; 100]).unwrap();
        let got = wait_for(&flowing, Duration::from_secs(5), |ev| match ev {
            Event::Message { data, .. } => Some(data[0]),
            _ => None,
        });
        assert_eq!(got, i);
    }
    // Many keepalive rounds pass with BULK stalled: the connection stays up.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.peers().len(), 1);
    assert!(ea
        .try_iter()
        .all(|ev| !matches!(ev, Event::PeerDisconnected { .. })));
    // Only about a window's worth crossed the link.
    let m = b.metrics().unwrap();
    assert!(
        m.channels[&BULK].recv_msgs <= 8,
        "{} arrived while stalled",
        m.channels[&BULK].recv_msgs
    );
    // The application resumes: all 100 arrive, in order.
    for i in 0..100u8 {
        let got = wait_for(&stalled, Duration::from_secs(10), |ev| match ev {
            Event::Message { data, .. } => Some(data),
            _ => None,
        });
        assert_eq!((got[0], got.len()), (i, 64 * 1024));
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn the_41st_inbound_and_the_5th_from_one_ip_are_refused() {
    let node = start(220, &[ChannelConfig::new(1)], None);
    let target = node.listen_addrs()[0];
    // Four from one IP are fine; the fifth is refused at accept.
    let same_ip: Vec<_> = (0..4)
        .map(|_| raw_tcp(target, ip("127.60.0.1")).unwrap())
        .collect();
    let mut fifth = raw_tcp(target, ip("127.60.0.1")).unwrap();
    assert!(closed(&mut fifth), "5th connection from one IP was kept");
    // Forty peers from distinct IPs fill the inbound slots; the 41st is closed as
    // soon as its handshake shows it is a full peer.
    let peers: Vec<_> = (0..40)
        .map(|i| {
            let key = Arc::new(Keypair::generate().unwrap());
            raw_handshake(target, ip(&format!("127.61.{i}.1")), key, vec![1]).unwrap()
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || node
        .metrics()
        .unwrap()
        .inbound
        == 40));
    let key = Arc::new(Keypair::generate().unwrap());
    let mut extra = raw_handshake(target, ip("127.62.0.1"), key, vec![1]).unwrap();
    assert!(
        extra.closed_by_peer(Duration::from_secs(5)),
        "41st inbound was kept"
    );
    let m = node.metrics().unwrap();
    assert_eq!(m.refused.get("per_ip"), Some(&1));
    assert_eq!(m.refused.get("max_inbound"), Some(&1));
    assert_eq!(m.inbound, 40);
    drop((same_ip, peers));
    node.shutdown();
}

fn closed(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn a_silent_peer_is_dropped_at_its_ping_timeout() {
    let node = builder(230, &[ChannelConfig::new(1)])
        .keepalive(Duration::from_millis(200), Duration::from_millis(300))
        .start()
        .unwrap();
    let events = node.events();
    let key = Arc::new(Keypair::generate().unwrap());
    // Handshakes, then never reads or writes again.
    let _raw = raw_handshake(
        node.listen_addrs()[0],
        ip("127.63.0.1"),
        key.clone(),
        vec![1],
    )
    .unwrap();
    connected(&events, key.peer_id());
    let started = Instant::now();
    let reason = wait_for(&events, Duration::from_secs(5), |ev| match ev {
        Event::PeerDisconnected { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(reason, DisconnectReason::Protocol(MuxError::PingTimeout));
    assert!(started.elapsed() >= Duration::from_millis(400));
    node.shutdown();
}

#[test]
fn simultaneous_dials_end_with_exactly_one_connection() {
    for round in 0..5 {
        let a = start(240 + 2 * round, &[ChannelConfig::new(1)], None);
        let b = start(241 + 2 * round, &[ChannelConfig::new(1)], None);
        a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
        b.dial(a.listen_addrs()[0], Some(a.peer_id())).unwrap();
        assert!(eventually(Duration::from_secs(5), || {
            let (ma, mb) = (a.metrics().unwrap(), b.metrics().unwrap());
            ma.inbound + ma.outbound == 1
                && mb.inbound + mb.outbound == 1
                && ma.pending == 0
                && mb.pending == 0
        }));
        let (pa, pb) = (a.peers(), b.peers());
        assert_eq!((pa.len(), pb.len()), (1, 1));
        assert_ne!(
            pa[0].direction, pb[0].direction,
            "both sides kept the same connection"
        );
        // And it works.
        a.send(b.peer_id(), 1, b"after the race".to_vec()).unwrap();
        wait_for(&b.events(), Duration::from_secs(5), |ev| match ev {
            Event::Message { data, .. } if data == b"after the race" => Some(()),
            _ => None,
        });
        a.shutdown();
        b.shutdown();
    }
}

/// A named way to break the protocol, and the disconnect label it earns.
type Offence = (&'static str, Box<dyn Fn(&mut RawPeer)>, &'static str);

#[test]
fn protocol_violations_close_the_connection_and_repeat_offenders_are_banned() {
    let node = start(270, &[ChannelConfig::new(1).max_message_size(1000)], None);
    let events = node.events();
    let key = Arc::new(Keypair::generate().unwrap());
    let target = node.listen_addrs()[0];
    let offences: [Offence; 3] = [
        (
            "garbage packet",
            Box::new(|p: &mut RawPeer| p.send_frame(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff])),
            "protocol",
        ),
        (
            "unknown channel",
            Box::new(|p: &mut RawPeer| {
                let mut f = Vec::new();
                packet::put_msg(&mut f, 77, true, b"x", 0, meshwire::mux::Tag::Plain);
                p.send_frame(&f);
            }),
            "protocol",
        ),
        (
            "corrupt frame",
            Box::new(|p: &mut RawPeer| {
                use std::io::Write;
                let mut out = Vec::new();
                p.session.sealer.seal(&mut out, b"abc").unwrap();
                let last = out.len() - 1;
                out[last] ^= 1;
                p.stream.write_all(&out).unwrap();
            }),
            "frame",
        ),
    ];
    for (what, offend, label) in offences.iter() {
        let mut raw = raw_handshake(target, ip("127.65.0.1"), key.clone(), vec![1]).unwrap();
        connected(&events, key.peer_id());
        offend(&mut raw);
        assert!(
            raw.closed_by_peer(Duration::from_secs(5)),
            "{what}: not closed"
        );
        let reason = wait_for(&events, Duration::from_secs(5), |ev| match ev {
            Event::PeerDisconnected { reason, .. } => Some(reason),
            _ => None,
        });
        assert_eq!(reason.label(), *label, "{what}: {reason}");
    }
    let m = node.metrics().unwrap();
    assert_eq!(m.bans, 1, "three violations cross the ban threshold");
    // Banned, with the address it was seen on: the next connection from there is
    // refused at accept, before any handshake, with no PeerConnected.
    assert!(raw_handshake(target, ip("127.65.0.1"), key.clone(), vec![1]).is_err());
    assert!(events
        .try_iter()
        .all(|ev| !matches!(ev, Event::PeerConnected { .. })));
    node.shutdown();
}

#[test]
fn a_persistent_peer_is_redialed_until_it_comes_back() {
    let limits = PeerLimits {
        redial_base: Duration::from_millis(50),
        redial_max: Duration::from_millis(400),
        ..PeerLimits::default()
    };
    let dir = std::env::temp_dir().join(format!("meshwire-persist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("b.pk8");
    let start_b = |addr| {
        meshwire::NodeBuilder::new(NET)
            .listen(addr)
            .channel(ChannelConfig::new(1))
            .key_file(&key_path)
            .unwrap()
            .start()
            .unwrap()
    };
    // Learn b's address and id, then take it down.
    let b = start_b(addr(281));
    let (b_addr, b_id) = (b.listen_addrs()[0], b.peer_id());
    b.shutdown();

    let a = builder(280, &[ChannelConfig::new(1)])
        .limits(limits)
        .persistent_peer(b_addr, Some(b_id))
        .start()
        .unwrap();
    let ea = a.events();
    let dial_failed = |rx: &crossbeam_channel::Receiver<Event>| {
        wait_for(rx, Duration::from_secs(5), |ev| match ev {
            Event::DialFailed { reason, .. } => Some(reason),
            _ => None,
        })
    };
    // Refused dials while b is down, again and again.
    dial_failed(&ea);
    dial_failed(&ea);
    // Another node at b's address is not b.
    let impostor = meshwire::NodeBuilder::new(NET)
        .listen(b_addr)
        .channel(ChannelConfig::new(1))
        .start()
        .unwrap();
    let reason = wait_for(&ea, Duration::from_secs(5), |ev| match ev {
        Event::DialFailed {
            reason: r @ DisconnectReason::Handshake(_),
            ..
        } => Some(r),
        _ => None,
    });
    assert!(reason.to_string().contains("expected peer"), "{reason}");
    impostor.shutdown();
    // b comes back: connected; b restarts: connected again.
    for _ in 0..2 {
        let b = start_b(b_addr);
        connected(&ea, b_id);
        b.shutdown();
        wait_for(&ea, Duration::from_secs(5), |ev| {
            matches!(ev, Event::PeerDisconnected { peer, .. } if peer == b_id).then_some(())
        });
    }
    a.shutdown();
}

#[test]
fn resolving_a_duplicate_connection_loses_no_queued_message() {
    const BIG: u32 = 2;
    let chans = [ChannelConfig::new(BIG).max_message_size(1 << 20)];
    // The second connection (dialed by `b`) must win: `b` has the lower id.
    let (mut ka, mut kb) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    if kb.peer_id() > ka.peer_id() {
        std::mem::swap(&mut ka, &mut kb);
    }
    let a = builder(280, &chans).keypair(ka).start().unwrap();
    let b = builder(281, &chans).keypair(kb).start().unwrap();
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    // Both ends: `b` may announce `a` before `a` has finished its side of the handshake.
    connected(&eb, a.peer_id());
    connected(&ea, b.peer_id());
    // A burst is on its way over the first connection when the second one arrives.
    for i in 0..10u8 {
        a.send(b.peer_id(), BIG, vec![i; 1 << 20]).unwrap();
    }
    // Without naming `a`, so the dial is not skipped as already connected.
    b.dial(a.listen_addrs()[0], None).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 10 && std::time::Instant::now() < deadline {
        if let Ok(Event::Message { data, .. }) = eb.recv_timeout(Duration::from_millis(200)) {
            assert!(
                data.iter().all(|x| *x == data[0]),
                "a message arrived whole"
            );
            got.push(data[0]);
        }
    }
    got.sort();
    assert_eq!(
        got,
        (0..10).collect::<Vec<u8>>(),
        "each message exactly once"
    );
    assert!(eventually(Duration::from_secs(5), || a.peers().len() == 1
        && b.peers().len() == 1));
    let m = a.metrics().unwrap();
    assert_eq!(
        m.disconnects.get("duplicate"),
        None,
        "the peer stayed announced"
    );
    assert!(
        m.handshakes_ok >= 2,
        "a second connection was made and resolved"
    );
    assert_eq!(m.drops.get("peer_gone"), None);
    assert_eq!(m.drops.get("migration"), None);
    a.shutdown();
    b.shutdown();
}

#[test]
fn send_timeout_waits_for_room_and_says_timed_out_not_closed() {
    const CH: u32 = 3;
    let chans = [ChannelConfig::new(CH)
        .max_message_size(16 * 1024)
        .recv_window(32 * 1024)
        .send_queue_capacity(2)];
    let a = builder(290, &chans).start().unwrap();
    let mut bb = builder(291, &chans);
    bb.config_mut().event_queue = 4;
    let b = bb.start().unwrap();
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&eb, a.peer_id());
    connected(&ea, b.peer_id());
    let opts = meshwire::mux::SendOptions::default;
    // `b` reads nothing: its window and event queue fill, then `a`'s queue.
    let msg = || vec![5u8; 16 * 1024];
    // Until a wait of 300 ms brings no room: then the queue is full for good.
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = Instant::now();
        match a.send_timeout(b.peer_id(), CH, msg(), opts(), Duration::from_millis(300)) {
            Ok(()) => accepted += 1,
            Err(SendError::TimedOut) => {
                assert!(t.elapsed() >= Duration::from_millis(300));
                break;
            }
            Err(e) => panic!("send_timeout: {e}"),
        }
        assert!(Instant::now() < deadline, "b's window never filled");
    }
    assert_eq!(a.send(b.peer_id(), CH, msg()), Err(SendError::Full));
    assert_eq!(
        a.send_timeout(
            Keypair::generate().unwrap().peer_id(),
            CH,
            msg(),
            opts(),
            Duration::from_secs(5)
        ),
        Err(SendError::UnknownPeer),
        "refused at once, not after the timeout"
    );
    // `b` starts reading: the waiting send gets its room.
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < accepted + 1 {
            match eb.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Message { .. }) => got += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(50));
    a.send_timeout(b.peer_id(), CH, msg(), opts(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(reader.join().unwrap(), accepted + 1, "nothing lost");
    // A waiter whose peer leaves hears so, not a timeout.
    // (Filled for good once a wait of 300 ms brings no room.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.send_timeout(b.peer_id(), CH, msg(), opts(), Duration::from_millis(300)) == Ok(()) {
        assert!(Instant::now() < deadline, "b's window never filled");
    }
    let peer = b.peer_id();
    let closer = {
        let a = a.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            a.ban(peer, Duration::from_secs(60)).unwrap();
        })
    };
    let t = Instant::now();
    assert_eq!(
        a.send_timeout(peer, CH, msg(), opts(), Duration::from_secs(20)),
        Err(SendError::UnknownPeer)
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    closer.join().unwrap();
    a.shutdown();
    b.shutdown();
}
