//! Lazy push: IHAVE/IWANT, choking of duplicate-only links, and IDONTWANT at the
//! first fragment with its deadline.

use super::*;
use crate::collections::Map;

impl Router {
    // ------------------------------------------------------------ receiving

    /// The first fragment of a large gossip RPC from `from` arrived: if it carries a
    /// message we do not have, tell the mesh not to send us copies. Only a mesh peer
    /// of a subscribed topic (the message's, when the fragment shows it) is believed,
    /// for a bounded number of messages at a time and until a deadline: a message
    /// that does not complete by then is fetched elsewhere and costs the announcer.
    pub fn handle_first_fragment(&mut self, from: PeerId, prefix: &[u8], now: Instant) {
        if !self.config.idontwant || !self.config.idontwant_first_fragment {
            return;
        }
        let Some((id, topic)) = message::peek_first(prefix) else {
            return;
        };
        if self.have_or_getting(&id) {
            return;
        }
        let in_mesh = |t: &Topic| t.subscribed && t.mesh.contains_key(&from);
        let mesh_topics: Vec<String> = match &topic {
            Some(name) => self
                .topics
                .get(name)
                .filter(|t| in_mesh(t))
                .map(|_| vec![name.clone()])
                .unwrap_or_default(),
            None => self
                .topics
                .iter()
                .filter(|(_, t)| in_mesh(t))
                .map(|(n, _)| n.clone())
                .collect(),
        };
        if mesh_topics.is_empty() {
            return;
        }
        let deadline = now + self.config.announce_timeout + self.lag.get() * 2;
        let max = self.config.max_announced_per_peer;
        if !self
            .incoming
            .announce(id, from, mesh_topics.clone(), deadline, max)
        {
            return;
        }
        let mut others: Vec<PeerId> = Vec::new();
        for name in &mesh_topics {
            if let Some(t) = self.topics.get_mut(name) {
                for (p, l) in t.mesh.iter_mut().filter(|(p, _)| **p != from) {
                    l.hushed = true;
                    if !others.contains(p) {
                        others.push(*p);
                    }
                }
            }
        }
        others.sort();
        for p in others {
            self.rpc(p).idontwant.push(wire::IDontWant {
                ids: vec![id.to_vec()],
            });
        }
        self.flush(now);
    }

    /// Announcements whose message did not complete in time: penalize the announcer
    /// and ask other mesh peers for the message.
    pub(super) fn expire_announcements(&mut self, now: Instant) {
        let deadline = self.promise_deadline(now);
        for (id, a) in self.incoming.expire(now) {
            if self.seen.contains(&id) {
                continue;
            }
            self.penalize(a.from, Penalty::BrokenAnnouncement);
            let mut holders: Vec<PeerId> = a
                .topics
                .iter()
                .filter_map(|t| self.topics.get(t))
                .flat_map(|t| t.mesh.keys().copied())
                .filter(|p| *p != a.from)
                .collect();
            holders.sort();
            holders.dedup();
            self.rng.shuffle(&mut holders);
            for p in holders.into_iter().take(2) {
                self.promises.insert(id, (p, deadline));
                self.rpc(p).iwant.push(wire::IWant {
                    ids: vec![id.to_vec()],
                });
            }
        }
    }

