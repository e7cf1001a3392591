//! Messages announced by the first fragment of a large RPC and not yet complete.
//!
//! An announcement makes us tell our mesh "don't send it", so believing one is a
//! way to censor: each is bounded per peer, and lives only until a deadline.

use std::time::Instant;

use crate::gossip::outstanding::{Index, Outstanding};
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

impl Outstanding for Announced {
    fn from(&self) -> PeerId {
        self.from
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[derive(Debug, Default)]
pub(crate) struct Announcements {
    index: Index<Announced>,
}

impl Announcements {
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.index.contains(id)
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
        if self.index.count_from(&from) >= max || self.index.contains(&id) {
            return false;
        }
        self.index.insert(
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
        self.index.remove(id).is_some()
    }

    /// Takes the announcements whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(MessageId, Announced)> {
        self.index.expire(now)
    }

    /// A peer left: its announcements no longer hold anything back.
    pub(crate) fn forget_peer(&mut self, peer: &PeerId) {
        for id in self.index.ids_from(peer) {
            self.index.remove(&id);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.index.next_deadline()
    }
}
