//! AEAD suites and one direction's key: counter nonces and the forward ratchet.

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use crate::error::FrameError;
use crate::wire;

/// Length of every AEAD key and ratchet secret.
pub const KEY_LEN: usize = 32;
/// Length of the AEAD tag appended to every sealed payload.
pub const TAG_LEN: usize = 16;
/// Frames sealed under one key before it ratchets forward.
pub const RATCHET_INTERVAL: u64 = 1 << 32;

const RATCHET_LABEL: &[u8] = b"meshwire ratchet";

/// The AEAD a session uses, negotiated in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// AES-256-GCM: fastest where the CPU has AES instructions (x86_64, aarch64).
    Aes256Gcm,
    /// ChaCha20-Poly1305: constant-time everywhere, faster without AES instructions.
    ChaCha20Poly1305,
}

impl CipherSuite {
    /// The suites this build prefers, best first.
    pub fn default_preference() -> Vec<CipherSuite> {
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            vec![CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305]
        } else {
            vec![CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm]
        }
    }

    pub(crate) fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            CipherSuite::Aes256Gcm => &aead::AES_256_GCM,
            CipherSuite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    pub(crate) fn to_wire(self) -> wire::Cipher {
        match self {
            CipherSuite::Aes256Gcm => wire::Cipher::Aes256Gcm,
            CipherSuite::ChaCha20Poly1305 => wire::Cipher::Chacha20Poly1305,
        }
    }

    pub(crate) fn from_wire(value: i32) -> Option<CipherSuite> {
        match wire::Cipher::try_from(value).ok()? {
            wire::Cipher::Aes256Gcm => Some(CipherSuite::Aes256Gcm),
            wire::Cipher::Chacha20Poly1305 => Some(CipherSuite::ChaCha20Poly1305),
            wire::Cipher::Unspecified => None,
        }
    }
}

/// One direction's AEAD state: the current key, its ratchet secret and the frame counter.
///
/// The nonce is the 64-bit frame counter, big-endian, after four zero bytes. Every
/// [`RATCHET_INTERVAL`] frames the secret ratchets forward through HKDF, so a nonce
/// never repeats under one key, and a counter that would wrap is an error.
pub(crate) struct DirectionKey {
    suite: CipherSuite,
    secret: [u8; KEY_LEN],
    key: LessSafeKey,
    counter: u64,
}

impl DirectionKey {
    pub(crate) fn new(suite: CipherSuite, secret: [u8; KEY_LEN]) -> Self {
        DirectionKey {
            suite,
            key: make_key(suite, &secret),
            secret,
            counter: 0,
        }
    }

