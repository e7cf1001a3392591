//! Mux unit tests: two muxes joined by a frame pump, on virtual time.

use super::*;
use crate::mux::Tag;

pub(super) const FRAME: usize = 64 * 1024;
pub(super) const BULK: ChannelId = 1;
pub(super) const URGENT: ChannelId = 2;

pub(super) fn config() -> MuxConfig {
    MuxConfig {
        channels: vec![
            ChannelConfig::new(BULK)
                .priority(1)
                .max_message_size(4 << 20)
                .send_queue_bytes(64 << 20),
            ChannelConfig::new(URGENT)
                .priority(10)
                .max_message_size(64 * 1024),
        ],
        ..MuxConfig::default()
    }
}

pub(super) fn msg(len: usize, fill: u8) -> Arc<Vec<u8>> {
    Arc::new(vec![fill; len])
}

/// Moves one frame from `a` to `b`; returns its size.
pub(super) fn pump(a: &mut Mux, b: &mut Mux, now: Instant) -> usize {
    let mut frame = Vec::new();
    let n = a.fill_frame(&mut frame, FRAME, now);
    if n > 0 {
        b.handle_frame(&frame, now).unwrap();
    }
    n
}

/// Pumps both ways until idle; returns the messages `b` received.
pub(super) fn exchange(a: &mut Mux, b: &mut Mux, now: Instant) -> Vec<(ChannelId, Vec<u8>)> {
    let mut got = Vec::new();
    while pump(a, b, now) + pump(b, a, now) > 0 {
        while let Some(ev) = b.poll_event() {
            if let MuxEvent::Message { channel, data } = ev {
                b.release(channel, data.len());
                got.push((channel, data));
            }
        }
    }
    got
}

pub(super) fn pair(cfg: &MuxConfig) -> (Mux, Mux, Instant) {
    let now = Instant::now();
    (Mux::new(cfg, now, 1), Mux::new(cfg, now, 2), now)
}

#[test]
fn messages_of_every_size_arrive_whole_and_in_order_per_channel() {
    let (mut a, mut b, now) = pair(&config());
    let sizes = [0usize, 1, 1000, 16 * 1024, 16 * 1024 + 1, 1 << 20];
    for (i, &len) in sizes.iter().enumerate() {
        a.send(BULK, msg(len, i as u8), SendOptions::default())
            .unwrap();
    }
    a.send(URGENT, msg(10, 0xee), SendOptions::default())
        .unwrap();
    let got = exchange(&mut a, &mut b, now);
    let bulk: Vec<_> = got
        .iter()
        .filter(|(c, _)| *c == BULK)
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(bulk.len(), sizes.len());
    for (i, (&len, d)) in sizes.iter().zip(&bulk).enumerate() {
        assert_eq!(d, &vec![i as u8; len]);
    }
    assert!(got.contains(&(URGENT, vec![0xee; 10])));
}

#[test]
fn urgent_message_overtakes_a_bulk_transfer() {
    let (mut a, mut b, now) = pair(&config());
    for i in 0..16 {
        a.send(BULK, msg(4 << 20, i), SendOptions::default())
            .unwrap();
    }
    // Let the bulk transfer get going, then queue one urgent message.
    for _ in 0..10 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
    }
    a.send(URGENT, msg(256, 0xaa), SendOptions::default())
        .unwrap();
    let mut order = Vec::new();
    loop {
        let moved = pump(&mut a, &mut b, now) + pump(&mut b, &mut a, now);
        while let Some(MuxEvent::Message { channel, data }) = b.poll_event() {
            b.release(channel, data.len());
            order.push(channel);
        }
        if moved == 0 {
            break;
        }
    }
    assert_eq!(order.len(), 17);
    let urgent_at = order.iter().position(|&c| c == URGENT).unwrap();
    assert!(
        urgent_at < 2,
        "urgent delivered after {urgent_at} bulk messages"
    );
}

