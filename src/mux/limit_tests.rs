//! Mux unit tests of the limits a hostile peer meets: oversized and restricted
//! messages, reassembly and queue budgets, stalls, channel sets and tags.

use super::tests::{config, exchange, msg, pair, pump, BULK, FRAME, URGENT};
use super::*;
use crate::mux::config::DEFAULT_STALL_TIMEOUT;
use crate::mux::{RefuseReason, Tag};

#[test]
fn an_announced_oversized_message_is_refused_at_its_first_fragment() {
    let (_, mut b, now) = pair(&config());
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, URGENT, false, &[0u8; 10], 1 << 30, Tag::Plain);
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::MessageTooLarge {
            channel: URGENT,
            max: 64 * 1024
        })
    );
}

fn first_fragments(m: &mut Mux) -> usize {
    let mut n = 0;
    while let Some(ev) = m.poll_event() {
        if matches!(ev, MuxEvent::FirstFragment { .. }) {
            n += 1;
        }
    }
    n
}

#[test]
fn only_a_fragment_that_starts_a_message_is_announced_as_first() {
    let mut cfg = config();
    cfg.channels[0].announce_first_fragment = true;
    let (_, mut b, now) = pair(&cfg);
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, BULK, false, &[1u8; 100], 1000, Tag::Plain);
    b.handle_frame(&frame, now).unwrap();
    assert_eq!(first_fragments(&mut b), 1);
    // A later fragment of the same message that claims a total_len again is not a
    // first fragment (it must not announce another message id).
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, BULK, false, &[2u8; 100], 1000, Tag::Plain);
    b.handle_frame(&frame, now).unwrap();
    assert_eq!(first_fragments(&mut b), 0);
    // Nor is a single-fragment message, or one without total_len.
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, BULK, true, &[3u8; 800], 0, Tag::Plain);
    packet::put_msg(&mut frame, BULK, true, &[4u8; 10], 0, Tag::Plain);
    packet::put_msg(&mut frame, BULK, false, &[5u8; 10], 0, Tag::Plain);
    b.handle_frame(&frame, now).unwrap();
    assert_eq!(first_fragments(&mut b), 0);
}

#[test]
fn a_restricted_connection_refuses_other_channels_before_reassembly() {
    let (_, mut b, now) = pair(&config());
    b.restrict_to(&[URGENT]);
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, BULK, false, &[0u8; 10], 4 << 20, Tag::Plain);
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::ChannelNotAllowed(BULK))
    );
    assert_eq!(b.reassembly_bytes(), 0, "nothing reserved for it");
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, URGENT, true, &[0u8; 10], 0, Tag::Plain);
    b.handle_frame(&frame, now).unwrap();
}

#[test]
fn reassembly_beyond_the_connection_budget_is_refused_before_allocating() {
    let (_, mut b, now) = pair(&config());
    b.set_reassembly_limit(1 << 20);
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, BULK, false, &[0u8; 10], 2 << 20, Tag::Plain);
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::ReassemblyBudget { channel: BULK })
    );
    assert_eq!(b.reassembly_bytes(), 0);
    // Without total_len, growth is checked fragment by fragment.
    let (_, mut b, now) = pair(&config());
    b.set_reassembly_limit(100_000);
    let chunk = vec![7u8; 30_000];
    let mut result = Ok(());
    for _ in 0..4 {
        let mut frame = Vec::new();
        packet::put_msg(&mut frame, BULK, false, &chunk, 0, Tag::Plain);
        result = b.handle_frame(&frame, now);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(MuxError::ReassemblyBudget { channel: BULK }));
    assert!(b.reassembly_bytes() <= 100_000);
}

#[test]
fn send_queues_are_bounded_in_bytes_as_well_as_messages() {
    let mut cfg = config();
    cfg.channels[0] = cfg.channels[0].clone().send_queue_bytes(1 << 20);
    let (mut a, _, _) = pair(&cfg);
    // One message larger than the byte cap still fits an empty queue.
    a.send(BULK, msg(2 << 20, 1), SendOptions::default())
        .unwrap();
    assert_eq!(
        a.send(BULK, msg(10, 1), SendOptions::default()),
        Err(SendError::Full)
    );
    let (mut a, _, _) = pair(&cfg);
    for _ in 0..4 {
        a.send(BULK, msg(256 << 10, 1), SendOptions::default())
            .unwrap();
    }
    assert_eq!(
        a.send(BULK, msg(1, 1), SendOptions::default()),
        Err(SendError::Full)
    );
    assert_eq!(a.queued_bytes(), 1 << 20);
}

