//! Streamed messages still arriving: their verified head, the chunks so far (kept
//! as the encoded RPCs they are forwarded as), and whom each chunk goes on to.
//!
//! Bounded in bytes (the announced sizes of everything assembling, decided before
//! anything is allocated), in count per announcing peer, and in time.

use std::sync::Arc;
use std::time::Instant;

use crate::gossip::outstanding::{Index, Outstanding};
use crate::gossip::MessageId;
use crate::identity::PeerId;
use crate::wire;

/// One message being assembled.
#[derive(Debug)]
pub(crate) struct Assembly {
    /// The verified head, as we forward it (hops already counted).
    pub(crate) head: wire::StreamHead,
    /// Hops from the origin as received.
    pub(crate) hops: u32,
    /// Its origin.
    pub(crate) origin: PeerId,
    /// The peer whose head we took.
    pub(crate) from: PeerId,
    /// Chunk RPCs by index, as they arrived.
    pub(crate) chunks: Vec<Option<Arc<Vec<u8>>>>,
    /// Chunks still missing.
    pub(crate) missing: usize,
    /// Peers each new chunk is forwarded to.
    pub(crate) forward_to: Vec<PeerId>,
    /// Mesh peers that get it whole once it is complete and accepted.
    pub(crate) later: Vec<PeerId>,
    /// Other peers that sent the same head (bound by its hashes, as `from` is; at
    /// most one entry per connected peer).
    pub(crate) same_head: Vec<PeerId>,
    /// Chunks `from` delivered (none by the deadline costs it).
    pub(crate) from_delivered: usize,
    /// Given up (and fetched from another peer) after this.
    pub(crate) deadline: Instant,
}

impl Outstanding for Assembly {
    fn from(&self) -> PeerId {
        self.from
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[derive(Debug, Default)]
pub(crate) struct Assemblies {
    index: Index<Assembly>,
    bytes: u64,
}

/// Why a new assembly was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The announcing peer has its most streams in flight.
    PerPeer,
    /// All assemblies together would pass the byte bound.
    Bytes,
}

impl Assemblies {
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.index.contains(id)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut Assembly> {
        self.index.get_mut(id)
    }

    /// Whether a stream of `size` bytes from `from` may start (checked before its
    /// signature is, so a refused one costs nothing).
    pub(crate) fn room(
        &self,
        from: &PeerId,
        size: u64,
        per_peer: usize,
        max_bytes: u64,
    ) -> Result<(), NoRoom> {
        if self.index.count_from(from) >= per_peer {
            return Err(NoRoom::PerPeer);
        }
        if self.bytes + size > max_bytes {
            return Err(NoRoom::Bytes);
        }
        Ok(())
    }

    /// Starts assembling (after [`Assemblies::room`] said yes).
    pub(crate) fn start(&mut self, id: MessageId, a: Assembly) {
        self.bytes += a.head.size;
        self.index.insert(id, a);
    }

    /// Takes an assembly out (complete, judged, or given up).
    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Assembly> {
        let a = self.index.remove(id)?;
        self.bytes -= a.head.size;
        Some(a)
    }

    /// Takes the assemblies whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(MessageId, Assembly)> {
        let due = self.index.expire(now);
        for (_, a) in &due {
            self.bytes -= a.head.size;
        }
        due
    }

    /// A peer left: nothing more is forwarded to it.
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        for a in self.index.values_mut() {
            a.forward_to.retain(|p| p != peer);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.index.next_deadline()
    }

    /// Announced bytes of everything assembling.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}
