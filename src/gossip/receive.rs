//! The receive path: an RPC's shape before decoding, subscriptions, published
//! messages (cheap checks before signatures), GRAFT, PRUNE and IDONTWANT.

use super::*;
use crate::gossip::deferred::Whole;

impl Router {
    /// An RPC from `from`. Its shape is checked on the raw bytes before decoding;
    /// then the cheap checks (graylist, subscription, seen cache, budget) come before
    /// any signature check, and the first bad signature ends the RPC.
    pub fn handle_rpc(&mut self, from: PeerId, bytes: &[u8], now: Instant) {
        if !self.peers.contains_key(&from) {
            return;
        }
        if self.score(&from) < self.config.graylist_threshold {
            return;
        }
        if let Err(e) = rpc::check_shape(bytes, &self.config.rpc_limits) {
            return self.penalize(from, Penalty::OverLimits(e));
        }
        let Ok(rpc) = wire::GossipRpc::decode(bytes) else {
            return self.penalize(from, Penalty::Undecodable);
        };
        self.handle_subscriptions(from, &rpc, now);
        for msg in rpc.publish {
            if self.score(&from) < self.config.graylist_threshold {
                break;
            }
            if !self.handle_message(from, msg, now) {
                break;
            }
        }
        for head in rpc.head {
            if self.score(&from) < self.config.graylist_threshold {
                break;
            }
            if !self.handle_head(from, head, now) {
                break;
            }
        }
        for chunk in rpc.chunk {
            if !self.handle_chunk(from, chunk, now) {
                break;
            }
        }
        let gossip_ok = self.score(&from) >= self.config.gossip_threshold;
        if gossip_ok {
            for ihave in rpc.ihave {
                self.handle_ihave(from, ihave, now);
            }
            for iwant in rpc.iwant {
                self.handle_iwant(from, iwant);
            }
        }
        for g in rpc.graft {
            self.handle_graft(from, g.topic, now);
        }
        // Peer exchange is read from one PRUNE per RPC at most.
        let mut px_allowed = true;
        for p in rpc.prune {
            self.handle_prune(from, p, &mut px_allowed, now);
        }
        for d in rpc.idontwant {
            self.handle_idontwant(from, d);
        }
        let chokes = rpc.choke.into_iter().map(|c| (c.topic, true));
        for (topic, choked) in chokes.chain(rpc.unchoke.into_iter().map(|u| (u.topic, false))) {
            if let Some(l) = self
                .topics
                .get_mut(&topic)
                .and_then(|t| t.mesh.get_mut(&from))
            {
                l.choked_by_peer = choked;
            }
        }
        self.flush(now);
    }

    pub(super) fn handle_subscriptions(
        &mut self,
        from: PeerId,
        rpc: &wire::GossipRpc,
        now: Instant,
    ) {
        let max = self.config.max_topics_per_peer;
        let mut too_many = false;
        if let Some(p) = self.peers.get_mut(&from) {
            for t in &rpc.unsubscribe {
                p.topics.remove(t);
            }
            for t in &rpc.subscribe {
                let full = p.topics.len() >= max && !p.topics.contains(t);
                if full || t.len() > MAX_TOPIC_LEN {
                    too_many = true;
                    break;
                }
                p.topics.insert(t.clone());
            }
        }
        for t in &rpc.unsubscribe {
            if let Some(topic) = self.topics.get_mut(t) {
                topic.mesh.remove(&from);
            }
        }
        if too_many {
            self.penalize(from, Penalty::TopicLimits);
        }
        // A new subscriber to a topic whose mesh is short: graft it now, not at the
        // next heartbeat, so a network forms quickly.
        for t in &rpc.subscribe {
            let short = self
                .topics
                .get(t)
                .is_some_and(|x| x.subscribed && x.mesh.len() < self.config.d_lo);
            if short {
                self.maintain_mesh(t, now);
            }
        }
    }

