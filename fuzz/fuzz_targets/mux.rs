//! Arbitrary packet sequences into an established connection: frames sealed by the
//! peer (identity AEAD under `cfg(fuzzing)`, so any plaintext reaches the mux), raw
//! socket bytes, timeouts, sends and credit releases, in any order.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshwire::conn::Connection;
use meshwire::identity::Keypair;
use meshwire::mux::{ChannelConfig, MuxConfig, SendOptions};
use meshwire::secure::{Established, Handshake, HandshakeConfig};
use ring::rand::SystemRandom;

struct Fixture {
    hs: Arc<HandshakeConfig>,
    mux: Arc<MuxConfig>,
    a: Arc<Keypair>,
    b: Arc<Keypair>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        hs: Arc::new(HandshakeConfig::new("fuzz")),
        mux: Arc::new(MuxConfig {
            channels: vec![
                ChannelConfig::new(1).max_message_size(4096).recv_window(8192),
                ChannelConfig::new(2).priority(5).max_message_size(100_000),
            ],
            ..MuxConfig::default()
        }),
        a: Arc::new(Keypair::generate().unwrap()),
        b: Arc::new(Keypair::generate().unwrap()),
    })
}

/// Our connection (responder) and the peer's raw session.
fn established(now: Instant) -> (Connection, Established) {
    let f = fixture();
    let rng = SystemRandom::new();
    let mut peer = Handshake::initiator(f.hs.clone(), f.a.clone(), None, now, &rng).unwrap();
    let mut conn = Connection::inbound(f.hs.clone(), f.b.clone(), f.mux.clone(), now, 7);
    let hello = peer.poll_transmit().unwrap();
    feed(&mut conn, &hello, now);
    let reply = conn.poll_transmit(now).to_vec();
    conn.advance_transmit(reply.len());
    peer.handle_input(&reply, &rng).unwrap();
    let finish = peer.poll_transmit().unwrap();
    feed(&mut conn, &finish, now);
    assert!(conn.is_established());
    (conn, peer.take_established().unwrap())
}

fn feed(conn: &mut Connection, mut bytes: &[u8], now: Instant) {
    let rng = SystemRandom::new();
    while !bytes.is_empty() && !conn.is_finished() {
        let buf = conn.read_buf();
        if buf.is_empty() {
            return;
        }
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        conn.handle_read(n, now, &rng);
        bytes = &bytes[n..];
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let (mut conn, mut peer) = established(t0);
    let mut now = t0;
    let mut rest = data;
    while let Some((&op, r)) = rest.split_first() {
        rest = r;
        let len = usize::from(rest.first().copied().unwrap_or(0)) * 8;
        let take = len.min(rest.len().saturating_sub(1));
        let chunk = rest.get(1..1 + take).unwrap_or(&[]);
        match op % 5 {
            0 => {
                // A frame the peer sealed, with arbitrary packets inside.
                let mut frame = Vec::new();
                peer.sealer.seal(&mut frame, chunk).unwrap();
                feed(&mut conn, &frame, now);
                rest = &rest[(1 + take).min(rest.len())..];
            }
            1 => {
                // Raw bytes on the socket.
                feed(&mut conn, chunk, now);
                rest = &rest[(1 + take).min(rest.len())..];
            }
            2 => {
                now += Duration::from_millis(u64::from(op) * 50);
                conn.handle_timeout(now);
            }
            3 => {
                let channel = 1 + u32::from(op & 1);
                let _ = conn.send(channel, Arc::new(vec![op; len * 16]), SendOptions::default());
            }
            _ => {
                // The application takes messages; the socket takes output.
                while let Some(ev) = conn.poll_event() {
                    if let meshwire::conn::ConnEvent::Message { channel, data } = ev {
                        conn.release(channel, data.len());
                    }
                }
                let out = conn.poll_transmit(now).len();
                conn.advance_transmit(out);
            }
        }
        if conn.is_finished() {
            break;
        }
    }
});
