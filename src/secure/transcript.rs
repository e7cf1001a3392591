//! The running SHA-256 hash of everything both sides said in the handshake.

use ring::digest;

/// Domain label absorbed first, so no other protocol's transcript can collide.
const PROTOCOL_LABEL: &[u8] = b"meshwire/handshake/v1";

/// Each item is absorbed as a `u32` big-endian length followed by its bytes, so
/// item boundaries are unambiguous.
#[derive(Clone)]
pub(crate) struct Transcript {
    ctx: digest::Context,
}

impl Transcript {
    pub(crate) fn new() -> Self {
        let mut t = Transcript {
            ctx: digest::Context::new(&digest::SHA256),
        };
        t.absorb(PROTOCOL_LABEL);
        t
    }

    pub(crate) fn absorb(&mut self, item: &[u8]) {
        // Handshake items are bounded by the message limit, far below u32::MAX.
        self.ctx.update(&(item.len() as u32).to_be_bytes());
        self.ctx.update(item);
    }

    pub(crate) fn absorb_u32(&mut self, value: u32) {
        self.absorb(&value.to_be_bytes());
    }

    pub(crate) fn hash(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.clone().finish().as_ref());
        out
    }
}