    pub(super) fn handle_ihave(&mut self, from: PeerId, ihave: wire::IHave, now: Instant) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        // Counted in ids: a choked mesh link announces every message in its own IHAVE
        // entry, and every one of those must get through.
        p.ihaves += ihave.ids.len();
        if p.ihaves > self.config.max_ihave_messages * self.config.max_ihave_length {
            return;
        }
        if !self.topics.get(&ihave.topic).is_some_and(|t| t.subscribed) {
            return;
        }
        // The eager copy is usually on its way: give it the time IWANTs have
        // lately needed not to be premature (see `GossipConfig::iwant_adaptive`).
        let at = now + self.iwant_wait.get(self.config.iwant_delay);
        let implied = self.config.implied_dontwant;
        for raw in ihave.ids.into_iter().take(self.config.max_ihave_length) {
            let Ok(id) = <MessageId>::try_from(raw.as_slice()) else {
                continue;
            };
            if implied {
                self.peer_has(from, id);
            }
            if self.have_or_getting(&id) {
                continue;
            }
            let pending = self.promises.get(&id).or_else(|| self.iwant_due.get(&id));
            if let Some((first, _)) = pending {
                if *first != from {
                    let alt = self.alternates.entry(id).or_default();
                    if alt.len() < MAX_ALTERNATES && !alt.contains(&from) {
                        alt.push(from);
                    }
                }
                continue;
            }
            self.iwant_due.insert(id, (from, at));
        }
    }

    /// Sends the IWANTs whose delay ran out for messages still missing.
    pub(super) fn send_due_iwants(&mut self, now: Instant) {
        let due: Vec<(MessageId, PeerId)> = self
            .iwant_due
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (p, _))| (*id, *p))
            .collect();
        let deadline = self.promise_deadline(now);
        let mut per_peer: Map<PeerId, Vec<Vec<u8>>> = Map::default();
        for (id, peer) in due {
            self.iwant_due.remove(&id);
            if self.have_or_getting(&id) {
                self.alternates.remove(&id);
                continue;
            }
            let peer = if self.peers.contains_key(&peer) {
                peer
            } else {
                match self.next_offerer(&id) {
                    Some(p) => p,
                    None => continue,
                }
            };
            self.promises.insert(id, (peer, deadline));
            per_peer.entry(peer).or_default().push(id.to_vec());
        }
        let mut peers: Vec<_> = per_peer.into_iter().collect();
        peers.sort_by_key(|(p, _)| *p);
        for (peer, ids) in peers {
            self.rpc(peer).iwant.push(wire::IWant { ids });
        }
    }

    /// Whether `id` is here or on its way (complete, announced, or assembling).
    fn have_or_getting(&self, id: &MessageId) -> bool {
        self.seen.contains(id) || self.incoming.contains(id) || self.assembling.contains(id)
    }

    /// The next peer still connected that offered `id`, if any (taken from the list).
    fn next_offerer(&mut self, id: &MessageId) -> Option<PeerId> {
        let alt = self.alternates.get_mut(id)?;
        while !alt.is_empty() {
            let p = alt.remove(0);
            if self.peers.contains_key(&p) {
                return Some(p);
            }
        }
        self.alternates.remove(id);
        None
    }

    /// Promises past their deadline, or whose peer left: the peer that broke one
    /// pays (one that left does not), and the message is asked of the next peer
    /// that offered it.
    pub(super) fn break_promises(&mut self, now: Instant) {
        let mut broken: Vec<(MessageId, PeerId, bool)> = self
            .promises
            .iter()
            .filter_map(|(id, (p, d))| {
                let gone = !self.peers.contains_key(p);
                (*d <= now || gone).then_some((*id, *p, gone))
            })
            .collect();
        broken.sort();
        let deadline = self.promise_deadline(now);
        for (id, p, gone) in broken {
            self.promises.remove(&id);
            if !gone {
                if let Some(peer) = self.peers.get_mut(&p) {
                    peer.score.broken_promises += 1.0;
                }
            }
            if self.have_or_getting(&id) {
                self.alternates.remove(&id);
                continue;
            }
            if let Some(next) = self.next_offerer(&id) {
                self.promises.insert(id, (next, deadline));
                self.rpc(next).iwant.push(wire::IWant {
                    ids: vec![id.to_vec()],
                });
            }
        }
    }

    pub(super) fn handle_iwant(&mut self, from: PeerId, iwant: wire::IWant) {
        let max = self.config.max_iwant_replies;
        let mut msgs = Vec::new();
        let mut streams = Vec::new();
        for raw in iwant.ids.iter().take(self.config.max_ihave_length) {
            let Ok(id) = <MessageId>::try_from(raw.as_slice()) else {
                continue;
            };
            match self.mcache.get_for_iwant(&id, from, max) {
                Some(Cached::Whole(m)) => msgs.push(m.clone()),
                // The chunks are shared buffers: answering costs no copy of the data.
                Some(Cached::Stream(head, chunks)) => {
                    streams.push((id, head.clone(), chunks.clone()))
                }
                None => {}
            }
        }
        self.rpc(from).publish.extend(msgs);
        for (id, head, chunks) in streams {
            self.send_stream(from, id, &head, &chunks);
        }
    }

    /// Chokes mesh links that mostly brought duplicates in the last window. The
    /// `d_eager_min` links that delivered first most often always stay eager.
    pub(super) fn choke_round(&mut self, topic: &str) {
        let (keep, dups) = (self.config.d_eager_min, self.config.choke_duplicates);
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let mut ranked: Vec<(PeerId, u32, u32, bool)> = t
            .mesh
            .iter()
            .map(|(p, l)| (*p, l.first, l.dups, l.we_choked))
            .collect();
        // Most first deliveries first; ties: fewer duplicates, then id (deterministic).
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        let mut chokes = Vec::new();
        let mut unchokes = Vec::new();
        for (rank, (p, first, dup, choked)) in ranked.into_iter().enumerate() {
            let Some(l) = t.mesh.get_mut(&p) else {
                continue;
            };
            if !self.config.choke {
                // Only the window's counters start over.
            } else if rank < keep {
                if choked {
                    l.we_choked = false;
                    unchokes.push(p);
                }
            } else if !choked && dup >= dups && first * 3 < dup {
                l.we_choked = true;
                chokes.push(p);
            }
            l.first = 0;
            l.dups = 0;
            l.hushed = false;
        }
        for p in chokes {
            self.rpc(p).choke.push(wire::Choke {
                topic: topic.to_string(),
            });
        }
        for p in unchokes {
            self.rpc(p).unchoke.push(wire::Unchoke {
                topic: topic.to_string(),
            });
        }
    }

    pub(super) fn emit_gossip(&mut self, topic: &str) {
        let ids = self.mcache.gossip_ids(topic);
        if ids.is_empty() {
            return;
        }
        let threshold = self.config.gossip_threshold;
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        let mut targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.topics.contains(topic)
                    && !t.mesh.contains_key(id)
                    && p.score.value(&self.weights) >= threshold
            })
            .map(|(id, _)| *id)
            .collect();
        targets.sort();
        self.rng.shuffle(&mut targets);
        let ids: Vec<MessageId> = ids.into_iter().take(self.config.max_ihave_length).collect();
        let once = self.config.gossip_offer_once;
        for p in targets.into_iter().take(self.config.d_lazy) {
            // Not the ids the peer showed it has, nor those offered it before: the
            // gossip windows overlap (and stretch with the lag), and a peer that had
            // an id offered could already ask for it. Offered again, at 1 KiB the
            // repeats were a sixth of all bytes (S1, 256 nodes).
            let offer: Vec<Vec<u8>> = match self.peers.get_mut(&p) {
                Some(peer) => ids
                    .iter()
                    .filter(|i| !peer.dontwant.contains(i) && (!once || peer.offered.insert(**i)))
                    .map(|i| i.to_vec())
                    .collect(),
                None => continue,
            };
            if !offer.is_empty() {
                self.rpc(p).ihave.push(wire::IHave {
                    topic: topic.to_string(),
                    ids: offer,
                });
            }
        }
    }

    /// Offers `id` with IHAVE to `peer`, which asked for IHAVE instead of messages.
    /// At once if the peer still pushes to us (the IHAVE also tells it we have the
    /// message); on a link choked both ways it only offers repair, so it is held
    /// for up to `ihave_batch` and goes out with the others held by then.
    pub(super) fn offer_lazily(
        &mut self,
        peer: PeerId,
        topic: &str,
        id: MessageId,
        we_choked: bool,
        now: Instant,
    ) {
        let held_ids = |h: &HeldIhaves| h.iter().map(|(_, ids)| ids.len()).sum();
        let full = self.lazy.get(&peer).map_or(0, held_ids) >= self.config.max_ihave_length;
        if !we_choked || self.config.ihave_batch.is_zero() || full {
            self.rpc(peer).ihave.push(wire::IHave {
                topic: topic.to_string(),
                ids: vec![id.to_vec()],
            });
            return;
        }
        let held = self.lazy.entry(peer).or_default();
        match held.iter_mut().find(|(t, _)| t == topic) {
            Some((_, ids)) => ids.push(id),
            None => held.push((topic.to_string(), vec![id])),
        }
        if self.lazy_due.is_none() {
            self.lazy_due = Some(now + self.config.ihave_batch);
        }
    }

    /// The held IHAVEs whose time came: one IHAVE per topic per peer, without the
    /// ids the peer showed it has (a copy, an IHAVE or IDONTWANT) in the meantime.
    pub(super) fn send_held_ihaves(&mut self, now: Instant) {
        if self.lazy_due.is_none_or(|at| at > now) {
            return;
        }
        self.lazy_due = None;
        let mut held: Vec<(PeerId, HeldIhaves)> = self.lazy.drain().collect();
        held.sort_by_key(|(p, _)| *p);
        for (peer, topics) in held {
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            let ihaves: Vec<wire::IHave> = topics
                .into_iter()
                .map(|(topic, ids)| wire::IHave {
                    topic,
                    ids: ids
                        .iter()
                        .filter(|id| !p.dontwant.contains(id))
                        .map(|id| id.to_vec())
                        .collect(),
                })
                .filter(|i| !i.ids.is_empty())
                .collect();
            self.rpc(peer).ihave.extend(ihaves);
        }
    }
}
