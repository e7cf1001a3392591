//! Messages a peer started and that are not complete yet, indexed three ways: by
//! id, by deadline (to expire them in order) and by the peer that started them (to
//! bound how many one peer may hold). First-fragment announcements and streams
//! being assembled both keep theirs here.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::collections::Map;
use crate::gossip::MessageId;
use crate::identity::PeerId;

/// What an outstanding entry must tell the index.
pub(crate) trait Outstanding {
    /// The peer that started it.
    fn from(&self) -> PeerId;
    /// When it is given up.
    fn deadline(&self) -> Instant;
}

/// Outstanding entries by id, deadline and starting peer.
#[derive(Debug)]
pub(crate) struct Index<V> {
    by_id: Map<MessageId, V>,
    deadlines: BTreeSet<(Instant, MessageId)>,
    per_peer: Map<PeerId, usize>,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Index {
            by_id: Map::default(),
            deadlines: BTreeSet::new(),
            per_peer: Map::default(),
        }
    }
}

impl<V: Outstanding> Index<V> {
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.by_id.contains_key(id)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut V> {
        self.by_id.get_mut(id)
    }

    /// Entries `peer` started and that are still outstanding.
    pub(crate) fn count_from(&self, peer: &PeerId) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Adds `v` under `id` (replacing nothing: the caller checked `contains`).
    pub(crate) fn insert(&mut self, id: MessageId, v: V) {
        *self.per_peer.entry(v.from()).or_default() += 1;
        self.deadlines.insert((v.deadline(), id));
        self.by_id.insert(id, v);
    }

    /// Takes `id` out.
    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<V> {
        let v = self.by_id.remove(id)?;
        self.deadlines.remove(&(v.deadline(), *id));
        if let Some(n) = self.per_peer.get_mut(&v.from()) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&v.from());
            }
        }
        Some(v)
    }

    /// Takes the entries whose deadline passed, oldest first.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(MessageId, V)> {
        let due: Vec<MessageId> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.remove(&id).map(|v| (id, v)))
            .collect()
    }

    /// The ids of the entries `peer` started.
    pub(crate) fn ids_from(&self, peer: &PeerId) -> Vec<MessageId> {
        if self.count_from(peer) == 0 {
            return Vec::new();
        }
        self.by_id
            .iter()
            .filter(|(_, v)| v.from() == *peer)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.by_id.values_mut()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }
}