    /// Handles one published message; `false` when the rest of its RPC is to be
    /// dropped (the sender just proved itself a liar).
    pub(super) fn handle_message(
        &mut self,
        from: PeerId,
        msg: wire::GossipMessage,
        now: Instant,
    ) -> bool {
        if msg.data.len() > self.config.max_message_size {
            self.penalize(from, Penalty::OversizedMessage);
            return false;
        }
        // Not our topic: no work at all (and nothing marked seen on its word).
        if !self.topics.get(&msg.topic).is_some_and(|t| t.subscribed) {
            return true;
        }
        let id = message::message_id(&msg);
        let topic_name = msg.topic.clone();
        if self.config.implied_dontwant {
            self.peer_has(from, id);
        }
        if self.seen.contains(&id) {
            let lag = self
                .seen
                .first_seen(&id)
                .map(|t| now.saturating_duration_since(t));
            self.count_duplicate(from, topic_name, lag);
            return true;
        }
        // No room to wait for a verdict: dropped before the signature costs anything,
        // and not marked seen, so a later copy may still get in.
        if self.config.deferred_validation && !self.deferral_room(msg.data.len()) {
            if let Some(t) = self.topics.get_mut(&topic_name) {
                t.metrics.verdicts_no_room += 1;
            }
            return true;
        }
        let budget = self.peers.get_mut(&from).map(|p| &mut p.verify_budget);
        if !budget.is_some_and(|b| b.try_take(1.0, now)) {
            if let Some(t) = self.topics.get_mut(&topic_name) {
                t.metrics.over_budget += 1;
            }
            return true;
        }
        // The signature is checked once per id: a copy that fails does not mark the id
        // seen, so the genuine message still gets through.
        self.signature_checks += 1;
        let origin = match message::verify(&msg, self.config.sign) {
            Ok(origin) => origin,
            Err(_) => {
                self.penalize(from, Penalty::BadSignature);
                return false;
            }
        };
        // A genuine copy keeps an IWANT promise for it, whatever the verdict and
        // however long a deferred one takes.
        let via_iwant = self.keep_promise(&id, from);
        let verdict = match &self.validator {
            Some(v) => v(&topic_name, &msg.data),
            None => Validation::Accept,
        };
        self.seen.insert(id, now);
        match verdict {
            Validation::Reject => {
                self.incoming.complete(&id);
                if let Some(t) = self.topics.get_mut(&topic_name) {
                    t.metrics.rejected += 1;
                }
                self.penalize_in(from, Penalty::InvalidMessage, &topic_name);
                return false;
            }
            Validation::Ignore => {
                self.incoming.complete(&id);
                return true;
            }
            Validation::Accept => {}
        }
        let arrival = Whole {
            from,
            origin,
            announced: self.incoming.complete(&id),
            via_iwant,
            msg,
        };
        let event = GossipEvent {
            topic: topic_name,
            id,
            origin,
            from,
            hops: arrival.msg.hops,
            origin_time: delay::origin_time(arrival.msg.origin_time_micros),
            data: Vec::new(),
            needs_verdict: false,
        };
        if self.config.deferred_validation {
            let event = GossipEvent {
                data: arrival.msg.data.clone(),
                ..event
            };
            self.defer(id, deferred::Held::Whole(arrival), event, now);
            return true;
        }
        self.forward_whole(id, &event.topic, &arrival, now);
        self.outputs.push_back(GossipOutput::Deliver(GossipEvent {
            data: arrival.msg.data,
            ..event
        }));
        true
    }

    /// An accepted message `id` of `topic_name`: its first sender credited, the
    /// message cached and sent on to the mesh (an IHAVE on choked links).
    pub(super) fn forward_whole(
        &mut self,
        id: MessageId,
        topic_name: &str,
        arrival: &Whole,
        now: Instant,
    ) {
        let Whole {
            from,
            origin,
            ref msg,
            announced: already_announced,
            via_iwant,
        } = *arrival;
        let large = self.config.idontwant && msg.data.len() >= self.config.idontwant_min_size;
        let mesh = self.record_first_delivery(
            from,
            topic_name,
            (msg.hops, msg.origin_time_micros),
            via_iwant,
            now,
        );
        let mut forward = msg.clone();
        forward.hops = msg.hops.saturating_add(1);
        self.mcache.put(id, Cached::Whole(forward.clone()));
        let implied = self.config.implied_dontwant;
        let mut eager = Vec::new();
        for (p, choked, we_choked) in mesh {
            if p == from || origin == Some(p) {
                continue;
            }
            let dontwant = self.peers.get(&p).is_some_and(|x| x.dontwant.contains(&id));
            if dontwant {
                continue;
            }
            if large && !already_announced {
                let link = self
                    .topics
                    .get_mut(topic_name)
                    .and_then(|t| t.mesh.get_mut(&p));
                if let Some(l) = link {
                    l.hushed = true;
                }
                if !implied {
                    self.rpc(p).idontwant.push(wire::IDontWant {
                        ids: vec![id.to_vec()],
                    });
                }
            }
            if choked {
                self.offer_lazily(p, topic_name, id, we_choked, now);
            } else {
                eager.push(p);
            }
        }
        self.push_copies(forward, eager);
    }

