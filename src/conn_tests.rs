//! Connection tests: two connections joined in memory, on virtual time.

use super::*;
use crate::mux::ChannelConfig;
use ring::rand::SystemRandom;

const CH: ChannelId = 7;

fn mux_config() -> Arc<MuxConfig> {
    Arc::new(MuxConfig {
        channels: vec![ChannelConfig::new(CH).max_message_size(1 << 20)],
        ..MuxConfig::default()
    })
}

/// Moves what `from` has to write into `to`; returns the bytes moved.
fn carry(from: &mut Connection, to: &mut Connection, now: Instant, rng: &SystemRandom) -> usize {
    let mut moved = 0;
    loop {
        let out = from.poll_transmit(now).to_vec();
        if out.is_empty() {
            return moved;
        }
        from.advance_transmit(out.len());
        moved += out.len();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let buf = to.read_buf();
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            to.handle_read(n, now, rng);
            rest = &rest[n..];
        }
    }
}

/// Handshake settings announcing the one channel both ends serve.
fn handshake_config() -> HandshakeConfig {
    let mut hs = HandshakeConfig::new("conn-test");
    hs.node_info.channels = vec![CH];
    hs
}

fn established_pair() -> (Connection, Connection, Instant, SystemRandom) {
    let hs = Arc::new(handshake_config());
    established_with(hs.clone(), hs)
}

/// `a` dials `b`, each with its own handshake settings.
fn established_with(
    a_hs: Arc<HandshakeConfig>,
    b_hs: Arc<HandshakeConfig>,
) -> (Connection, Connection, Instant, SystemRandom) {
    let rng = SystemRandom::new();
    let now = Instant::now();
    let a_key = Arc::new(Keypair::generate().unwrap());
    let b_key = Arc::new(Keypair::generate().unwrap());
    let mut a = Connection::outbound(a_hs, a_key, None, mux_config(), now, &rng, 1).unwrap();
    let mut b = Connection::inbound(b_hs, b_key, mux_config(), now, 2);
    while carry(&mut a, &mut b, now, &rng) + carry(&mut b, &mut a, now, &rng) > 0 {}
    assert!(a.is_established() && b.is_established());
    while a.poll_event().is_some() {}
    while b.poll_event().is_some() {}
    (a, b, now, rng)
}

#[test]
fn a_finished_connection_whose_peer_reads_nothing_is_dropped_within_linger() {
    let (mut a, mut b, now, rng) = established_pair();
    // b grants credit, then never reads again; a queues more than it can write.
    carry(&mut b, &mut a, now, &rng);
    for _ in 0..4 {
        a.send(CH, Arc::new(vec![1; 500_000]), SendOptions::default())
            .unwrap();
    }
    assert!(!a.poll_transmit(now).is_empty());
    // The peer times out (no pong: it reads nothing) ...
    a.handle_timeout(now + Duration::from_secs(10));
    let late = now + Duration::from_secs(60);
    a.handle_timeout(late);
    assert!(a.disconnect_reason().is_some(), "ping timeout ends it");
    assert!(!a.is_finished(), "output still waits for the socket");
    // ... and however long the socket stays blocked, the rest is given up by the
    // hard deadline, so the driver drops it and frees the slot.
    let at = a.poll_timeout().expect("a deadline while output waits");
    assert!(at <= late + LINGER);
    a.handle_timeout(at);
    assert!(a.is_finished());
}

#[test]
fn a_peer_close_during_our_graceful_close_still_gets_everything_queued() {
    let (mut a, mut b, now, rng) = established_pair();
    carry(&mut b, &mut a, now, &rng);
    for i in 0..3u8 {
        a.send(CH, Arc::new(vec![i; 300_000]), SendOptions::default())
            .unwrap();
    }
    a.close(LocalClose::Requested, true, now);
    // The peer closes at once too, before a's queue is through.
    b.close(LocalClose::Requested, true, now);
    let mut got = 0;
    for _ in 0..200 {
        let moved = carry(&mut a, &mut b, now, &rng) + carry(&mut b, &mut a, now, &rng);
        while let Some(ev) = b.poll_event() {
            if let ConnEvent::Message { channel, data } = ev {
                b.release(channel, data.len());
                got += 1;
            }
        }
        if moved == 0 {
            break;
        }
    }
    assert_eq!(got, 3, "every queued message arrived before the close");
    assert!(a.is_finished() && b.is_finished());
}

#[test]
fn what_the_peer_announces_it_accepts_bounds_our_frames_and_messages() {
    let a_hs = Arc::new(handshake_config());
    let mut b_hs = handshake_config();
    b_hs.max_frame_plaintext = 16 * 1024;
    b_hs.node_info.max_frame_plaintext = Some(16 * 1024);
    b_hs.node_info.channels = vec![CH];
    b_hs.node_info.channel_max_message = vec![100_000];
    let (mut a, mut b, now, rng) = established_with(a_hs, Arc::new(b_hs));
    carry(&mut b, &mut a, now, &rng);
    // Larger than b accepts on the channel: refused at send, the connection lives.
    assert!(matches!(
        a.send(CH, Arc::new(vec![0; 100_001]), SendOptions::default()),
        Err(SendError::TooLarge { max: 100_000, .. })
    ));
    // Within it: sealed in frames b's 16 KiB limit opens.
    a.send(CH, Arc::new(vec![3; 100_000]), SendOptions::default())
        .unwrap();
    let mut got = None;
    for _ in 0..50 {
        carry(&mut a, &mut b, now, &rng);
        carry(&mut b, &mut a, now, &rng);
        while let Some(ev) = b.poll_event() {
            if let ConnEvent::Message { data, .. } = ev {
                got = Some(data.len());
            }
        }
    }
    assert_eq!(b.disconnect_reason(), None, "every frame opened");
    assert_eq!(got, Some(100_000));
}