#[test]
fn fragments_shrink_while_a_higher_priority_channel_waits() {
    let (mut a, mut b, now) = pair(&config());
    pump(&mut b, &mut a, now); // initial credit
    a.send(BULK, msg(1 << 20, 1), SendOptions::default())
        .unwrap();
    // Bulk alone: full 16 KiB fragments.
    let mut frame = Vec::new();
    a.fill_frame(&mut frame, FRAME, now);
    let big = packet::packets(&frame)
        .filter_map(|p| match p.unwrap() {
            PacketRef::Msg { data, .. } => Some(data.len()),
            _ => None,
        })
        .max()
        .unwrap();
    assert_eq!(big, 16 * 1024);
    // Many urgent messages waiting: bulk fragments drop to the small size.
    for _ in 0..100 {
        a.send(URGENT, msg(64, 2), SendOptions::default()).unwrap();
    }
    a.send_channel_recent_for_test(URGENT, 1e12);
    frame.clear();
    a.fill_frame(&mut frame, FRAME, now);
    let sizes: Vec<(u32, usize)> = packet::packets(&frame)
        .filter_map(|p| match p.unwrap() {
            PacketRef::Msg { channel, data, .. } => Some((channel, data.len())),
            _ => None,
        })
        .collect();
    assert!(sizes
        .iter()
        .any(|&(c, n)| c == BULK && n == DEFAULT_SMALL_FRAGMENT_FOR_TEST));
    assert!(sizes
        .iter()
        .all(|&(c, n)| c != BULK || n <= DEFAULT_SMALL_FRAGMENT_FOR_TEST));
}

const DEFAULT_SMALL_FRAGMENT_FOR_TEST: usize = config::DEFAULT_SMALL_FRAGMENT;

impl Mux {
    fn send_channel_recent_for_test(&mut self, channel: ChannelId, recent: f64) {
        let i = self.index(channel).unwrap();
        self.send[i].recent = recent;
    }
}

#[test]
fn small_messages_are_coalesced_into_one_frame() {
    let (mut a, mut b, now) = pair(&config());
    // Deliver the initial credit grants first.
    pump(&mut b, &mut a, now);
    pump(&mut a, &mut b, now);
    for i in 0..50 {
        a.send(URGENT, msg(100, i), SendOptions::default()).unwrap();
    }
    assert!(pump(&mut a, &mut b, now) > 50 * 100);
    let mut n = 0;
    while let Some(MuxEvent::Message { .. }) = b.poll_event() {
        n += 1;
    }
    assert_eq!(n, 50);
}

#[test]
fn a_slow_consumer_stalls_only_its_channel_and_loses_nothing() {
    let mut cfg = config();
    cfg.channels[0] = ChannelConfig::new(BULK)
        .max_message_size(64 * 1024)
        .recv_window(256 * 1024);
    let (mut a, mut b, now) = pair(&cfg);
    let total = 64;
    for i in 0..total {
        a.send(BULK, msg(64 * 1024, i as u8), SendOptions::default())
            .unwrap();
    }
    // The application never takes BULK messages: they pile up to the window only.
    let mut held = Vec::new();
    for _ in 0..200 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
        while let Some(MuxEvent::Message { channel, data }) = b.poll_event() {
            assert_eq!(channel, BULK);
            held.push(data);
        }
    }
    assert_eq!(held.len(), 4, "more than the window arrived");
    // URGENT still flows, and so does keepalive.
    a.send(URGENT, msg(300, 9), SendOptions::default()).unwrap();
    pump(&mut a, &mut b, now);
    assert!(matches!(
        b.poll_event(),
        Some(MuxEvent::Message {
            channel: URGENT,
            ..
        })
    ));
    let later = now + Duration::from_secs(11);
    a.handle_timeout(later).unwrap();
    pump(&mut a, &mut b, later);
    pump(&mut b, &mut a, later);
    a.handle_timeout(later + Duration::from_secs(14)).unwrap();
    // The application resumes: every message arrives, in order.
    for d in &held {
        b.release(BULK, d.len());
    }
    let rest = exchange(&mut a, &mut b, later);
    let all: Vec<_> = held
        .into_iter()
        .chain(rest.into_iter().filter(|(c, _)| *c == BULK).map(|(_, d)| d))
        .collect();
    assert_eq!(all.len(), total);
    for (i, d) in all.iter().enumerate() {
        assert_eq!(d[0], i as u8);
    }
}

#[test]
fn a_peer_exceeding_its_credit_is_a_protocol_error() {
    let mut cfg = config();
    cfg.channels[0] = ChannelConfig::new(BULK)
        .max_message_size(1024)
        .recv_window(1024);
    let (_, mut b, now) = pair(&cfg);
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, BULK, true, &[0u8; 1000], 0, Tag::Plain);
    packet::put_msg(&mut frame, BULK, true, &[0u8; 100], 0, Tag::Plain);
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::CreditExceeded { channel: BULK })
    );
}

