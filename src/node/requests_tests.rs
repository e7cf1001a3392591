use super::*;
use crate::identity::Keypair;

fn peer(seed: u8) -> PeerId {
    Keypair::from_seed([seed; 32]).peer_id()
}

fn book() -> RequestBook {
    RequestBook::new(RequestConfig {
        max_outbound_per_peer: 2,
        max_inbound_per_peer: 2,
        max_inbound_per_channel: 3,
        inbound_timeout: Duration::from_secs(10),
    })
}

#[test]
fn an_answer_counts_only_from_the_peer_and_channel_asked() {
    let (a, b) = (peer(1), peer(2));
    let now = Instant::now();
    let mut book = book();
    let w = book
        .start(
            a,
            5,
            now,
            now + Duration::from_secs(1),
            Answer::Reply(7),
            None,
        )
        .unwrap();
    assert_eq!(book.answered(b, 5, w), None, "another peer cannot answer");
    assert_eq!(book.answered(a, 6, w), None, "nor on another channel");
    assert_eq!(book.answered(a, 5, w), Some((Answer::Reply(7), now)));
    assert_eq!(book.answered(a, 5, w), None, "answered once");
    assert_eq!(book.in_flight(), (0, 0));
    assert!(!book.busy_with(a));
}

#[test]
fn outbound_per_peer_limit_and_timeouts() {
    let a = peer(1);
    let now = Instant::now();
    let mut book = book();
    let d = now + Duration::from_secs(1);
    book.start(a, 5, now, d, Answer::Reply(1), None).unwrap();
    book.start(
        a,
        5,
        now,
        d + Duration::from_secs(1),
        Answer::Reply(2),
        None,
    )
    .unwrap();
    assert_eq!(
        book.start(a, 5, now, d, Answer::Reply(3), None),
        Err(RequestError::TooManyPending)
    );
    // Another peer has its own allowance.
    book.start(peer(2), 5, now, d, Answer::Reply(4), None)
        .unwrap();
    assert_eq!(book.poll_timeout(), Some(d));
    let (timed_out, forgotten) = book.expire(d);
    assert_eq!(forgotten, 0);
    assert_eq!(timed_out.len(), 2);
    assert!(timed_out.contains(&(a, Answer::Reply(1))));
    assert!(timed_out.contains(&(peer(2), Answer::Reply(4))));
    // A place came free.
    book.start(a, 5, now, d, Answer::Reply(5), None).unwrap();
}

#[test]
fn inbound_limits_refuse_busy_and_free_on_answer_or_timeout() {
    let (a, b) = (peer(1), peer(2));
    let now = Instant::now();
    let mut book = book();
    let first = book.admit(a, 5, 100, now).unwrap();
    book.admit(a, 5, 101, now).unwrap();
    assert_eq!(
        book.admit(a, 5, 102, now),
        Err(RefuseReason::Busy),
        "per peer"
    );
    book.admit(b, 5, 1, now).unwrap();
    assert_eq!(
        book.admit(peer(3), 5, 1, now),
        Err(RefuseReason::Busy),
        "per channel"
    );
    book.admit(peer(3), 6, 1, now).unwrap();
    let held = book.take_inbound(first).unwrap();
    assert_eq!((held.peer, held.channel, held.wire_id), (a, 5, 100));
    assert_eq!(book.take_inbound(first), None, "answered once");
    book.admit(a, 5, 103, now).unwrap();
    let (_, forgotten) = book.expire(now + Duration::from_secs(10));
    assert_eq!(forgotten, 4);
    assert_eq!(book.in_flight(), (0, 0));
    assert!(!book.busy_with(a));
}

#[test]
fn unsent_requests_wait_for_a_connection_and_fail_with_the_peer() {
    let a = peer(1);
    let now = Instant::now();
    let mut book = book();
    let d = now + Duration::from_secs(1);
    let data = Arc::new(vec![1, 2, 3]);
    let w = book
        .start(a, 5, now, d, Answer::Reply(1), Some(data.clone()))
        .unwrap();
    assert!(book.has_unsent(a));
    assert_eq!(
        book.answered(a, 5, w),
        None,
        "not sent yet: no answer counts"
    );
    assert_eq!(book.take_unsent(a), vec![(w, 5, data)]);
    assert!(!book.has_unsent(a));
    book.admit(a, 5, 9, now).unwrap();
    assert_eq!(book.peer_gone(a), vec![Answer::Reply(1)]);
    assert_eq!(book.in_flight(), (0, 0));
}