    /// The nonce for the next frame; ratchets the key when an interval is used up.
    fn next_nonce(&mut self) -> Result<Nonce, FrameError> {
        let counter = self.counter;
        if counter == u64::MAX {
            return Err(FrameError::CounterExhausted);
        }
        if counter != 0 && counter % RATCHET_INTERVAL == 0 {
            self.ratchet();
        }
        self.counter += 1;
        let mut nonce = [0u8; aead::NONCE_LEN];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    fn ratchet(&mut self) {
        self.secret = hkdf_expand(&self.secret, &[RATCHET_LABEL]);
        self.key = make_key(self.suite, &self.secret);
    }

    /// Seals `in_out` in place and returns its tag.
    pub(crate) fn seal(
        &mut self,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], FrameError> {
        let nonce = self.next_nonce()?;
        seal_with(&self.key, nonce, aad, in_out)
    }

    /// Opens `in_out` (ciphertext followed by the tag) in place; returns the plaintext length.
    pub(crate) fn open(&mut self, aad: &[u8], in_out: &mut [u8]) -> Result<usize, FrameError> {
        let nonce = self.next_nonce()?;
        open_with(&self.key, nonce, aad, in_out)
    }

    #[cfg(test)]
    pub(crate) fn set_counter(&mut self, counter: u64) {
        // Replays the ratchets an honest peer would have done to get here.
        let ratchets = self.counter / RATCHET_INTERVAL;
        let target = counter.saturating_sub(1) / RATCHET_INTERVAL;
        for _ in ratchets..target {
            self.ratchet();
        }
        self.counter = counter;
    }

    #[cfg(test)]
    pub(crate) fn counter(&self) -> u64 {
        self.counter
    }
}

fn make_key(suite: CipherSuite, secret: &[u8; KEY_LEN]) -> LessSafeKey {
    // Only fails on a wrong key length, and KEY_LEN is right for both suites.
    let unbound = UnboundKey::new(suite.algorithm(), secret)
        .unwrap_or_else(|_| unreachable!("32-byte key for a 256-bit AEAD"));
    LessSafeKey::new(unbound)
}

#[cfg(not(fuzzing))]
fn seal_with(
    key: &LessSafeKey,
    nonce: Nonce,
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<[u8; TAG_LEN], FrameError> {
    let tag = key
        .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), in_out)
        .map_err(|_| FrameError::PlaintextTooLarge {
            len: in_out.len(),
            max: usize::MAX,
        })?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

#[cfg(not(fuzzing))]
fn open_with(
    key: &LessSafeKey,
    nonce: Nonce,
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<usize, FrameError> {
    key.open_in_place(nonce, aead::Aad::from(aad), in_out)
        .map(|plain| plain.len())
        .map_err(|_| FrameError::OpenFailed)
}

// Fuzzing build: the AEAD is the identity and the tag is not checked, so the fuzzer
// reaches the code that parses what a real peer would have sealed.
#[cfg(fuzzing)]
fn seal_with(
    _key: &LessSafeKey,
    _nonce: Nonce,
    _aad: &[u8],
    _in_out: &mut [u8],
) -> Result<[u8; TAG_LEN], FrameError> {
    Ok([0u8; TAG_LEN])
}

#[cfg(fuzzing)]
fn open_with(
    _key: &LessSafeKey,
    _nonce: Nonce,
    _aad: &[u8],
    in_out: &mut [u8],
) -> Result<usize, FrameError> {
    in_out
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(FrameError::OpenFailed)
}

/// HKDF-SHA256-Expand of `prk_bytes` (used directly as the PRK) into 32 bytes.
pub(crate) fn hkdf_expand(prk_bytes: &[u8], info: &[&[u8]]) -> [u8; KEY_LEN] {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk_bytes);
    expand(&prk, info)
}

/// HKDF-SHA256-Extract(`salt`, `ikm`) then Expand into 32 bytes.
pub(crate) fn hkdf_extract_expand(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> [u8; KEY_LEN] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    expand(&prk, info)
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    // Expand fails only for outputs longer than 255 hash lengths; 32 bytes never is.
    prk.expand(info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .unwrap_or_else(|_| unreachable!("32-byte HKDF output"));
    out
}

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;

    fn pair(suite: CipherSuite) -> (DirectionKey, DirectionKey) {
        let secret = [7u8; KEY_LEN];
        (
            DirectionKey::new(suite, secret),
            DirectionKey::new(suite, secret),
        )
    }

    #[test]
    fn seal_open_round_trip_both_suites() {
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            let (mut tx, mut rx) = pair(suite);
            for i in 0..3u8 {
                let mut buf = vec![i; 100];
                let tag = tx.seal(b"aad", &mut buf).unwrap();
                assert_ne!(buf, vec![i; 100]);
                buf.extend_from_slice(&tag);
                let n = rx.open(b"aad", &mut buf).unwrap();
                assert_eq!(&buf[..n], &vec![i; 100][..]);
            }
        }
    }

    #[test]
    fn nonces_never_repeat_and_key_ratchets_at_interval() {
        let (mut tx, mut rx) = pair(CipherSuite::Aes256Gcm);
        // Same plaintext, consecutive counters: ciphertexts must all differ.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut buf = [0u8; 32];
            let tag = tx.seal(b"", &mut buf).unwrap();
            assert!(seen.insert((buf, tag)), "nonce reused");
        }
        // Across the ratchet boundary both sides derive the same new key ...
        tx.set_counter(RATCHET_INTERVAL - 1);
        rx.set_counter(RATCHET_INTERVAL - 1);
        for _ in 0..3 {
            let mut buf = b"across the ratchet".to_vec();
            let tag = tx.seal(b"", &mut buf).unwrap();
            buf.extend_from_slice(&tag);
            assert!(rx.open(b"", &mut buf).is_ok());
        }
        // ... and sealing across the boundary itself moves the key forward: the frame
        // at 2^32 is sealed under a new key, never the one frame 0 used.
        let (mut k, _) = pair(CipherSuite::Aes256Gcm);
        k.set_counter(RATCHET_INTERVAL - 1);
        let before = k.secret;
        k.seal(b"", &mut [0u8; 8]).unwrap();
        assert_eq!(k.secret, before, "ratcheted too early");
        k.seal(b"", &mut [0u8; 8]).unwrap();
        assert_ne!(k.secret, before, "key did not ratchet at 2^32 frames");
        assert_eq!(k.counter(), RATCHET_INTERVAL + 1);
    }

    #[test]
    fn exhausted_counter_is_an_error() {
        let (mut tx, _) = pair(CipherSuite::ChaCha20Poly1305);
        tx.counter = u64::MAX;
        let mut buf = [0u8; 4];
        assert_eq!(tx.seal(b"", &mut buf), Err(FrameError::CounterExhausted));
        assert_eq!(tx.counter(), u64::MAX);
    }
}