#[test]
fn a_peer_that_takes_nothing_from_a_full_queue_is_stalled_after_the_timeout() {
    let mut cfg = config();
    cfg.channels[1] = cfg.channels[1].clone().send_queue_capacity(2);
    let (mut a, mut b, now) = pair(&cfg);
    // Credit arrives, then the peer stops reading: nothing more leaves `a`.
    pump(&mut b, &mut a, now);
    for _ in 0..2 {
        a.send(URGENT, msg(10, 1), SendOptions::default()).unwrap();
    }
    assert_eq!(
        a.send(URGENT, msg(10, 1), SendOptions::default()),
        Err(SendError::Full)
    );
    let t = now + Duration::from_secs(1);
    a.handle_timeout(t).unwrap();
    assert!(!a.is_stalled(t + DEFAULT_STALL_TIMEOUT - Duration::from_millis(1)));
    assert!(a.is_stalled(t + DEFAULT_STALL_TIMEOUT));
    assert!(a.poll_timeout().unwrap() <= t + DEFAULT_STALL_TIMEOUT);
    // Progress clears it.
    let mut frame = Vec::new();
    a.fill_frame(&mut frame, FRAME, t);
    assert!(!a.is_stalled(t + DEFAULT_STALL_TIMEOUT));
}

#[test]
fn peers_with_different_channels_share_only_the_common_ones() {
    // `a` serves BULK and URGENT; `b` serves BULK only.
    let cfg_b = MuxConfig {
        channels: vec![ChannelConfig::new(BULK).max_message_size(4 << 20)],
        ..MuxConfig::default()
    };
    let now = Instant::now();
    let (mut a, mut b) = (Mux::new(&config(), now, 1), Mux::new(&cfg_b, now, 2));
    a.peer_serves(&[BULK]);
    b.peer_serves(&[BULK, URGENT]);
    // No grant for URGENT reaches `b` (that would be a violation there), and a send
    // on it is refused at once rather than waiting for credit that never comes.
    assert_eq!(
        a.send(URGENT, msg(10, 1), SendOptions::default()),
        Err(SendError::UnknownChannel(URGENT))
    );
    a.send(BULK, msg(10, 2), SendOptions::default()).unwrap();
    assert_eq!(exchange(&mut a, &mut b, now), vec![(BULK, vec![2; 10])]);
    b.send(BULK, msg(10, 3), SendOptions::default()).unwrap();
    assert_eq!(exchange(&mut b, &mut a, now), vec![(BULK, vec![3; 10])]);
    // A peer that sends on a channel it did not announce was granted nothing there.
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, URGENT, true, &[0; 4], 0, Tag::Plain);
    assert_eq!(
        a.handle_frame(&frame, now),
        Err(MuxError::CreditExceeded { channel: URGENT })
    );
}

#[test]
fn a_tag_rides_on_the_first_fragment_and_comes_out_with_the_whole_message() {
    let (mut a, mut b, now) = pair(&config());
    // Larger than a fragment, so the tag must survive reassembly.
    a.send_tagged(
        BULK,
        msg(100_000, 7),
        SendOptions::default(),
        Tag::Request(42),
    )
    .unwrap();
    a.send(BULK, msg(10, 1), SendOptions::default()).unwrap();
    a.send_tagged(
        URGENT,
        msg(0, 0),
        SendOptions::default(),
        Tag::Refusal(9, RefuseReason::Busy),
    )
    .unwrap();
    let mut got = Vec::new();
    while pump(&mut a, &mut b, now) + pump(&mut b, &mut a, now) > 0 {
        while let Some(ev) = b.poll_event() {
            match ev {
                MuxEvent::Tagged { channel, tag, data } => {
                    b.release(channel, data.len());
                    got.push((channel, tag, data.len()));
                }
                MuxEvent::Message { channel, data } => {
                    b.release(channel, data.len());
                    got.push((channel, Tag::Plain, data.len()));
                }
                _ => {}
            }
        }
    }
    got.sort_by_key(|g| (g.0, g.2));
    assert_eq!(
        got,
        vec![
            (BULK, Tag::Plain, 10),
            (BULK, Tag::Request(42), 100_000),
            (URGENT, Tag::Refusal(9, RefuseReason::Busy), 0),
        ]
    );
}

#[test]
fn a_request_on_a_channel_that_takes_none_is_a_violation() {
    let mut cfg = config();
    cfg.channels[1] = cfg.channels[1].clone().requests(false);
    let (_, mut b, now) = pair(&cfg);
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, URGENT, true, b"hi", 0, Tag::Response(1));
    assert_eq!(
        b.handle_frame(&frame, now),
        Err(MuxError::RequestsNotAllowed(URGENT))
    );
    // Plain messages still flow there.
    let mut frame = Vec::new();
    packet::put_msg(&mut frame, URGENT, true, b"hi", 0, Tag::Plain);
    b.handle_frame(&frame, now).unwrap();
}
