//! Streamed messages through the router: a head is checked (shape, then room, then
//! the signature) and forwarded at once; each chunk is checked against its hash and
//! forwarded as it arrives; the whole message is validated and delivered when its
//! last chunk is in.
//!
//! Forwarding before the application's validator has seen the message is the point
//! of cut-through, so a forwarder cannot be blamed for what the validator rejects:
//! a rejected stream costs only its origin (when it is the sender), and the origin's
//! later streams wait for validation before they go on.

use super::*;
use crate::gossip::assembly::Assembly;
use crate::gossip::stream::HeadError;

/// Origins remembered as having had a message rejected.
const MAX_SUSPECT_ORIGINS: usize = 1024;
/// Mesh peers asked for a stream that stalled.
const FETCH_FROM: usize = 2;

/// The order in which mesh peers are offered message `id` chunk by chunk.
fn rank(id: &MessageId, peer: &PeerId) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(id);
    ctx.update(peer.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

impl Router {
    /// A stream head from `from`; `false` when the rest of its RPC is to be dropped.
    pub(super) fn handle_head(
        &mut self,
        from: PeerId,
        head: wire::StreamHead,
        now: Instant,
    ) -> bool {
        let chunks = match stream::check_head(&head, self.config.max_message_size) {
            Ok(n) => n,
            Err(HeadError::TooLarge) => {
                self.penalize(from, Penalty::OversizedMessage);
                return false;
            }
            Err(HeadError::Malformed) => {
                self.penalize(from, Penalty::MalformedStream);
                return false;
            }
        };
        if !self.topics.get(&head.topic).is_some_and(|t| t.subscribed) {
            return true;
        }
        let id = stream::head_id(&head);
        if self.seen.contains(&id) || self.assembling.contains(&id) {
            // A copy we have or are getting: its sender need not send the chunks.
            // Nor the chunks we queued for it.
            self.peer_has(from, id);
            if let Some(a) = self.assembling.get_mut(&id) {
                a.forward_to.retain(|p| *p != from);
                // A peer whose head commits to the same chunks answers for its chunks
                // as the first did; one with another version (an origin signing two
                // messages under one seqno) does not: its chunks just do not fit.
                let same = head.size == a.head.size
                    && head.chunk_size == a.head.chunk_size
                    && head.chunk_hashes == a.head.chunk_hashes;
                if same && from != a.from && !a.same_head.contains(&from) {
                    a.same_head.push(from);
                }
            }
            if self.config.idontwant {
                self.rpc(from).idontwant.push(wire::IDontWant {
                    ids: vec![id.to_vec()],
                });
            }
            let lag = self
                .seen
                .first_seen(&id)
                .map(|t| now.saturating_duration_since(t));
            self.count_duplicate(from, head.topic, lag);
            return true;
        }
        let max_bytes = self.config.max_assembly_bytes as u64;
        let per_peer = self.config.max_announced_per_peer;
        if self
            .assembling
            .room(&from, head.size, per_peer, max_bytes)
            .is_err()
        {
            // Not seen: it can still come later, from anyone, by IHAVE/IWANT.
            if let Some(t) = self.topics.get_mut(&head.topic) {
                t.metrics.streams_deferred += 1;
            }
            return true;
        }
        let budget = self.peers.get_mut(&from).map(|p| &mut p.verify_budget);
        if !budget.is_some_and(|b| b.try_take(1.0, now)) {
            if let Some(t) = self.topics.get_mut(&head.topic) {
                t.metrics.over_budget += 1;
            }
            return true;
        }
        self.signature_checks += 1;
        let Ok(origin) = stream::verify_head(&head) else {
            self.penalize(from, Penalty::BadSignature);
            return false;
        };
        self.incoming.complete(&id);
        let cut = !self.suspect_origins.contains(&origin);
        let hops = head.hops;
        let mut forward = head;
        forward.hops = hops.saturating_add(1);
        let (mut forward_to, mut later) = (Vec::new(), Vec::new());
        let eager = if cut { self.config.stream_eager } else { 0 };
        let mut mesh: Vec<(PeerId, bool)> = self
            .topics
            .get(&forward.topic)
            .map(|t| t.mesh.iter().map(|(p, l)| (*p, l.choked_by_peer)).collect())
            .unwrap_or_default();
        // Which mesh peers get it chunk by chunk: a different few for each message
        // (ranked by a hash of id and peer), so no link carries every stream first.
        mesh.sort_by_key(|(p, _)| rank(&id, p));
        for (p, choked) in mesh {
            if p == from || p == origin {
                continue;
            }
            if self.config.idontwant {
                // Backed by the origin's signature: no peer can hush us on its word.
                if let Some(l) = self
                    .topics
                    .get_mut(&forward.topic)
                    .and_then(|t| t.mesh.get_mut(&p))
                {
                    l.hushed = true;
                }
                self.rpc(p).idontwant.push(wire::IDontWant {
                    ids: vec![id.to_vec()],
                });
            }
            let dontwant = self.peers.get(&p).is_some_and(|x| x.dontwant.contains(&id));
            if choked || dontwant {
                continue;
            }
            if forward_to.len() < eager {
                self.rpc(p).head.push(forward.clone());
                forward_to.push(p);
            } else {
                later.push(p);
            }
        }
        self.assembling.start(
            id,
            Assembly {
                head: forward,
                hops,
                origin,
                from,
                chunks: vec![None; chunks],
                missing: chunks,
                forward_to,
                later,
                same_head: Vec::new(),
                from_delivered: 0,
                deadline: now + self.config.announce_timeout + self.lag.get() * 2,
            },
        );
        true
    }

    /// A chunk from `from`; `false` when the rest of its RPC is to be dropped.
    pub(super) fn handle_chunk(
        &mut self,
        from: PeerId,
        chunk: wire::StreamChunk,
        now: Instant,
    ) -> bool {
        let Ok(id) = <MessageId>::try_from(chunk.id.as_slice()) else {
            self.penalize(from, Penalty::BadChunk);
            return false;
        };
        // Not assembling: complete already, given up, deferred, or not our topic.
        let Some(a) = self.assembling.get_mut(&id) else {
            return true;
        };
        let index = chunk.index as usize;
        if a.chunks.get(index).is_some_and(|c| c.is_some()) {
            // A second source's copy of a chunk we have.
            return true;
        }
        if index >= a.chunks.len() || !stream::chunk_matches(&a.head, index, &chunk.data) {
            // Only a peer that sent us this very head is bound by its hashes.
            if from == a.from || a.same_head.contains(&from) {
                self.penalize(from, Penalty::BadChunk);
                return false;
            }
            return true;
        }
        if from == a.from {
            a.from_delivered += 1;
        }
        let rpc = stream::chunk_rpc(&id, chunk.index, chunk.data);
        for p in &a.forward_to {
            let dontwant = self.peers.get(p).is_some_and(|x| x.dontwant.contains(&id));
            if !dontwant {
                self.chunk_sends.push((*p, id, rpc.clone()));
            }
        }
        a.chunks[index] = Some(rpc);
        a.missing -= 1;
        if a.missing == 0 {
            self.complete_stream(id, from, now);
        }
        true
    }

    /// The last chunk of `id` came from `last_from`: validate, deliver, cache, and
    /// send it on where cut-through did not.
    fn complete_stream(&mut self, id: MessageId, last_from: PeerId, now: Instant) {
        let Some(mut a) = self.assembling.remove(&id) else {
            return;
        };
        let chunks: Vec<Arc<Vec<u8>>> = std::mem::take(&mut a.chunks)
            .into_iter()
            .flatten()
            .collect();
        let mut data = Vec::with_capacity(a.head.size as usize);
        for (i, c) in chunks.iter().enumerate() {
            // A chunk RPC ends with the chunk's data (its last field, nothing after).
            let len = stream::chunk_len(&a.head, i);
            data.extend_from_slice(&c[c.len() - len..]);
        }
        let topic_name = a.head.topic.clone();
        // As for whole messages: no room to wait for a verdict, dropped unseen (the
        // assembly budget bounded it until now; the deferred bound takes over).
        if self.config.deferred_validation && !self.deferral_room(data.len()) {
            if let Some(t) = self.topics.get_mut(&topic_name) {
                t.metrics.verdicts_no_room += 1;
            }
            return;
        }
        self.seen.insert(id, now);
        let via_iwant = self.keep_promise(&id, last_from);
        let verdict = match &self.validator {
            Some(v) => v(&topic_name, &data),
            None => Validation::Accept,
        };
        match verdict {
            Validation::Reject => return self.reject_stream(&a),
            Validation::Ignore => return,
            Validation::Accept => {}
        }
        // Credited to the peer whose head started it (it carried most of the chunks,
        // or the chunks came from copies it made us ask for).
        let from = if a.from_delivered > 0 {
            a.from
        } else {
            last_from
        };
        let event = GossipEvent {
            topic: topic_name,
            id,
            origin: Some(a.origin),
            from,
            hops: a.hops,
            origin_time: delay::origin_time(a.head.origin_time_micros),
            data,
            needs_verdict: false,
        };
        if self.config.deferred_validation {
            let held = deferred::Held::Stream {
                assembly: Box::new(a),
                chunks,
                from,
                via_iwant,
            };
            return self.defer(id, held, event, now);
        }
        self.forward_stream(id, a, chunks, from, via_iwant, now);
        self.outputs.push_back(GossipOutput::Deliver(event));
    }

    /// A streamed message the application rejected: counted, its origin suspect,
    /// and the origin penalized if it sent it to us itself.
    pub(super) fn reject_stream(&mut self, a: &Assembly) {
        if let Some(t) = self.topics.get_mut(&a.head.topic) {
            t.metrics.rejected += 1;
        }
        if !self.suspect_origins.contains(&a.origin) {
            if self.suspect_origins.len() >= MAX_SUSPECT_ORIGINS {
                self.suspect_origins.pop_front();
            }
            self.suspect_origins.push_back(a.origin);
        }
        // Forwarders passed it on unvalidated, as cut-through must: only the
        // origin itself answers for it.
        if a.from == a.origin {
            self.penalize_in(a.from, Penalty::InvalidMessage, &a.head.topic);
        }
    }

    /// An accepted stream: `from` credited, the stream cached and sent whole to the
    /// mesh peers that cut-through did not reach.
    pub(super) fn forward_stream(
        &mut self,
        id: MessageId,
        a: Assembly,
        chunks: Vec<Arc<Vec<u8>>>,
        from: PeerId,
        via_iwant: bool,
        now: Instant,
    ) {
        let topic_name = a.head.topic.clone();
        let stamp = (a.hops, a.head.origin_time_micros);
        let mesh = self.record_first_delivery(from, &topic_name, stamp, via_iwant, now);
        for (p, choked, we_choked) in mesh {
            if p == a.from || p == a.origin || a.forward_to.contains(&p) {
                continue;
            }
            // Those that got it from someone else meanwhile said so (IDONTWANT).
            if self.peers.get(&p).is_some_and(|x| x.dontwant.contains(&id)) {
                continue;
            }
            if choked {
                self.offer_lazily(p, &topic_name, id, we_choked, now);
            } else if a.later.contains(&p) {
                self.send_stream(p, id, &a.head, &chunks);
            }
        }
        self.mcache.put(id, Cached::Stream(a.head, chunks));
    }

    /// Queues a whole stream for `peer`: the head now, the chunks after it.
    pub(super) fn send_stream(
        &mut self,
        peer: PeerId,
        id: MessageId,
        head: &wire::StreamHead,
        chunks: &[Arc<Vec<u8>>],
    ) {
        self.rpc(peer).head.push(head.clone());
        self.chunk_sends
            .extend(chunks.iter().map(|c| (peer, id, c.clone())));
    }

    /// Publishes our own stream to the mesh (or flood targets, by size).
    pub(super) fn publish_stream(
        &mut self,
        head: wire::StreamHead,
        chunks: Vec<Arc<Vec<u8>>>,
        now: Instant,
    ) -> Result<MessageId, PublishError> {
        let id = stream::head_id(&head);
        let topic = head.topic.clone();
        let mut targets = self.publish_targets(&topic, head.size as usize);
        // A few first, whole and in turn (each at the full uplink rate); the mesh
        // they forward to covers the rest sooner than our uplink would.
        targets.sort_by_key(|p| rank(&id, p));
        targets.truncate(self.config.stream_publish.max(1));
        self.seen.insert(id, now);
        self.topics.entry(topic).or_default().metrics.published += 1;
        for p in &targets {
            self.send_stream(*p, id, &head, &chunks);
        }
        self.mcache.put(id, Cached::Stream(head, chunks));
        if targets.is_empty() {
            return Err(PublishError::NoPeers);
        }
        self.flush(now);
        Ok(id)
    }

    /// Streams past their deadline: given up, and asked for from other mesh peers;
    /// the peer whose head started one and that sent none of its chunks pays.
    pub(super) fn expire_streams(&mut self, now: Instant) {
        let deadline = self.promise_deadline(now);
        for (id, a) in self.assembling.expire(now) {
            if let Some(t) = self.topics.get_mut(&a.head.topic) {
                t.metrics.streams_expired += 1;
            }
            if a.from_delivered == 0 {
                self.penalize(a.from, Penalty::BrokenAnnouncement);
            }
            let mut holders: Vec<PeerId> = self
                .topics
                .get(&a.head.topic)
                .map(|t| t.mesh.keys().copied().filter(|p| *p != a.from).collect())
                .unwrap_or_default();
            holders.sort();
            self.rng.shuffle(&mut holders);
            for p in holders.into_iter().take(FETCH_FROM) {
                self.promises.insert(id, (p, deadline));
                self.rpc(p).iwant.push(wire::IWant {
                    ids: vec![id.to_vec()],
                });
            }
        }
    }
}
