//! One iterative lookup: α requests in flight per path, finished when the k closest
//! nodes a path has seen have all answered. With d > 1 paths, a node queried by one
//! path is never queried by another (S/Kademlia disjoint paths).

use std::collections::{BTreeMap, HashMap};

use crate::identity::PeerId;
use crate::kad::key::{distance, key_of, Key};
use crate::kad::record::PeerRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    record: PeerRecord,
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
    /// Providers found (GetProviders lookups).
    pub providers: HashMap<PeerId, PeerRecord>,
}

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
            lookup.add(r, path, 1);
        }
        lookup
    }

    /// The key looked up.
    pub fn target(&self) -> &Key {
        &self.target
    }

    fn add(&mut self, record: PeerRecord, path: usize, hop: u32) {
        if record.id == self.local || record.addrs.is_empty() {
            return;
        }
        let d = distance(&key_of(&record.id), &self.target);
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

    /// Nodes to query now (each now counts as in flight).
    pub fn next_queries(&mut self) -> Vec<PeerRecord> {
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
                        c.state = State::InFlight;
                        out.push(c.record.clone());
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

    /// `peer` answered with closer nodes (and providers, for GetProviders).
    pub fn on_response(
        &mut self,
        peer: &PeerId,
        closer: Vec<PeerRecord>,
        providers: Vec<PeerRecord>,
    ) {
        let Some(c) = self.find(peer) else { return };
        if c.state != State::InFlight {
            return;
        }
        c.state = State::Responded;
        let (path, hop) = (c.path, c.hop);
        for r in closer.into_iter().take(self.k) {
            self.add(r, path, hop + 1);
        }
        for p in providers {
            self.providers.entry(p.id).or_insert(p);
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
        (
            answered.into_iter().map(|c| c.record.clone()).collect(),
            hops,
        )
    }
}
