//! The DHT in the node: lookup-only connections, carrying Kademlia messages, and
//! lookups the application asked for.

use super::*;

impl NodeCore {
    /// A lookup-only connection ended: what waited for it fails.
    pub(super) fn lookup_conn_gone(&mut self, id: ConnId, peer: Option<PeerId>, now: Instant) {
        self.dial_back_lost(id, peer, now);
        let Some(peer) = peer else { return };
        if self.kad_conns.get(&peer) == Some(&id) {
            self.kad_conns.remove(&peer);
            self.requests_peer_gone(peer);
            if self.kad_waiting.remove(&peer).is_some() {
                if let Some(kad) = &mut self.kad {
                    kad.on_unreachable(peer, now);
                }
            }
            self.drain_kad(now);
        }
    }

    pub(super) fn close_idle_lookup_conns(&mut self, now: Instant) {
        let idle = self.config.lookup_idle;
        let ids: Vec<(ConnId, Option<PeerId>)> = self
            .conns
            .iter()
            .filter(|(_, e)| {
                e.lookup_only
                    && e.conn.is_established()
                    && !e.conn.is_closing()
                    && e.last_active + idle <= now
            })
            .map(|(id, e)| (*id, e.conn.remote()))
            .collect();
        for (id, peer) in ids {
            if peer.is_some_and(|p| self.requests.busy_with(p)) {
                // Requests wait on it either way: idle only from now.
                if let Some(e) = self.conns.get_mut(&id) {
                    e.last_active = now;
                }
                continue;
            }
            self.close_conn(id, LocalClose::Requested, true, now);
            // A closing connection carries nothing new: the next DHT message or
            // request to the peer dials afresh instead of failing on this one.
            if let Some(peer) = peer {
                if self.kad_conns.get(&peer) == Some(&id) {
                    self.kad_conns.remove(&peer);
                }
            }
        }
    }

    pub(super) fn user_lookup(
        &mut self,
        key: Key,
        kind: LookupKind,
        reply: Option<RequestId>,
        now: Instant,
    ) {
        let Some(kad) = &mut self.kad else { return };
        let id = match kind {
            LookupKind::GetProviders => kad.find_providers(key, now),
            _ => kad.find_node(key, now),
        };
        if let Some(id) = id {
            match reply {
                Some(request) => {
                    self.lookup_waiters.insert(id, request);
                }
                None => {
                    self.user_lookups.insert(id);
                }
            }
        }
        self.drain_kad(now);
    }

    /// Carries out what the DHT asked for: messages, penalties, finished lookups.
    /// Sends that fail at once feed back into the DHT, so this loops until it is quiet.
    pub(super) fn drain_kad(&mut self, now: Instant) {
        loop {
            let Some(kad) = &mut self.kad else { return };
            let outputs: Vec<KadOutput> = std::iter::from_fn(|| kad.poll_output()).collect();
            let results: Vec<LookupResult> = std::iter::from_fn(|| kad.poll_result()).collect();
            if outputs.is_empty() && results.is_empty() {
                return;
            }
            for out in outputs {
                match out {
                    KadOutput::Send { peer, addrs, bytes } => {
                        self.send_kad(peer, addrs, bytes, now)
                    }
                    KadOutput::DialBack { peer, addrs } => self.dial_back(peer, addrs, now),
                    KadOutput::Misbehaved { peer, reason } => {
                        log::debug!("peer {} misbehaved in the DHT: {reason}", peer.short());
                        let penalty = if reason.is_minor() {
                            -self.config.limits.violation_penalty / 10.0
                        } else {
                            -self.config.limits.violation_penalty
                        };
                        self.punish(peer, ScoreSource::Dht, penalty, now);
                    }
                }
            }
            for r in results {
                self.metrics.dht_lookup_latency.record(r.elapsed);
                self.request_lookup_done(r.id, &r, now);
                if let Some(request) = self.lookup_waiters.remove(&r.id) {
                    self.reply(request, Reply::Lookup(r));
                } else if self.user_lookups.remove(&r.id) {
                    self.delivery_push(Event::Lookup(r), None);
                }
            }
        }
    }

    pub(super) fn send_kad(
        &mut self,
        peer: PeerId,
        addrs: Vec<SocketAddr>,
        bytes: Vec<u8>,
        now: Instant,
    ) {
        let conn = self
            .peers
            .get(&peer)
            .or_else(|| self.kad_conns.get(&peer))
            .copied();
        if let Some(id) = conn {
            if let Some(e) = self.conns.get_mut(&id) {
                if !e.lookup_only && e.announced && !e.serves(KAD_CHANNEL) {
                    // A peer connected for its other channels that runs no DHT (a
                    // validator behind its sentries): it cannot answer.
                    if let Some(kad) = &mut self.kad {
                        kad.on_unreachable(peer, now);
                    }
                    return;
                }
                if e.conn.is_established() {
                    e.last_active = now;
                    if e.conn
                        .send(KAD_CHANNEL, Arc::new(bytes), SendOptions::default())
                        .is_err()
                    {
                        Metrics::count(&mut self.metrics.drops, "kad_queue_full");
                    }
                    self.touched.push(id);
                    return;
                }
                let waiting = self.kad_waiting.entry(peer).or_default();
                if waiting.len() < MAX_KAD_WAITING {
                    waiting.push(bytes);
                }
                return;
            }
        }
        let room =
            self.kad_conns.len() < self.config.max_lookup_conns || self.evict_lookup_conn(now);
        let dialed = match addrs.first() {
            Some(addr) if room && self.shutdown.is_none() => {
                self.dial_with(*addr, Some(peer), false, true, now)
            }
            _ => None,
        };
        match dialed {
            Some(id) => {
                self.kad_conns.insert(peer, id);
                self.kad_waiting.entry(peer).or_default().push(bytes);
            }
            None => {
                if let Some(kad) = &mut self.kad {
                    kad.on_unreachable(peer, now);
                }
            }
        }
    }

    /// Closes the least recently active lookup connection to make room for another;
    /// `false` if none can go (all still dialing).
    pub(super) fn evict_lookup_conn(&mut self, now: Instant) -> bool {
        let victim = self
            .kad_conns
            .iter()
            .filter_map(|(peer, id)| self.conns.get(id).map(|e| (*peer, *id, e)))
            .filter(|(_, _, e)| e.conn.is_established() && !e.conn.is_closing())
            .min_by_key(|(_, _, e)| e.last_active)
            .map(|(peer, id, _)| (peer, id));
        let Some((peer, id)) = victim else {
            return false;
        };
        self.kad_conns.remove(&peer);
        self.close_conn(id, LocalClose::Requested, true, now);
        true
    }

    /// Closes the inbound lookup-only connection (other than `keep`) quiet longest,
    /// if it has been quiet for [`LOOKUP_QUIET`]; `false` if none has.
    pub(super) fn evict_quiet_inbound_lookup(&mut self, keep: ConnId, now: Instant) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(id, e)| {
                **id != keep
                    && e.lookup_only
                    && e.conn.direction() == Direction::Inbound
                    && e.conn.is_established()
                    && !e.conn.is_closing()
                    && e.last_active + LOOKUP_QUIET <= now
            })
            .min_by_key(|(id, e)| (e.last_active, **id))
            .map(|(id, _)| *id);
        let Some(id) = victim else {
            return false;
        };
        self.close_conn(id, LocalClose::Requested, true, now);
        true
    }
}
