//! Mesh maintenance at every heartbeat: grafting and pruning, delivery deficits,
//! opportunistic grafting, promises and score decay.

use super::*;
use crate::collections::Map;

impl Router {
    // ------------------------------------------------------------ heartbeat

    /// When [`Router::heartbeat`] must run.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let next = self
            .iwant_due
            .values()
            .map(|(_, at)| *at)
            .min()
            .map_or(self.next_heartbeat, |at| at.min(self.next_heartbeat));
        [
            self.incoming.next_deadline(),
            self.assembling.next_deadline(),
            self.lazy_due,
        ]
        .into_iter()
        .flatten()
        .fold(next, Instant::min)
    }

    /// Delayed IWANTs, then (when due) mesh maintenance, lazy gossip, choking,
    /// promises and score decay.
    pub fn heartbeat(&mut self, now: Instant) {
        self.send_due_iwants(now);
        self.send_held_ihaves(now);
        self.expire_announcements(now);
        self.expire_streams(now);
        if now < self.next_heartbeat {
            self.flush(now);
            return;
        }
        self.next_heartbeat = now + self.config.heartbeat;
        self.heartbeats += 1;
        self.expire_deferred(now);
        self.break_promises(now);
        // Scores: decay, colocation.
        let mut per_subnet: Map<[u8; 6], usize> = Map::default();
        for p in self.peers.values() {
            *per_subnet.entry(p.subnet).or_default() += 1;
        }
        for p in self.peers.values_mut() {
            p.score.decay(&self.weights);
            p.score.colocated = per_subnet.get(&p.subnet).copied().unwrap_or(0);
            p.ihaves = 0;
        }
        let topics: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, t)| t.subscribed)
            .map(|(n, _)| n.clone())
            .collect();
        let choke_round = self.heartbeats % u64::from(self.config.choke_window.max(1)) == 0;
        let graft_round = self.heartbeats % self.config.opportunistic_graft_every.max(1) == 0;
        for topic in topics {
            self.maintain_mesh(&topic, now);
            if choke_round {
                self.score_mesh_deliveries(&topic);
                self.choke_round(&topic);
            }
            if graft_round {
                self.opportunistic_graft(&topic, now);
            }
            self.emit_gossip(&topic);
        }
        for t in self.topics.values_mut() {
            t.backoff.retain(|_, until| *until > now);
        }
        self.mcache
            .set_extra(self.lag.extra_windows(self.config.heartbeat));
        self.mcache.shift();
        self.flush(now);
    }

    pub(super) fn maintain_mesh(&mut self, topic: &str, now: Instant) {
        let (d, d_lo, d_hi) = (self.config.d, self.config.d_lo, self.config.d_hi);
        let scores: Map<PeerId, f64> = self.peers.keys().map(|p| (*p, self.score(p))).collect();
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        // Peers with a negative score leave the mesh.
        let bad: Vec<PeerId> = t
            .mesh
            .keys()
            .filter(|p| scores.get(p).copied().unwrap_or(0.0) < 0.0)
            .copied()
            .collect();
        for p in &bad {
            t.mesh.remove(p);
        }
        let mut grafts = Vec::new();
        if t.mesh.len() < d_lo {
            let mut candidates: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(id, p)| {
                    p.topics.contains(topic)
                        && !t.mesh.contains_key(id)
                        && t.backoff.get(id).is_none_or(|u| *u <= now)
                        && scores.get(id).copied().unwrap_or(0.0) >= 0.0
                })
                .map(|(id, _)| *id)
                .collect();
            candidates.sort();
            self.rng.shuffle(&mut candidates);
            for p in candidates.into_iter().take(d - t.mesh.len()) {
                t.mesh.insert(p, Link::default());
                grafts.push(p);
            }
        }
        let mut prunes = bad;
        if t.mesh.len() > d_hi {
            let mut members: Vec<PeerId> = t.mesh.keys().copied().collect();
            members.sort();
            self.rng.shuffle(&mut members);
            for p in members.into_iter().take(t.mesh.len() - d) {
                t.mesh.remove(&p);
                prunes.push(p);
            }
        }
        for p in grafts {
            self.rpc(p).graft.push(wire::Graft {
                topic: topic.to_string(),
            });
            self.start_link(topic, p);
        }
        for p in prunes {
            self.prune(topic, p, now);
        }
    }

    /// An eager mesh link that delivered nothing in a window in which the topic was
    /// busy is free-riding: it counts a delivery deficit against its peer's score.
    pub(super) fn score_mesh_deliveries(&mut self, topic: &str) {
        let min = self.config.mesh_deficit_min_messages;
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        let busy: u32 = t.mesh.values().map(|l| l.first).sum();
        if busy < min {
            return;
        }
        let idle: Vec<PeerId> = t
            .mesh
            .iter()
            .filter(|(_, l)| !l.we_choked && !l.hushed && l.first == 0 && l.dups == 0)
            .map(|(p, _)| *p)
            .collect();
        for p in idle {
            if let Some(peer) = self.peers.get_mut(&p) {
                peer.score
                    .count(&self.weights, Some(topic), Counter::MeshDeficit, 1.0);
            }
        }
    }

    /// If the mesh's median score is low, graft up to two peers that score above it.
    pub(super) fn opportunistic_graft(&mut self, topic: &str, now: Instant) {
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        if t.mesh.is_empty() {
            return;
        }
        let mut scores: Vec<f64> = t.mesh.keys().map(|p| self.score(p)).collect();
        scores.sort_by(|a, b| a.total_cmp(b));
        let median = scores[scores.len() / 2];
        if median >= self.config.opportunistic_graft_threshold {
            return;
        }
        let mut better: Vec<(PeerId, f64)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.topics.contains(topic)
                    && !t.mesh.contains_key(id)
                    && t.backoff.get(id).is_none_or(|u| *u <= now)
            })
            .map(|(id, p)| (*id, p.score.value(&self.weights)))
            .filter(|(_, s)| *s > median)
            .collect();
        better.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let picks: Vec<PeerId> = better.into_iter().take(2).map(|(p, _)| p).collect();
        if let Some(t) = self.topics.get_mut(topic) {
            for p in &picks {
                t.mesh.entry(*p).or_default();
            }
        }
        for p in picks {
            self.rpc(p).graft.push(wire::Graft {
                topic: topic.to_string(),
            });
            self.start_link(topic, p);
        }
    }

    /// `peer` just joined the mesh of `topic`: it starts choked when enough other
    /// links are eager (see [`GossipConfig::choke_new_links`]).
    pub(super) fn start_link(&mut self, topic: &str, peer: PeerId) {
        if !self.config.choke || !self.config.choke_new_links {
            return;
        }
        let keep = self.config.d_eager_min;
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let eager = t
            .mesh
            .iter()
            .filter(|(p, l)| **p != peer && !l.we_choked)
            .count();
        let Some(l) = t.mesh.get_mut(&peer) else {
            return;
        };
        if eager <= keep || l.we_choked {
            return;
        }
        l.we_choked = true;
        self.rpc(peer).choke.push(wire::Choke {
            topic: topic.to_string(),
        });
    }

    pub(super) fn prune(&mut self, topic: &str, peer: PeerId, now: Instant) {
        let backoff = self.config.prune_backoff;
        if let Some(t) = self.topics.get_mut(topic) {
            t.mesh.remove(&peer);
            t.backoff.insert(peer, now + backoff);
        }
        let mut px: Vec<wire::PeerRecord> = self
            .px
            .iter()
            .filter(|r| r.id != peer)
            .map(PeerRecord::to_wire)
            .collect();
        self.rng.shuffle(&mut px);
        px.truncate(self.config.prune_peers);
        self.rpc(peer).prune.push(wire::Prune {
            topic: topic.to_string(),
            peers: px,
            backoff_secs: backoff.as_secs(),
        });
    }
}
