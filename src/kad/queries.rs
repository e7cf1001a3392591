//! Kademlia RPCs out: lookups (iterative, with per-request and overall deadlines),
//! provider announcements, bucket refreshes, and the requests they send.

use super::*;
use crate::kad::provider::Provider;

impl Kademlia {
    // ------------------------------------------------------------ lookups

    /// Starts a lookup of the k nodes closest to `target`.
    pub fn find_node(&mut self, target: Key, now: Instant) -> Option<LookupId> {
        self.start_lookup(target, LookupKind::FindNode, now)
    }

    /// Starts a lookup of providers of `key`.
    pub fn find_providers(&mut self, key: Key, now: Instant) -> Option<LookupId> {
        self.start_lookup(key, LookupKind::GetProviders, now)
    }

    /// Announces this node as a provider of `key`, now and every republish
    /// interval, with `metadata` and `signature`, its announcement signed with this
    /// node's key ([`crate::kad::provider::sign`]).
    pub fn provide(
        &mut self,
        key: Key,
        metadata: Vec<u8>,
        signature: Vec<u8>,
        now: Instant,
    ) -> Option<LookupId> {
        let republish = now + self.config.republish_every;
        self.provided.insert(key, (republish, metadata, signature));
        self.start_lookup(key, LookupKind::Provide, now)
    }

    fn republish(&mut self, key: Key, now: Instant) {
        if let Some(entry) = self.provided.get_mut(&key) {
            entry.0 = now + self.config.republish_every;
            self.start_lookup(key, LookupKind::Provide, now);
        }
    }

    /// Stops republishing `key`.
    pub fn stop_providing(&mut self, key: &Key) {
        self.provided.remove(key);
    }

    /// Joins the network: looks up our own id (then refreshes the buckets). Runs by
    /// itself on the first contact if not called.
    pub fn bootstrap(&mut self, now: Instant) -> Option<LookupId> {
        self.bootstrapped = true;
        self.start_lookup(*self.local.as_bytes(), LookupKind::Bootstrap, now)
    }

    pub(super) fn bootstrap_on_first_contact(&mut self, now: Instant) {
        if !self.bootstrapped && !self.table.is_empty() {
            self.bootstrap(now);
        }
    }

    pub(super) fn start_lookup(
        &mut self,
        target: Key,
        kind: LookupKind,
        now: Instant,
    ) -> Option<LookupId> {
        if self.lookups.len() >= self.config.max_lookups {
            return None;
        }
        let k = self.config.table.k;
        let seeds = self
            .table
            .closest(&target, k * self.config.disjoint_paths.max(1));
        self.next_lookup += 1;
        let id = self.next_lookup;
        let lookup = Lookup::new(
            self.local,
            target,
            seeds,
            k,
            self.config.alpha,
            self.config.disjoint_paths,
        );
        self.lookups.insert(
            id,
            RunningLookup {
                lookup,
                kind,
                started: now,
            },
        );
        self.drive(id, now);
        Some(id)
    }

    /// Sends the lookup's next requests, or finishes it.
    pub(super) fn drive(&mut self, id: LookupId, now: Instant) {
        let Some(run) = self.lookups.get_mut(&id) else {
            return;
        };
        let mut forgers = Vec::new();
        let verified = &mut self.verified;
        let queries = run
            .lookup
            .next_queries(|r, from| check_named(verified, &mut forgers, r, from));
        let target = *run.lookup.target();
        let kind = run.kind;
        for r in queries {
            let body = match kind {
                LookupKind::GetProviders => {
                    wire::kad_request::Body::GetProviders(wire::GetProviders {
                        key: target.to_vec(),
                    })
                }
                _ => wire::kad_request::Body::FindNode(wire::FindNode {
                    key: target.to_vec(),
                }),
            };
            self.request(r.id, r.addrs.clone(), body, Some(id), false, now);
        }
        self.report_forgers(forgers);
        let done = self.lookups.get(&id).is_some_and(|r| r.lookup.is_done());
        if done {
            if let Some(run) = self.lookups.remove(&id) {
                self.finish(id, run, now);
            }
        }
    }

    pub(super) fn finish(&mut self, id: LookupId, mut run: RunningLookup, now: Instant) {
        let (closest, hops) = run.lookup.result();
        let target = *run.lookup.target();
        match run.kind {
            LookupKind::Provide => {
                // Stopped providing while the lookup ran: nothing to announce.
                if let Some((_, metadata, signature)) = self.provided.get(&target).cloned() {
                    let ttl = self.config.provider_ttl.as_secs();
                    for r in &closest {
                        let body = wire::kad_request::Body::AddProvider(wire::AddProvider {
                            key: target.to_vec(),
                            ttl_secs: ttl,
                            metadata: metadata.clone(),
                            signature: signature.clone(),
                        });
                        self.request(r.id, r.addrs.clone(), body, None, false, now);
                    }
                    // Providers also remember themselves, so a lookup that reaches them
                    // finds them.
                    let me = Provider::own(self.record.clone(), metadata, signature);
                    self.providers
                        .add(target, me, self.config.provider_ttl, now);
                }
            }
            LookupKind::Bootstrap => self.refresh(now, true),
            _ => {}
        }
        let mut forgers = Vec::new();
        let verified = &mut self.verified;
        let mut providers = run
            .lookup
            .take_providers(|r, from| check_named(verified, &mut forgers, r, from));
        self.report_forgers(forgers);
        if run.kind == LookupKind::GetProviders {
            providers.extend(self.providers.get(&target, now));
            providers.sort_by_key(|p| p.id());
            providers.dedup_by_key(|p| p.id());
        }
        self.results.push_back(LookupResult {
            id,
            kind: run.kind,
            target,
            closest,
            providers,
            hops,
            elapsed: now.saturating_duration_since(run.started),
        });
    }