#[test]
fn bad_packets_are_typed_protocol_errors() {
    let (_, mut b, now) = pair(&config());
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, 99, true, b"x", 0, Tag::Plain);
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::UnknownChannel(99))
    );

    let (_, mut b, now) = pair(&config());
    let mut frame = Vec::new();
    for _ in 0..5 {
        packet::put_msg(&mut frame, URGENT, false, &[0u8; 16 * 1024], 0, Tag::Plain);
    }
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::MessageTooLarge {
            channel: URGENT,
            max: 64 * 1024
        })
    );

    let (_, mut b, now) = pair(&config());
    assert!(matches!(
        b.handle_frame(&[5, 0x1a, 9, 1], now),
        Err(MuxError::Malformed(_))
    ));
}

#[test]
fn sends_are_refused_at_once_when_full_too_large_or_unknown() {
    let mut cfg = config();
    cfg.channels[1] = ChannelConfig::new(URGENT)
        .send_queue_capacity(2)
        .max_message_size(100);
    let (mut a, _, _) = pair(&cfg);
    assert_eq!(
        a.send(URGENT, msg(101, 0), SendOptions::default()),
        Err(SendError::TooLarge {
            size: 101,
            max: 100
        })
    );
    a.send(URGENT, msg(1, 0), SendOptions::default()).unwrap();
    a.send(URGENT, msg(1, 0), SendOptions::default()).unwrap();
    assert_eq!(
        a.send(URGENT, msg(1, 0), SendOptions::default()),
        Err(SendError::Full)
    );
    assert_eq!(
        a.send(7, msg(1, 0), SendOptions::default()),
        Err(SendError::UnknownChannel(7))
    );
}

#[test]
fn a_newer_message_replaces_a_waiting_one_with_the_same_key() {
    let (mut a, mut b, now) = pair(&config());
    let vote = |round| SendOptions {
        replace_key: Some(round),
        ..SendOptions::default()
    };
    a.send(URGENT, msg(10, 1), vote(7)).unwrap();
    a.send(URGENT, msg(10, 2), vote(8)).unwrap();
    a.send(URGENT, msg(10, 3), vote(7)).unwrap();
    assert_eq!(a.queued(URGENT), 2);
    let mut dequeued = 0;
    a.take_dequeued(|_, n| dequeued += n);
    assert_eq!(dequeued, 1);
    let got: Vec<u8> = exchange(&mut a, &mut b, now)
        .iter()
        .map(|(_, d)| d[0])
        .collect();
    assert_eq!(got, vec![3, 2]);
}

#[test]
fn withdrawn_messages_leave_the_queue_unless_already_started() {
    let (mut a, mut b, now) = pair(&config());
    let chunk = |key| SendOptions {
        withdraw_key: Some(key),
        ..SendOptions::default()
    };
    // The first is large enough that one frame starts it but does not finish it.
    a.send(BULK, msg(200_000, 1), chunk(7)).unwrap();
    a.send(BULK, msg(1000, 2), chunk(7)).unwrap();
    a.send(BULK, msg(1000, 3), chunk(8)).unwrap();
    a.send(BULK, msg(1000, 4), chunk(7)).unwrap();
    // Credit from b first, then one frame of a's.
    pump(&mut b, &mut a, now);
    assert!(pump(&mut a, &mut b, now) > 0);
    assert!(a.counters().any(|(c, k)| c == BULK && k.sent_bytes > 0));
    a.take_dequeued(|_, _| {});
    assert_eq!(a.withdraw(BULK, 7), 2, "the started one goes on");
    assert_eq!(a.withdraw(BULK, 7), 0);
    assert_eq!(a.withdraw(URGENT, 8), 0, "keys are per channel");
    let mut dequeued = 0;
    a.take_dequeued(|_, n| dequeued += n);
    assert_eq!(dequeued, 2);
    let c = a.counters().find(|(c, _)| *c == BULK).unwrap().1;
    assert_eq!((c.withdrawn, c.withdrawn_bytes), (2, 2000));
    assert_eq!(a.queued_bytes(), 200_000 - c.sent_bytes as usize + 1000);
    let got: Vec<(u8, usize)> = exchange(&mut a, &mut b, now)
        .iter()
        .map(|(_, d)| (d[0], d.len()))
        .collect();
    assert_eq!(got, vec![(1, 200_000), (3, 1000)]);
}

