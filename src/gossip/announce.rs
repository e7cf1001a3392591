//! Messages announced by the first fragment of a large RPC and not yet complete.
//!
//! An announcement makes us tell our mesh "don't send it", so believing one is a
//! way to censor: each is bounded per peer, and lives only until a deadline.

use crate::collections::Map;
use std::collections::BTreeSet;
use std::time::Instant;

use crate::gossip::MessageId;
use crate::identity::PeerId;

/// One announced message.
#[derive(Debug, Clone)]
pub(crate) struct Announced {
    /// Who announced it.
    pub(crate) from: PeerId,
    /// The mesh topics the announcer shares with us (where to fetch it if late).
    pub(crate) topics: Vec<String>,
    deadline: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Announcements {
    by_id: Map<MessageId, Announced>,
    deadlines: BTreeSet<(Instant, MessageId)>,
    per_peer: Map<PeerId, usize>,
}

impl Announcements {
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Records an announcement; `false` if `from` already has `max` outstanding.
    pub(crate) fn announce(
        &mut self,
        id: MessageId,
        from: PeerId,
        topics: Vec<String>,
        deadline: Instant,
        max: usize,
    ) -> bool {
        let n = self.per_peer.entry(from).or_default();
        if *n >= max || self.by_id.contains_key(&id) {
            return false;
        }
        *n += 1;
        self.deadlines.insert((deadline, id));
        self.by_id.insert(
            id,
            Announced {
                from,
                topics,
                deadline,
            },
        );
        true
    }

    /// The message arrived (or was judged): `true` if it had been announced.
    pub(crate) fn complete(&mut self, id: &MessageId) -> bool {
        self.remove(id).is_some()
    }

    fn remove(&mut self, id: &MessageId) -> Option<Announced> {
        let a = self.by_id.remove(id)?;
        self.deadlines.remove(&(a.deadline, *id));
        if let Some(n) = self.per_peer.get_mut(&a.from) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&a.from);
            }
        }
        Some(a)
    }

    /// Takes the announcements whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(MessageId, Announced)> {
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

    /// A peer left: its announcements no longer hold anything back.
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        let ids: Vec<MessageId> = self
            .by_id
            .iter()
            .filter(|(_, a)| a.from == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(&id);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }
}
