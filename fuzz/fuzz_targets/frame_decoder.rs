//! Arbitrary bytes, in arbitrary chunk sizes, into the frame opener. Under
//! `cfg(fuzzing)` the AEAD is the identity, so frames that would open reach the caller.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshwire::secure::frame::loopback_pair;
use meshwire::secure::CipherSuite;

const MAX_PLAINTEXT: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, mut rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let (_, mut opener) = loopback_pair(CipherSuite::Aes256Gcm, MAX_PLAINTEXT);
    while !rest.is_empty() {
        let n = chunk.min(rest.len());
        let taken = opener.feed(&rest[..n]);
        rest = &rest[taken..];
        loop {
            match opener.next_frame() {
                Ok(Some(plain)) => assert!(plain.len() <= MAX_PLAINTEXT),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(opener.buffered() <= 2 * (MAX_PLAINTEXT + 20));
    }
    let _ = opener.finish();
});
