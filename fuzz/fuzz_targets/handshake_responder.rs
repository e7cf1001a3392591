//! Arbitrary bytes into a responder, either from the start (as the hello) or after a
//! real hello (as the finish message, reaching the sealed-auth parser under
//! `cfg(fuzzing)`).
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshwire::identity::Keypair;
use meshwire::secure::{Handshake, HandshakeConfig};
use ring::rand::SystemRandom;

struct Fixture {
    config: Arc<HandshakeConfig>,
    responder: Arc<Keypair>,
    initiator: Arc<Keypair>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        config: Arc::new(HandshakeConfig::new("fuzz")),
        responder: Arc::new(Keypair::generate().unwrap()),
        initiator: Arc::new(Keypair::generate().unwrap()),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let rng = SystemRandom::new();
    let now = Instant::now();
    let mut responder = Handshake::responder(f.config.clone(), f.responder.clone(), now);
    if mode & 1 == 1 {
        let mut initiator =
            Handshake::initiator(f.config.clone(), f.initiator.clone(), None, now, &rng).unwrap();
        let hello = initiator.poll_transmit().unwrap();
        assert_eq!(responder.handle_input(&hello, &rng), Ok(hello.len()));
        responder.poll_transmit().unwrap();
    }
    let chunk = usize::from(mode >> 1).max(1);
    for piece in input.chunks(chunk) {
        match responder.handle_input(piece, &rng) {
            Ok(used) => assert!(used <= piece.len()),
            Err(_) => {
                assert!(responder.take_established().is_none());
                return;
            }
        }
        let _ = responder.poll_transmit();
    }
    let _ = responder.handle_eof();
});