#[test]
fn stale_messages_are_dropped_at_their_deadline_unless_already_started() {
    let (mut a, mut b, now) = pair(&config());
    pump(&mut b, &mut a, now);
    let soon = SendOptions {
        deadline: Some(now + Duration::from_millis(5)),
        ..SendOptions::default()
    };
    // A large bulk message that starts before its deadline is finished anyway.
    a.send(BULK, msg(200 * 1024, 1), soon).unwrap();
    pump(&mut a, &mut b, now);
    a.send(URGENT, msg(10, 2), soon).unwrap();
    let later = now + Duration::from_millis(10);
    let got = exchange(&mut a, &mut b, later);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, BULK);
    assert_eq!(
        a.counters().find(|(c, _)| *c == URGENT).unwrap().1.expired,
        1
    );
}

#[test]
fn keepalive_pings_and_times_out_a_silent_peer() {
    let (mut a, mut b, now) = pair(&config());
    assert_eq!(a.poll_timeout(), Some(now + config::DEFAULT_PING_INTERVAL));
    let t1 = now + config::DEFAULT_PING_INTERVAL;
    a.handle_timeout(t1).unwrap();
    // Answered: no timeout; the round trip is timed from the ping's frame.
    assert_eq!(a.rtt(), None);
    pump(&mut a, &mut b, t1);
    pump(&mut b, &mut a, t1 + Duration::from_millis(30));
    assert_eq!(a.rtt(), Some(Duration::from_millis(30)));
    a.handle_timeout(t1 + Duration::from_secs(5)).unwrap();
    assert_eq!(a.poll_timeout(), Some(t1 + config::DEFAULT_PING_INTERVAL));
    // Silent peer: the next ping goes unanswered.
    let t2 = t1 + config::DEFAULT_PING_INTERVAL;
    a.handle_timeout(t2).unwrap();
    let mut frame = Vec::new();
    a.fill_frame(&mut frame, FRAME, t2);
    assert_eq!(a.poll_timeout(), Some(t2 + config::DEFAULT_PONG_TIMEOUT));
    assert_eq!(
        a.handle_timeout(t2 + config::DEFAULT_PONG_TIMEOUT),
        Err(MuxError::PingTimeout)
    );
}

#[test]
fn the_send_rate_limit_paces_data() {
    let mut cfg = config();
    cfg.send_rate = Some(RateLimit {
        bytes_per_sec: 100_000,
        burst: 10_000,
    });
    let (mut a, mut b, now) = pair(&cfg);
    pump(&mut b, &mut a, now);
    a.send(BULK, msg(1 << 20, 1), SendOptions::default())
        .unwrap();
    let mut sent = 0;
    let mut t = now;
    // One simulated second, stepping 10 ms.
    for _ in 0..100 {
        while a.wants_to_send(t) {
            let n = pump(&mut a, &mut b, t);
            if n == 0 {
                break;
            }
            sent += n;
        }
        t += Duration::from_millis(10);
    }
    assert!(
        sent > 90_000 && sent < 140_000,
        "sent {sent} bytes in 1 s at 100 kB/s"
    );
    assert!(a.poll_timeout().unwrap() <= t + Duration::from_secs(1));
}

#[test]
fn graceful_close_flushes_queued_messages_then_closes() {
    let (mut a, mut b, now) = pair(&config());
    for i in 0..5 {
        a.send(BULK, msg(50_000, i), SendOptions::default())
            .unwrap();
    }
    a.close(1, true);
    assert_eq!(
        a.send(BULK, msg(1, 0), SendOptions::default()),
        Err(SendError::Closed)
    );
    let mut msgs = 0;
    let mut closed = false;
    while pump(&mut a, &mut b, now) + pump(&mut b, &mut a, now) > 0 {
        while let Some(ev) = b.poll_event() {
            match ev {
                MuxEvent::Message { channel, data } => {
                    assert!(!closed, "message after close");
                    b.release(channel, data.len());
                    msgs += 1;
                }
                MuxEvent::RemoteClose(r) => {
                    assert_eq!(r, 1);
                    closed = true;
                }
                MuxEvent::FirstFragment { .. } | MuxEvent::Tagged { .. } => {}
            }
        }
    }
    assert_eq!(msgs, 5);
    assert!(closed && a.close_sent() && b.remote_closed());
}