    /// The first copy of a message came from `from`, `hops` from its origin and
    /// stamped `origin_time_micros` (in answer to our IWANT when `via_iwant`): the
    /// scores, the link's first deliveries (a choked link that was first through
    /// IWANT is unchoked), the topic's counters and delay. Returns the mesh, each
    /// peer with whether it choked us and whether we choked it.
    pub(super) fn record_first_delivery(
        &mut self,
        from: PeerId,
        topic_name: &str,
        (hops, origin_time_micros): (u32, u64),
        via_iwant: bool,
        now: Instant,
    ) -> Vec<(PeerId, bool, bool)> {
        let stamp = self.stamp_and_arrival(origin_time_micros, now);
        if let Some(p) = self.peers.get_mut(&from) {
            p.score
                .count(&self.weights, Some(topic_name), Counter::FirstDelivery, 1.0);
        }
        let Some(topic) = self.topics.get_mut(topic_name) else {
            return Vec::new();
        };
        let mut unchoke = false;
        if let Some(l) = topic.mesh.get_mut(&from) {
            l.first += 1;
            // A choked link that brought news first (through IWANT) is faster: use it.
            if via_iwant && l.we_choked {
                l.we_choked = false;
                unchoke = true;
            }
        }
        let m = &mut topic.metrics;
        m.deliveries += 1;
        m.hops[(hops as usize).min(15)] += 1;
        if let Some(stamp) = stamp {
            m.record_delay(stamp);
        }
        if m.first_sources.len() < 64 || m.first_sources.contains_key(&from) {
            *m.first_sources.entry(from).or_default() += 1;
        }
        let mesh: Vec<(PeerId, bool, bool)> = topic
            .mesh
            .iter()
            .map(|(p, l)| (*p, l.choked_by_peer, l.we_choked))
            .collect();
        if unchoke {
            self.rpc(from).unchoke.push(wire::Unchoke {
                topic: topic_name.to_string(),
            });
        }
        mesh
    }

    /// A copy of a message we already had came from `from`, `lag` after the first:
    /// counted, and the link may go lazy.
    pub(super) fn count_duplicate(
        &mut self,
        from: PeerId,
        topic_name: String,
        lag: Option<Duration>,
    ) {
        if let Some(l) = lag {
            self.lag.observe(l);
        }
        let keep = self.config.d_eager_min;
        // A copy that came about as soon as the first lost a race, not a slow link:
        // choking it would leave us a tree of fewer, not faster, links.
        let slow = lag.is_none_or(|l| l >= self.config.choke_min_lag);
        let mut choke = false;
        if let Some(t) = self.topics.get_mut(&topic_name) {
            t.metrics.duplicates += 1;
            let eager = t.mesh.values().filter(|l| !l.we_choked).count();
            if let Some(l) = t.mesh.get_mut(&from) {
                l.dups += 1;
                // Plumtree: a link that brought a copy we already had goes lazy,
                // as long as enough links stay eager.
                let lost = l.dups >= self.config.choke_after;
                if self.config.choke && slow && lost && !l.we_choked && eager > keep {
                    l.we_choked = true;
                    choke = true;
                }
            }
        }
        if choke {
            self.rpc(from).choke.push(wire::Choke { topic: topic_name });
        }
    }

    pub(super) fn handle_graft(&mut self, from: PeerId, topic: String, now: Instant) {
        let score = self.score(&from);
        let d_max = self.config.d_max.max(self.config.d_hi);
        let Some(t) = self.topics.get_mut(&topic) else {
            return self.prune(&topic, from, now);
        };
        let backing_off = t.backoff.get(&from).is_some_and(|until| *until > now);
        if !t.subscribed || score < 0.0 || backing_off || t.mesh.len() >= d_max {
            if backing_off {
                self.penalize(from, Penalty::GraftDuringBackoff);
            }
            return self.prune(&topic, from, now);
        }
        if let std::collections::hash_map::Entry::Vacant(e) = t.mesh.entry(from) {
            e.insert(Link::default());
            self.start_link(&topic, from);
        }
    }

    /// A PRUNE. Its peer-exchange records are only read when the pruning peer was
    /// in our mesh of a topic we need peers for, from one PRUNE per RPC, and a
    /// forged record costs the sender and ends the reading.
    pub(super) fn handle_prune(
        &mut self,
        from: PeerId,
        prune: wire::Prune,
        px_allowed: &mut bool,
        now: Instant,
    ) {
        let backoff = Duration::from_secs(prune.backoff_secs).max(self.config.prune_backoff);
        let short = if let Some(t) = self.topics.get_mut(&prune.topic) {
            let was_mesh = t.mesh.remove(&from).is_some();
            t.backoff
                .insert(from, now + backoff.min(Duration::from_secs(3600)));
            was_mesh && t.subscribed && t.mesh.len() < self.config.d_lo
        } else {
            false
        };
        if !short || prune.peers.is_empty() || !std::mem::take(px_allowed) {
            return;
        }
        let mut records = Vec::new();
        for raw in prune.peers.into_iter().take(self.config.prune_peers) {
            self.signature_checks += 1;
            match PeerRecord::verify(raw) {
                Ok(r) if !self.peers.contains_key(&r.id) => records.push(r),
                Ok(_) => {}
                Err(_) => {
                    self.penalize(from, Penalty::ForgedPeerExchange);
                    return;
                }
            }
        }
        if !records.is_empty() {
            self.outputs
                .push_back(GossipOutput::Connect { from, records });
        }
    }

    pub(super) fn handle_idontwant(&mut self, from: PeerId, d: wire::IDontWant) {
        if !self.peers.contains_key(&from) {
            return;
        }
        for raw in d.ids.into_iter().take(self.config.max_ihave_length) {
            let Ok(id) = <MessageId>::try_from(raw.as_slice()) else {
                continue;
            };
            self.peer_has(from, id);
        }
    }
}
