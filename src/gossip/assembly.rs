//! Streamed messages still arriving: their verified head, the chunks so far (kept
//! as the encoded RPCs they are forwarded as), and whom each chunk goes on to.
//!
//! Bounded in bytes (the announced sizes of everything assembling, decided before
//! anything is allocated), in count per announcing peer, and in time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::collections::Map;
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
    /// Chunks `from` delivered (none by the deadline costs it).
    pub(crate) from_delivered: usize,
    /// Given up (and fetched from another peer) after this.
    pub(crate) deadline: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Assemblies {
    by_id: Map<MessageId, Assembly>,
    deadlines: BTreeSet<(Instant, MessageId)>,
    per_peer: Map<PeerId, usize>,
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
        self.by_id.contains_key(id)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut Assembly> {
        self.by_id.get_mut(id)
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
        if self.per_peer.get(from).copied().unwrap_or(0) >= per_peer {
            return Err(NoRoom::PerPeer);
        }
        if self.bytes + size > max_bytes {
            return Err(NoRoom::Bytes);
        }
        Ok(())
    }

    /// Starts assembling (after [`Assemblies::room`] said yes).
    pub(crate) fn start(&mut self, id: MessageId, a: Assembly) {
        *self.per_peer.entry(a.from).or_default() += 1;
        self.bytes += a.head.size;
        self.deadlines.insert((a.deadline, id));
        self.by_id.insert(id, a);
    }

    /// Takes an assembly out (complete, judged, or given up).
    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Assembly> {
        let a = self.by_id.remove(id)?;
        self.deadlines.remove(&(a.deadline, *id));
        self.bytes -= a.head.size;
        if let Some(n) = self.per_peer.get_mut(&a.from) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&a.from);
            }
        }
        Some(a)
    }

    /// Takes the assemblies whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(MessageId, Assembly)> {
        let due: Vec<MessageId> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.remove(&id).map(|a| (id, a)))
            .collect()
    }

    /// A peer left: nothing more is forwarded to it.
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        for a in self.by_id.values_mut() {
            a.forward_to.retain(|p| p != peer);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Announced bytes of everything assembling.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}