    /// Those who passed on forged records: one report each, however many they forged.
    fn report_forgers(&mut self, mut forgers: Vec<PeerId>) {
        forgers.sort_unstable();
        forgers.dedup();
        for peer in forgers {
            self.misbehaved(peer, KadViolation::ForgedRecord);
        }
    }

    /// Random lookups in buckets not refreshed lately (the empty ones when joining).
    pub(super) fn refresh(&mut self, now: Instant, all: bool) {
        let every = if all {
            Duration::ZERO
        } else {
            self.config.refresh_every
        };
        let local = *self.local.as_bytes();
        // Joining fills only the buckets the own-id lookup left empty: the others
        // fill as the network's lookups pass by, and by the periodic refresh. A
        // random lookup per bucket cost about twenty connections each (S1, 300
        // nodes: 83 dials per node joining, 52 without).
        let sizes: Map<usize, usize> = self.table.bucket_sizes().into_iter().collect();
        for index in self.table.stale_buckets(now, every) {
            if all && sizes.contains_key(&index) {
                continue;
            }
            let mut random = [0u8; 32];
            for chunk in random.chunks_mut(8) {
                chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
            }
            self.table.refreshed(index, now);
            if self
                .start_lookup(
                    key_in_bucket(&local, index, random),
                    LookupKind::Refresh,
                    now,
                )
                .is_none()
            {
                break;
            }
        }
    }

    pub(super) fn request(
        &mut self,
        peer: PeerId,
        addrs: Vec<SocketAddr>,
        body: wire::kad_request::Body,
        lookup: Option<LookupId>,
        table_ping: bool,
        now: Instant,
    ) {
        let id = self.rng.next_u64();
        let deadline = now + self.config.request_timeout;
        self.track(
            id,
            Pending {
                peer,
                deadline,
                lookup,
                table_ping,
            },
        );
        let req = wire::KadRequest {
            id,
            sender: Some(self.record.to_wire()),
            body: Some(body),
        };
        let bytes = wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Request(req)),
        }
        .encode_to_vec();
        self.outputs
            .push_back(KadOutput::Send { peer, addrs, bytes });
    }

    pub(super) fn fail_request(&mut self, id: u64, now: Instant) {
        if let Some(p) = self.untrack(id) {
            self.request_failed(p, now);
        }
    }

    pub(super) fn request_failed(&mut self, p: Pending, now: Instant) {
        if p.table_ping {
            self.table.ping_result(p.peer, false, now);
        } else {
            // Unresponsive: no longer a routing candidate.
            self.table.remove(&p.peer);
        }
        if let Some(lookup) = p.lookup {
            if let Some(run) = self.lookups.get_mut(&lookup) {
                run.lookup.on_failure(&p.peer);
            }
            self.drive(lookup, now);
        }
    }

    // ------------------------------------------------------------ time

    pub(super) fn track(&mut self, id: u64, p: Pending) {
        self.deadlines.insert((p.deadline, id));
        if let Some(old) = self.pending.insert(id, p) {
            self.deadlines.remove(&(old.deadline, id));
        }
    }

    pub(super) fn untrack(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        Some(p)
    }

    /// When [`Kademlia::handle_timeout`] must run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.next_refresh;
        if let Some((first, _)) = self.deadlines.first() {
            at = at.min(*first);
        }
        if let Some(t) = self.table.next_ping_deadline() {
            at = at.min(t);
        }
        if let Some(started) = self.lookups.values().next().map(|r| r.started) {
            at = at.min(started + self.config.lookup_timeout);
        }
        for (t, _, _) in self.provided.values() {
            at = at.min(*t);
        }
        Some(at)
    }

    /// Request timeouts, evict-pings, provider expiry, republishing and refresh.
    pub fn handle_timeout(&mut self, now: Instant) {
        let overdue: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in overdue {
            self.fail_request(id, now);
        }
        // Lookups past their overall deadline end with what they found.
        let timeout = self.config.lookup_timeout;
        let late: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|(_, r)| now >= r.started + timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(run) = self.lookups.remove(&id) {
                self.finish(id, run, now);
            }
        }
        self.table.expire_pings(now);
        let due: Vec<Key> = self
            .provided
            .iter()
            .filter(|(_, (t, _, _))| *t <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.republish(key, now);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_every;
            self.providers.expire(now);
            self.refresh(now, false);
        }
    }
}
