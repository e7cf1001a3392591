//! Arbitrary bytes into an initiator waiting for the responder's message.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshwire::identity::Keypair;
use meshwire::secure::{Handshake, HandshakeConfig};
use ring::rand::SystemRandom;

fn fixture() -> &'static (Arc<HandshakeConfig>, Arc<Keypair>) {
    static F: OnceLock<(Arc<HandshakeConfig>, Arc<Keypair>)> = OnceLock::new();
    F.get_or_init(|| {
        (
            Arc::new(HandshakeConfig::new("fuzz")),
            Arc::new(Keypair::generate().unwrap()),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let (config, key) = fixture();
    let rng = SystemRandom::new();
    let mut initiator =
        Handshake::initiator(config.clone(), key.clone(), None, Instant::now(), &rng).unwrap();
    initiator.poll_transmit().unwrap();
    for piece in input.chunks(usize::from(chunk).max(1)) {
        match initiator.handle_input(piece, &rng) {
            Ok(used) => assert!(used <= piece.len()),
            Err(_) => return,
        }
        if initiator.is_done() {
            return;
        }
    }
    let _ = initiator.handle_eof();
});
