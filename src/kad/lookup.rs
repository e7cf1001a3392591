//! One iterative lookup: α requests in flight per path, finished when the k closest
//! nodes a path has seen have all answered. With d > 1 paths, a node queried by one
//! path is never queried by another (S/Kademlia disjoint paths).

use std::collections::{BTreeMap, HashMap};

use crate::identity::PeerId;
use crate::kad::key::{distance, key_of, Key};
use crate::kad::provider::{Provider, UncheckedProvider};
use crate::kad::record::{PeerRecord, UncheckedRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Responded,
    Failed,
}

/// A candidate's record: from our own table (verified), or from an answer and not
/// verified until the lookup decides to contact it.
#[derive(Debug, Clone)]
enum Contact {
    Verified(PeerRecord),
    Unchecked {
        record: UncheckedRecord,
        /// Who told us: blamed if the record turns out forged.
        from: PeerId,
    },
}

impl Contact {
    fn id(&self) -> &PeerId {
        match self {
            Contact::Verified(r) => &r.id,
            Contact::Unchecked { record, .. } => &record.id,
        }
    }

    fn has_addrs(&self) -> bool {
        match self {
            Contact::Verified(r) => !r.addrs.is_empty(),
            Contact::Unchecked { record, .. } => !record.addrs.is_empty(),
        }
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    record: Contact,
    state: State,
    path: usize,
    /// Hops from us: 1 for nodes from our own table.
    hop: u32,
}

/// The state of one lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    target: Key,
    k: usize,
    alpha: usize,
    paths: usize,
    local: PeerId,
    /// By distance to the target.
    candidates: BTreeMap<Key, Candidate>,
    /// Providers found (GetProviders lookups), unverified, with who named them.
    providers: HashMap<PeerId, (UncheckedProvider, PeerId)>,
}

/// Most providers one lookup collects.
const MAX_LOOKUP_PROVIDERS: usize = 64;

impl Lookup {
    /// A lookup of `target` seeded with records from our table.
    pub fn new(
        local: PeerId,
        target: Key,
        seeds: Vec<PeerRecord>,
        k: usize,
        alpha: usize,
        paths: usize,
    ) -> Self {
        let mut lookup = Lookup {
            target,
            k,
            alpha: alpha.max(1),
            paths: paths.max(1),
            local,
            candidates: BTreeMap::new(),
            providers: std::collections::HashMap::new(),
        };
        for (i, r) in seeds.into_iter().enumerate() {
            let path = i % lookup.paths;
            lookup.add(Contact::Verified(r), path, 1);
        }
        lookup
    }

    /// The key looked up.
    pub fn target(&self) -> &Key {
        &self.target
    }

    fn add(&mut self, record: Contact, path: usize, hop: u32) {
        if *record.id() == self.local || !record.has_addrs() {
            return;
        }
        let d = distance(&key_of(record.id()), &self.target);
        self.candidates.entry(d).or_insert(Candidate {
            record,
            state: State::Waiting,
            path,
            hop,
        });
        // Bounded: far candidates beyond what any path could need are dropped.
        let cap = self.k * self.paths * 4;
        while self.candidates.len() > cap {
            let last = *self.candidates.keys().next_back().unwrap_or(&[0; 32]);
            if self.candidates[&last].state == State::InFlight {
                break;
            }
            self.candidates.remove(&last);
        }
    }

    /// Nodes to query now (each now counts as in flight). A candidate learned from an
    /// answer is first passed to `verify` (with who named it); one that fails counts
    /// as a failed node and the next is taken instead.
    pub fn next_queries(
        &mut self,
        mut verify: impl FnMut(UncheckedRecord, PeerId) -> Option<PeerRecord>,
    ) -> Vec<PeerRecord> {
        let mut out = Vec::new();
        for path in 0..self.paths {
            let in_flight = self
                .candidates
                .values()
                .filter(|c| c.path == path && c.state == State::InFlight)
                .count();
            let mut budget = self.alpha.saturating_sub(in_flight);
            let mut live_seen = 0;
            for c in self.candidates.values_mut().filter(|c| c.path == path) {
                if budget == 0 || live_seen >= self.k {
                    break;
                }
                match c.state {
                    State::Failed => continue,
                    State::Waiting => {
                        if let Contact::Unchecked { record, from } = &c.record {
                            match verify(record.clone(), *from) {
                                Some(r) => c.record = Contact::Verified(r),
                                None => {
                                    c.state = State::Failed;
                                    continue;
                                }
                            }
                        }
                        if let Contact::Verified(r) = &c.record {
                            out.push(r.clone());
                        }
                        c.state = State::InFlight;
                        budget -= 1;
                    }
                    State::InFlight | State::Responded => {}
                }
                live_seen += 1;
            }
        }
        out
    }

    fn find(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        let d = distance(&key_of(peer), &self.target);
        self.candidates.get_mut(&d)
    }

    /// `peer` answered with closer nodes (and providers, for GetProviders), their
    /// records not yet verified.
    pub fn on_response(
        &mut self,
        peer: &PeerId,
        closer: Vec<UncheckedRecord>,
        providers: Vec<UncheckedProvider>,
    ) {
        let Some(c) = self.find(peer) else { return };
        if c.state != State::InFlight {
            return;
        }
        c.state = State::Responded;
        let (path, hop) = (c.path, c.hop);
        for record in closer.into_iter().take(self.k) {
            let from = *peer;
            self.add(Contact::Unchecked { record, from }, path, hop + 1);
        }
        for p in providers {
            if self.providers.len() >= MAX_LOOKUP_PROVIDERS {
                break;
            }
            self.providers.entry(p.record.id).or_insert((p, *peer));
        }
    }

    /// `peer` did not answer.
    pub fn on_failure(&mut self, peer: &PeerId) {
        if let Some(c) = self.find(peer) {
            c.state = State::Failed;
        }
    }

    /// Done when on every path the k closest live candidates have answered.
    pub fn is_done(&self) -> bool {
        (0..self.paths).all(|path| {
            let mut live = 0;
            for c in self.candidates.values().filter(|c| c.path == path) {
                match c.state {
                    State::Failed => continue,
                    State::Responded => live += 1,
                    State::Waiting | State::InFlight => return false,
                }
                if live >= self.k {
                    break;
                }
            }
            true
        })
    }

    /// The k closest nodes that answered, and the most hops any of them took.
    pub fn result(&self) -> (Vec<PeerRecord>, u32) {
        let answered: Vec<&Candidate> = self
            .candidates
            .values()
            .filter(|c| c.state == State::Responded)
            .take(self.k)
            .collect();
        let hops = answered.iter().map(|c| c.hop).max().unwrap_or(0);
        // Only contacted candidates answer, and contacting verifies.
        let records = answered
            .into_iter()
            .filter_map(|c| match &c.record {
                Contact::Verified(r) => Some(r.clone()),
                Contact::Unchecked { .. } => None,
            })
            .collect();
        (records, hops)
    }

    /// The providers found: each record passed to `verify` (with who named it), then
    /// its announcement of the target checked; those that fail are left out.
    pub fn take_providers(
        &mut self,
        mut verify: impl FnMut(UncheckedRecord, PeerId) -> Option<PeerRecord>,
    ) -> Vec<Provider> {
        let mut found: Vec<(UncheckedProvider, PeerId)> =
            std::mem::take(&mut self.providers).into_values().collect();
        found.sort_by_key(|(p, _)| p.record.id);
        let target = self.target;
        found
            .into_iter()
            .filter_map(|(p, from)| {
                let record = verify(p.record, from)?;
                Provider::verified(record, &target, p.metadata, p.signature)
            })
            .collect()
    }
}
