//! Seal + open throughput of meshwire frames next to raw `ring` AEAD on the same
//! buffers, and handshake CPU time per side. One JSON object per line on stdout.
//!
//! `cargo bench --bench seal -- [--secs-per-case F] [--rounds N] [--handshakes N]`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire::identity::Keypair;
use meshwire::secure::frame::{loopback_pair, FrameSealer};
use meshwire::secure::handshake::{InitiatorAwaitResponse, ResponderAwaitHello};
use meshwire::secure::{CipherSuite, HandshakeConfig};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::SystemRandom;

struct Args {
    secs_per_case: f64,
    rounds: usize,
    handshakes: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        secs_per_case: 0.3,
        rounds: 5,
        handshakes: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--secs-per-case" => args.secs_per_case = value().parse().expect("seconds"),
            "--rounds" => args.rounds = value().parse().expect("count"),
            "--handshakes" => args.handshakes = value().parse().expect("count"),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn suite_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::Aes256Gcm => "aes-256-gcm",
        CipherSuite::ChaCha20Poly1305 => "chacha20-poly1305",
    }
}

/// Runs `step` (which processes `bytes` bytes) for about `secs`; returns MB/s.
fn rate(secs: f64, bytes: usize, mut step: impl FnMut()) -> f64 {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..16 {
            step();
        }
        n += 16;
    }
    (n as f64 * bytes as f64) / start.elapsed().as_secs_f64() / 1e6
}

/// Raw ring: the plaintext is written into the buffer, sealed in place, opened in place.
fn raw_ring(suite: CipherSuite, size: usize, secs: f64) -> f64 {
    let alg = match suite {
        CipherSuite::Aes256Gcm => &aead::AES_256_GCM,
        CipherSuite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, &[0x42; 32]).unwrap());
    let plaintext = vec![0xabu8; size];
    let mut buf = Vec::with_capacity(size + 16);
    let mut counter = 0u64;
    let nonce = |c: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&c.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    rate(secs, size, || {
        buf.clear();
        buf.extend_from_slice(&plaintext);
        let tag = key
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut buf)
            .unwrap();
        buf.extend_from_slice(tag.as_ref());
        let plain = key
            .open_in_place(nonce(counter), Aad::empty(), &mut buf)
            .unwrap();
        black_box(plain);
        counter += 1;
    })
}

/// meshwire: the plaintext is written into a frame and sealed in place; the sealed
/// bytes are copied into the opener's read buffer (where a socket read would put
/// them) and opened in place.
fn meshwire_frames(suite: CipherSuite, size: usize, secs: f64) -> f64 {
    let (mut sealer, mut opener) = loopback_pair(suite, size.max(1024));
    let plaintext = vec![0xabu8; size];
    let mut out = Vec::with_capacity(size + 32);
    rate(secs, size, || {
        out.clear();
        let start = FrameSealer::begin_frame(&mut out);
        out.extend_from_slice(&plaintext);
        sealer.seal_in_place(&mut out, start).unwrap();
        // `feed` fills the read buffer the way successive socket reads would.
        assert_eq!(opener.feed(&out), out.len());
        let plain = opener.next_frame().unwrap().unwrap();
        black_box(plain);
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn handshake_cpu(count: usize) -> (f64, f64) {
    let rng = SystemRandom::new();
    let config = Arc::new(HandshakeConfig::new("bench"));
    let a = Arc::new(Keypair::generate().unwrap());
    let b = Arc::new(Keypair::generate().unwrap());
    let (mut init_time, mut resp_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..count {
        let t = Instant::now();
        let (init, hello) =
            InitiatorAwaitResponse::start(config.clone(), a.clone(), None, &rng).unwrap();
        init_time += t.elapsed();

        let t = Instant::now();
        let (resp, reply) = ResponderAwaitHello::new(config.clone(), b.clone())
            .handle_hello(strip_prefix(&hello), &rng)
            .unwrap();
        resp_time += t.elapsed();

        let t = Instant::now();
        let (_, finish) = init.handle_response(strip_prefix(&reply)).unwrap();
        init_time += t.elapsed();

        let t = Instant::now();
        black_box(resp.handle_finish(strip_prefix(&finish)).unwrap());
        resp_time += t.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    (per(init_time), per(resp_time))
}

fn strip_prefix(msg: &[u8]) -> &[u8] {
    let n = msg.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    &msg[n..]
}

fn main() {
    let args = parse_args();
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        for size in [1024usize, 16 * 1024, 64 * 1024] {
            eprintln!("seal+open {} {} B ...", suite_name(suite), size);
            // Interleave so both see the same machine load; medians over rounds.
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..args.rounds {
                raw.push(raw_ring(suite, size, args.secs_per_case));
                ours.push(meshwire_frames(suite, size, args.secs_per_case));
            }
            let (ours, raw) = (median(ours), median(raw));
            println!(
                "{{\"bench\":\"seal\",\"impl\":\"meshwire\",\"cipher\":\"{}\",\"size\":{},\"mb_per_s\":{:.1},\"raw_ring_mb_per_s\":{:.1},\"ratio\":{:.3}}}",
                suite_name(suite),
                size,
                ours,
                raw,
                ours / raw
            );
        }
    }
    eprintln!("handshake cpu over {} handshakes ...", args.handshakes);
    let (init_us, resp_us) = handshake_cpu(args.handshakes);
    println!(
        "{{\"bench\":\"handshake_cpu\",\"impl\":\"meshwire\",\"count\":{},\"initiator_us\":{:.1},\"responder_us\":{:.1}}}",
        args.handshakes, init_us, resp_us
    );
}
