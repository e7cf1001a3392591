//! Sealed frames: `u32` big-endian length, then ciphertext and tag.
//!
//! The length counts ciphertext plus tag and is the AEAD's associated data, so a frame
//! cannot be cut or stretched without failing to open. Sealing and opening work in
//! place in the caller's buffer; the opener never holds more than its limit.

use crate::error::FrameError;
use crate::secure::cipher::{DirectionKey, TAG_LEN};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Default largest plaintext of one frame.
pub const DEFAULT_MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest plaintext a frame may be configured for (the length field allows more,
/// but bigger frames only add latency and memory).
pub const MAX_PLAINTEXT_LIMIT: usize = 1 << 20;

/// A first read buffer fits a small message's frames; it doubles while reads fill
/// it, so bulk transfers reach the full size in a few reads (16 KiB at first held
/// 16 KiB on every quiet DHT connection).
const INITIAL_READ_BUF: usize = 2 * 1024;

/// Seals outgoing frames for one direction of a session.
pub struct FrameSealer {
    key: DirectionKey,
    max_plaintext: usize,
}

impl FrameSealer {
    pub(crate) fn new(key: DirectionKey, max_plaintext: usize) -> Self {
        FrameSealer { key, max_plaintext }
    }

    /// The largest plaintext one frame carries.
    pub fn max_plaintext(&self) -> usize {
        self.max_plaintext
    }

    /// Seals no frame larger than `max` from now on (what the peer announced it
    /// accepts); never raises the limit.
    pub fn limit_plaintext(&mut self, max: usize) {
        self.max_plaintext = self.max_plaintext.min(max.max(1));
    }

    /// Starts a frame at the end of `out` by reserving its header; write the plaintext
    /// after it, then call [`FrameSealer::seal_in_place`] with the returned offset.
    pub fn begin_frame(out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        start
    }

    /// Seals the plaintext `out[start + HEADER_LEN..]` in place, fills in the header
    /// and appends the tag.
    pub fn seal_in_place(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), FrameError> {
        let body_start = start + HEADER_LEN;
        let len = out.len().saturating_sub(body_start);
        if len > self.max_plaintext || out.len() < body_start {
            return Err(FrameError::PlaintextTooLarge {
                len,
                max: self.max_plaintext,
            });
        }
        // Fits in u32: max_plaintext is at most MAX_PLAINTEXT_LIMIT.
        let header = ((len + TAG_LEN) as u32).to_be_bytes();
        out[start..body_start].copy_from_slice(&header);
        let tag = self.key.seal(&header, &mut out[body_start..])?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Appends `plaintext` to `out` as one sealed frame.
    pub fn seal(&mut self, out: &mut Vec<u8>, plaintext: &[u8]) -> Result<(), FrameError> {
        if plaintext.len() > self.max_plaintext {
            return Err(FrameError::PlaintextTooLarge {
                len: plaintext.len(),
                max: self.max_plaintext,
            });
        }
        out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
        let start = Self::begin_frame(out);
        out.extend_from_slice(plaintext);
        self.seal_in_place(out, start)
    }

    #[cfg(test)]
    pub(crate) fn key_mut(&mut self) -> &mut DirectionKey {
        &mut self.key
    }
}

/// Incremental decoder and opener of incoming frames for one direction of a session.
///
/// Bytes go in through [`FrameOpener::read_buf`] + [`FrameOpener::advance`] (a socket
/// reads straight into it) or [`FrameOpener::feed`]; opened plaintexts come out of
/// [`FrameOpener::next_frame`]. After any error the opener stays failed.
pub struct FrameOpener {
    key: DirectionKey,
    max_plaintext: usize,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
    failed: Option<FrameError>,
}

impl FrameOpener {
    pub(crate) fn new(key: DirectionKey, max_plaintext: usize) -> Self {
        let max_frame = HEADER_LEN + max_plaintext + TAG_LEN;
        FrameOpener {
            key,
            max_plaintext,
            buf: Vec::new(),
            start: 0,
            end: 0,
            // Room for one whole frame plus the start of the next, so one read can
            // usually complete a frame without first compacting.
            limit: max_frame + max_frame / 4,
            failed: None,
        }
    }

    /// The largest plaintext one frame carries.
    pub fn max_plaintext(&self) -> usize {
        self.max_plaintext
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Free space to read into; empty when the buffer is full of undecoded frames,
    /// in which case call [`FrameOpener::next_frame`] first.
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.end == self.buf.len() || self.start == self.end) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.limit {
            let want = (self.buf.len() * 2).max(INITIAL_READ_BUF).min(self.limit);
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Frees the read buffer if it holds nothing; the next read allocates again.
    pub(crate) fn release_if_empty(&mut self) {
        if self.start == self.end && self.buf.capacity() > 0 {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Marks `n` bytes of [`FrameOpener::read_buf`] as filled.
    pub fn advance(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `input` as fits; returns how many bytes were taken.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        while taken < input.len() {
            let space = self.read_buf();
            if space.is_empty() {
                break;
            }
            let n = space.len().min(input.len() - taken);
            space[..n].copy_from_slice(&input[taken..taken + n]);
            self.advance(n);
            taken += n;
        }
        taken
    }

    /// Opens the next complete frame in place and returns its plaintext, or `None`
    /// when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let available = self.end - self.start;
        if available < HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let len = u32::from_be_bytes(header) as usize;
        let max = self.max_plaintext + TAG_LEN;
        if !(TAG_LEN..=max).contains(&len) {
            return Err(self.fail(FrameError::BadLength { len, max }));
        }
        if available < HEADER_LEN + len {
            self.make_room_for(HEADER_LEN + len);
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        self.start = body + len;
        match self.key.open(&header, &mut self.buf[body..body + len]) {
            Ok(plain_len) => Ok(Some(&mut self.buf[body..body + plain_len])),
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Call at end of stream: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.failed {
            Some(err) => Err(err),
            None if self.start != self.end => Err(FrameError::Truncated),
            None => Ok(()),
        }
    }

    fn fail(&mut self, err: FrameError) -> FrameError {
        self.failed = Some(err);
        self.start = self.end;
        err
    }

    /// Ensures a frame of `frame_len` bytes fits from `start`; it is at most the limit.
    fn make_room_for(&mut self, frame_len: usize) {
        if self.buf.len() - self.start >= frame_len {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < frame_len {
            self.buf.resize(frame_len.min(self.limit), 0);
        }
    }

    #[cfg(test)]
    pub(crate) fn key_mut(&mut self) -> &mut DirectionKey {
        &mut self.key
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }
}

/// A sealer and opener on the same key, for tests, benches and fuzzing.
#[doc(hidden)]
pub fn loopback_pair(
    suite: crate::secure::CipherSuite,
    max_plaintext: usize,
) -> (FrameSealer, FrameOpener) {
    let secret = [0x42u8; crate::secure::cipher::KEY_LEN];
    (
        FrameSealer::new(DirectionKey::new(suite, secret), max_plaintext),
        FrameOpener::new(DirectionKey::new(suite, secret), max_plaintext),
    )
}

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;
    use crate::secure::cipher::RATCHET_INTERVAL;
    use crate::secure::CipherSuite;

    fn stream(sealer: &mut FrameSealer, messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            sealer.seal(&mut out, m).unwrap();
        }
        out
    }

    fn drain(opener: &mut FrameOpener) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut frames = Vec::new();
        loop {
            match opener.next_frame() {
                Ok(Some(p)) => frames.push(p.to_vec()),
                Ok(None) => return (frames, opener.finish().err()),
                Err(e) => return (frames, Some(e)),
            }
        }
    }

    #[test]
    fn round_trip_in_arbitrary_chunks() {
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            let (mut s, mut o) = loopback_pair(suite, DEFAULT_MAX_PLAINTEXT);
            let big = vec![9u8; DEFAULT_MAX_PLAINTEXT];
            let msgs: Vec<&[u8]> = vec![b"a", b"", &big, b"hello world", &big];
            let bytes = stream(&mut s, &msgs);
            let mut got = Vec::new();
            for chunk in bytes.chunks(1000) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let n = o.feed(rest);
                    rest = &rest[n..];
                    while let Some(p) = o.next_frame().unwrap() {
                        got.push(p.to_vec());
                    }
                }
            }
            o.finish().unwrap();
            assert_eq!(got, msgs.iter().map(|m| m.to_vec()).collect::<Vec<_>>());
            assert!(o.capacity() <= o.limit);
        }
    }

    #[test]
    fn seal_in_place_matches_seal() {
        let (mut a, _) = loopback_pair(CipherSuite::Aes256Gcm, 1024);
        let (mut b, mut o) = loopback_pair(CipherSuite::Aes256Gcm, 1024);
        let mut x = Vec::new();
        a.seal(&mut x, b"payload").unwrap();
        let mut y = vec![];
        let start = FrameSealer::begin_frame(&mut y);
        y.extend_from_slice(b"payload");
        b.seal_in_place(&mut y, start).unwrap();
        assert_eq!(x, y);
        o.feed(&y);
        assert_eq!(o.next_frame().unwrap().unwrap(), b"payload");
    }

    #[test]
    fn oversized_plaintext_is_refused_by_the_sealer() {
        let (mut s, _) = loopback_pair(CipherSuite::Aes256Gcm, 100);
        let mut out = Vec::new();
        assert!(matches!(
            s.seal(&mut out, &[0u8; 101]),
            Err(FrameError::PlaintextTooLarge { len: 101, max: 100 })
        ));
    }

    #[test]
    fn length_over_limit_is_refused_before_allocating() {
        let (_, mut o) = loopback_pair(CipherSuite::Aes256Gcm, 1024);
        o.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(o.next_frame(), Err(FrameError::BadLength { .. })));
        assert!(o.capacity() <= INITIAL_READ_BUF);
        // Stays failed.
        assert!(o.next_frame().is_err());
        // A length shorter than a tag is refused too.
        let (_, mut o) = loopback_pair(CipherSuite::Aes256Gcm, 1024);
        o.feed(&[0, 0, 0, 3, 1, 2, 3]);
        assert!(matches!(o.next_frame(), Err(FrameError::BadLength { .. })));
    }

    #[test]
    fn truncation_at_every_offset_is_detected_and_delivers_nothing() {
        let (mut s, _) = loopback_pair(CipherSuite::Aes256Gcm, 1024);
        let bytes = stream(&mut s, &[b"0123456789abcdef"]);
        for cut in 0..bytes.len() {
            let (_, mut o) = loopback_pair(CipherSuite::Aes256Gcm, 1024);
            o.feed(&bytes[..cut]);
            let (frames, err) = drain(&mut o);
            assert!(frames.is_empty(), "cut at {cut} delivered data");
            if cut == 0 {
                assert_eq!(err, None);
            } else {
                assert_eq!(err, Some(FrameError::Truncated), "cut at {cut}");
            }
        }
    }

    #[test]
    fn bit_flip_anywhere_fails_and_delivers_nothing_from_that_frame_on() {
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            let (mut s, _) = loopback_pair(suite, 64);
            let first = stream(&mut s, &[b"first frame"]);
            let second = stream(&mut s, &[b"second frame!"]);
            let both = [first.clone(), second].concat();
            for bit in 0..both.len() * 8 {
                let mut bytes = both.clone();
                bytes[bit / 8] ^= 1 << (bit % 8);
                let (_, mut o) = loopback_pair(suite, 64);
                o.feed(&bytes);
                let (frames, err) = drain(&mut o);
                assert!(err.is_some(), "flip of bit {bit} went unnoticed");
                if bit / 8 < first.len() {
                    assert!(frames.is_empty(), "flip of bit {bit} delivered {frames:?}");
                } else {
                    assert_eq!(frames, vec![b"first frame".to_vec()], "bit {bit}");
                }
            }
        }
    }

    #[test]
    fn reordered_or_replayed_frames_fail() {
        let (mut s, _) = loopback_pair(CipherSuite::Aes256Gcm, 64);
        let a = stream(&mut s, &[b"a"]);
        let b = stream(&mut s, &[b"b"]);
        for bytes in [
            [b.clone(), a.clone()].concat(),
            [a.clone(), a.clone()].concat(),
        ] {
            let (_, mut o) = loopback_pair(CipherSuite::Aes256Gcm, 64);
            o.feed(&bytes);
            let (_, err) = drain(&mut o);
            assert_eq!(err, Some(FrameError::OpenFailed));
        }
    }

    #[test]
    fn frames_cross_the_ratchet_boundary() {
        let (mut s, mut o) = loopback_pair(CipherSuite::ChaCha20Poly1305, 64);
        s.key_mut().set_counter(RATCHET_INTERVAL - 2);
        o.key_mut().set_counter(RATCHET_INTERVAL - 2);
        let bytes = stream(&mut s, &[b"1", b"2", b"3", b"4"]);
        o.feed(&bytes);
        let (frames, err) = drain(&mut o);
        assert_eq!(err, None);
        assert_eq!(frames.len(), 4);
    }

    #[test]
    fn read_buf_never_grows_past_limit() {
        let (mut s, mut o) = loopback_pair(CipherSuite::Aes256Gcm, 4096);
        let data = vec![1u8; 4096];
        let bytes = stream(&mut s, &[data.as_slice(); 50]);
        let mut pos = 0;
        let mut count = 0;
        while pos < bytes.len() {
            let space = o.read_buf();
            let n = space.len().min(bytes.len() - pos);
            space[..n].copy_from_slice(&bytes[pos..pos + n]);
            o.advance(n);
            pos += n;
            assert!(o.capacity() <= o.limit);
            while let Some(p) = o.next_frame().unwrap() {
                assert_eq!(p.len(), 4096);
                count += 1;
            }
        }
        assert_eq!(count, 50);
    }
}
