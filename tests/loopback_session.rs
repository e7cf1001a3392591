//! The handshake and 100 MiB of sealed frames over real loopback TCP, two threads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use meshwire::identity::Keypair;
use meshwire::secure::{Established, Handshake, HandshakeConfig};
use ring::rand::SystemRandom;

const TOTAL: usize = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Drives a handshake over a blocking socket; returns the session and any bytes read
/// past the handshake.
fn handshake(stream: &mut TcpStream, mut hs: Handshake) -> (Established, Vec<u8>) {
    let rng = SystemRandom::new();
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).unwrap();
        }
        if hs.is_done() {
            return (hs.take_established().unwrap(), Vec::new());
        }
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            panic!("closed during handshake: {:?}", hs.handle_eof());
        }
        let used = hs.handle_input(&buf[..n], &rng).unwrap();
        if hs.is_done() {
            if let Some(out) = hs.poll_transmit() {
                stream.write_all(&out).unwrap();
            }
            return (hs.take_established().unwrap(), buf[used..n].to_vec());
        }
    }
}

/// Deterministic payload so the receiver can check every byte.
fn pattern(offset: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = ((offset + i) as u64).wrapping_mul(0x9e37_79b9) as u8;
    }
}

#[test]
fn handshake_and_100_mib_of_sealed_frames_over_loopback_tcp() {
    let config = Arc::new(HandshakeConfig::new("loopback-test"));
    let server_key = Arc::new(Keypair::generate().unwrap());
    let client_key = Arc::new(Keypair::generate().unwrap());
    let server_id = server_key.peer_id();
    let client_id = client_key.peer_id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();

    let server_config = config.clone();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let hs = Handshake::responder(server_config, server_key, Instant::now());
        let (mut session, leftover) = handshake(&mut stream, hs);
        assert_eq!(session.remote, client_id);
        let mut received = 0usize;
        let mut expected = vec![0u8; CHUNK];
        let mut pending = leftover;
        loop {
            let taken = session.opener.feed(&pending);
            pending.drain(..taken);
            while let Some(plain) = session.opener.next_frame().unwrap() {
                pattern(received, &mut expected[..plain.len()]);
                assert!(
                    plain == &expected[..plain.len()],
                    "corrupt data at {received}"
                );
                received += plain.len();
            }
            if received == TOTAL {
                break;
            }
            if pending.is_empty() {
                let space = session.opener.read_buf();
                let n = stream.read(space).unwrap();
                assert!(n > 0, "sender closed early at {received}");
                session.opener.advance(n);
            }
        }
        // Acknowledge over the reverse direction.
        let mut ack = Vec::new();
        session.sealer.seal(&mut ack, b"done").unwrap();
        stream.write_all(&ack).unwrap();
        received
    });

    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let hs = Handshake::initiator(
        config,
        client_key,
        Some(server_id),
        Instant::now(),
        &SystemRandom::new(),
    )
    .unwrap();
    let (mut session, _) = handshake(&mut stream, hs);
    assert_eq!(session.remote, server_id);
    let mut out = Vec::with_capacity(4 * (CHUNK + 32));
    let mut sent = 0;
    while sent < TOTAL {
        out.clear();
        for _ in 0..4 {
            if sent == TOTAL {
                break;
            }
            let start = meshwire::secure::FrameSealer::begin_frame(&mut out);
            let body = out.len();
            out.resize(body + CHUNK, 0);
            pattern(sent, &mut out[body..]);
            session.sealer.seal_in_place(&mut out, start).unwrap();
            sent += CHUNK;
        }
        stream.write_all(&out).unwrap();
    }
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got == 0 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        session.opener.feed(&buf[..n]);
        if let Some(ack) = session.opener.next_frame().unwrap() {
            assert_eq!(ack, b"done");
            got = 1;
        }
    }
    assert_eq!(server.join().unwrap(), TOTAL);
}
