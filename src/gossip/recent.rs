//! A bounded set of message ids that forgets the oldest first: what a peer has
//! shown it has, or what we already offered it.

use std::collections::VecDeque;

use crate::collections::Set;
use crate::gossip::MessageId;

/// At most `max` ids; inserting one more forgets the oldest.
#[derive(Debug)]
pub(crate) struct RecentIds {
    set: Set<MessageId>,
    order: VecDeque<MessageId>,
    max: usize,
}

impl RecentIds {
    pub(crate) fn new(max: usize) -> Self {
        RecentIds {
            set: Set::default(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Remembers `id`; `false` if it was already there.
    pub(crate) fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.set.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_max_and_forgets_the_oldest() {
        let mut r = RecentIds::new(2);
        assert!(r.insert([1; 32]));
        assert!(!r.insert([1; 32]), "already there");
        r.insert([2; 32]);
        r.insert([3; 32]);
        assert!(!r.contains(&[1; 32]), "the oldest went");
        assert!(r.contains(&[2; 32]) && r.contains(&[3; 32]));
    }
}
