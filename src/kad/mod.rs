//! Kademlia DHT: routing table, iterative lookups, signed peer records and provider
//! records. Sans-IO: messages and `now` in; messages to send, penalties and lookup
//! results out. The node core carries the messages on their own channel.

pub mod key;
pub mod lookup;
pub mod providers;
pub mod record;
pub mod table;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use prost::Message;

use crate::identity::{Keypair, PeerId};
use crate::rate::RateTable;
use crate::rng::Rng;
use crate::wire;
use key::{key_in_bucket, Key};
use lookup::Lookup;
use providers::ProviderStore;
use record::PeerRecord;
use table::{Insert, RoutingTable, TableConfig};

/// The channel Kademlia RPCs ride on.
pub const KAD_CHANNEL: u32 = 0xffff_0001;
/// Largest Kademlia message.
pub const MAX_KAD_MESSAGE: usize = 64 * 1024;

/// Kademlia settings.
#[derive(Debug, Clone)]
pub struct KadConfig {
    /// Routing table settings (k, IP diversity).
    pub table: TableConfig,
    /// Requests in flight per lookup path.
    pub alpha: usize,
    /// Disjoint lookup paths (1 = plain Kademlia).
    pub disjoint_paths: usize,
    /// Time a request may take.
    pub request_timeout: Duration,
    /// How long a provider record lives.
    pub provider_ttl: Duration,
    /// How often our own provider records are republished.
    pub republish_every: Duration,
    /// Buckets not looked up within this are refreshed by a random lookup.
    pub refresh_every: Duration,
    /// Providers stored per key.
    pub max_providers_per_key: usize,
    /// Providers stored in all.
    pub max_providers: usize,
    /// Requests a peer may make per second (sustained).
    pub rpc_per_sec: f64,
    /// Requests a peer may make in a burst.
    pub rpc_burst: f64,
    /// Lookups running at once; more are refused.
    pub max_lookups: usize,
    /// A lookup still running after this finishes with what it has.
    pub lookup_timeout: Duration,
    /// Keys one peer may be stored as a provider of.
    pub max_provided_per_peer: usize,
}

impl Default for KadConfig {
    fn default() -> Self {
        KadConfig {
            table: TableConfig::default(),
            alpha: 3,
            disjoint_paths: 1,
            request_timeout: Duration::from_secs(2),
            provider_ttl: Duration::from_secs(3600),
            republish_every: Duration::from_secs(1200),
            refresh_every: Duration::from_secs(600),
            max_providers_per_key: 20,
            max_providers: 10_000,
            rpc_per_sec: 50.0,
            rpc_burst: 200.0,
            max_lookups: 256,
            lookup_timeout: Duration::from_secs(60),
            max_provided_per_peer: 64,
        }
    }
}

/// A lookup's id.
pub type LookupId = u64;

/// What a lookup was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// `find_node`.
    FindNode,
    /// `find_providers`.
    GetProviders,
    /// Finding where to store our provider record.
    Provide,
    /// Our own id, when joining.
    Bootstrap,
    /// A random key in a stale bucket.
    Refresh,
}

/// What Kademlia asks the node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KadOutput {
    /// Deliver `bytes` on the Kademlia channel to `peer`, dialing `addrs` if needed.
    Send {
        /// To whom.
        peer: PeerId,
        /// Where it listens.
        addrs: Vec<SocketAddr>,
        /// The encoded `KadMessage`.
        bytes: Vec<u8>,
    },
    /// `peer` broke the protocol (garbage, forged records, too many requests).
    Misbehaved {
        /// Who.
        peer: PeerId,
        /// How.
        reason: &'static str,
        /// A nuisance (too many requests) rather than a violation.
        minor: bool,
    },
}

/// A finished lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// Its id.
    pub id: LookupId,
    /// What for.
    pub kind: LookupKind,
    /// The key.
    pub target: Key,
    /// The closest nodes that answered (at most k).
    pub closest: Vec<PeerRecord>,
    /// Providers found (GetProviders).
    pub providers: Vec<PeerRecord>,
    /// Most hops to any of `closest`.
    pub hops: u32,
    /// Time the lookup took.
    pub elapsed: Duration,
}

struct Pending {
    peer: PeerId,
    deadline: Instant,
    lookup: Option<LookupId>,
    /// An evict-ping for the table.
    table_ping: bool,
}

struct RunningLookup {
    lookup: Lookup,
    kind: LookupKind,
    started: Instant,
}

/// Most peers whose request rate is tracked.
const MAX_RATE_ENTRIES: usize = 4096;

/// The Kademlia state of one node.
pub struct Kademlia {
    config: KadConfig,
    local: PeerId,
    record: PeerRecord,
    table: RoutingTable,
    lookups: HashMap<LookupId, RunningLookup>,
    pending: HashMap<u64, Pending>,
    /// The pending requests' deadlines, in order: the next one without a scan.
    deadlines: std::collections::BTreeSet<(Instant, u64)>,
    providers: ProviderStore,
    provided: HashMap<Key, Instant>,
    rates: RateTable<PeerId>,
    /// Records already verified, by signature: each is checked once, not per copy.
    verified: HashMap<Vec<u8>, PeerRecord>,
    outputs: VecDeque<KadOutput>,
    results: VecDeque<LookupResult>,
    rng: Rng,
    next_refresh: Instant,
    next_lookup: LookupId,
    bootstrapped: bool,
}

impl Kademlia {
    /// Kademlia for the node holding `key`, reachable at `addrs`.
    pub fn new(
        key: &Keypair,
        addrs: &[SocketAddr],
        config: KadConfig,
        rng: Rng,
        now: Instant,
    ) -> Self {
        let rates = RateTable::new(config.rpc_per_sec, config.rpc_burst, MAX_RATE_ENTRIES);
        Kademlia {
            local: key.peer_id(),
            // Sequence numbers only need to grow across restarts: seconds since the epoch.
            record: PeerRecord::sign(key, addrs, 1),
            table: RoutingTable::new(key.peer_id(), config.table.clone()),
            providers: ProviderStore::new(
                config.max_providers_per_key,
                config.max_providers,
                config.max_provided_per_peer,
            ),
            next_refresh: now + config.refresh_every,
            config,
            lookups: HashMap::new(),
            pending: HashMap::new(),
            deadlines: std::collections::BTreeSet::new(),
            provided: HashMap::new(),
            rates,
            verified: HashMap::new(),
            outputs: VecDeque::new(),
            results: VecDeque::new(),
            rng,
            next_lookup: 0,
            bootstrapped: false,
        }
    }

    /// Replaces our record (new addresses); `seq` must grow.
    pub fn set_record(&mut self, record: PeerRecord) {
        if record.id == self.local && record.seq > self.record.seq {
            self.record = record;
        }
    }

    /// Our own signed record.
    pub fn local_record(&self) -> &PeerRecord {
        &self.record
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    // ------------------------------------------------------------ inputs

    /// A peer connected: introduce ourselves, and learn its record from the answer.
    pub fn on_connected(&mut self, peer: PeerId, addrs: Vec<SocketAddr>, now: Instant) {
        self.request(
            peer,
            addrs,
            wire::kad_request::Body::Ping(wire::KadPing {}),
            None,
            false,
            now,
        );
    }

    /// `peer` cannot be reached: its requests fail now.
    pub fn on_unreachable(&mut self, peer: PeerId, now: Instant) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.fail_request(id, now);
        }
    }

    /// A message from `from` on the Kademlia channel, whose connection comes from
    /// `seen` (what the table's diversity limits count).
    pub fn handle_message(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        bytes: &[u8],
        now: Instant,
    ) {
        let Ok(msg) = wire::KadMessage::decode(bytes) else {
            return self.misbehaved(from, "undecodable kad message");
        };
        match msg.msg {
            Some(wire::kad_message::Msg::Request(req)) => self.handle_request(from, seen, req, now),
            Some(wire::kad_message::Msg::Response(resp)) => {
                self.handle_response(from, seen, resp, now)
            }
            None => self.misbehaved(from, "empty kad message"),
        }
    }

    fn misbehaved(&mut self, peer: PeerId, reason: &'static str) {
        log::debug!("kad: peer {} misbehaved: {reason}", peer.short());
        self.outputs.push_back(KadOutput::Misbehaved {
            peer,
            reason,
            minor: false,
        });
    }

    /// Verifies the record a peer sent about itself and puts it in the table. `Err`
    /// when the record is bad (the peer is reported); `Ok(None)` when there is none.
    fn learn_sender(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        raw: Option<wire::PeerRecord>,
        now: Instant,
    ) -> Result<Option<PeerRecord>, ()> {
        let Some(raw) = raw else { return Ok(None) };
        match self.verify_record(raw) {
            Ok(rec) if rec.id == from => {
                if let Insert::PingLeastRecent(lrs) = self.table.insert(rec.clone(), seen, now) {
                    if let Some(addrs) = self.table.get(&lrs).map(|r| r.addrs.clone()) {
                        self.request(
                            lrs,
                            addrs,
                            wire::kad_request::Body::Ping(wire::KadPing {}),
                            None,
                            true,
                            now,
                        );
                    }
                }
                self.bootstrap_on_first_contact(now);
                Ok(Some(rec))
            }
            Ok(_) => {
                self.misbehaved(from, "sender record of another peer");
                Err(())
            }
            Err(_) => {
                self.misbehaved(from, "invalid sender record");
                Err(())
            }
        }
    }

    fn handle_request(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        req: wire::KadRequest,
        now: Instant,
    ) {
        if !self.rates.try_take(from, now) {
            let reason = "kad request rate";
            self.outputs.push_back(KadOutput::Misbehaved {
                peer: from,
                reason,
                minor: true,
            });
            return;
        }
        let Ok(sender) = self.learn_sender(from, seen, req.sender, now) else {
            return;
        };
        let sender_addrs = sender.as_ref().map(|r| r.addrs.clone()).unwrap_or_default();
        let k = self.config.table.k;
        let mut resp = wire::KadResponse {
            id: req.id,
            sender: Some(self.record.to_wire()),
            ..Default::default()
        };
        use wire::kad_request::Body;
        match req.body {
            Some(Body::Ping(_)) => {}
            Some(Body::FindNode(f)) => {
                let Some(key) = key32(&f.key) else {
                    return self.misbehaved(from, "bad key");
                };
                resp.closer = self.closest_except(&key, k, from);
            }
            Some(Body::GetProviders(g)) => {
                let Some(key) = key32(&g.key) else {
                    return self.misbehaved(from, "bad key");
                };
                resp.providers = self
                    .providers
                    .get(&key, now)
                    .iter()
                    .map(PeerRecord::to_wire)
                    .collect();
                resp.closer = self.closest_except(&key, k, from);
            }
            Some(Body::AddProvider(a)) => {
                let Some(key) = key32(&a.key) else {
                    return self.misbehaved(from, "bad key");
                };
                let Some(rec) = sender else {
                    return self.misbehaved(from, "provider without a record");
                };
                // Our TTL cap, and a cap per provider, whatever the peer asks for.
                let ttl = Duration::from_secs(a.ttl_secs).min(self.config.provider_ttl);
                self.providers.add(key, rec, ttl, now);
            }
            None => return self.misbehaved(from, "kad request without body"),
        }
        let bytes = wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Response(resp)),
        }
        .encode_to_vec();
        self.outputs.push_back(KadOutput::Send {
            peer: from,
            addrs: sender_addrs,
            bytes,
        });
    }

    fn closest_except(&self, key: &Key, k: usize, except: PeerId) -> Vec<wire::PeerRecord> {
        self.table
            .closest(key, k + 1)
            .into_iter()
            .filter(|r| r.id != except)
            .take(k)
            .map(|r| r.to_wire())
            .collect()
    }

    fn handle_response(
        &mut self,
        from: PeerId,
        seen: Option<IpAddr>,
        resp: wire::KadResponse,
        now: Instant,
    ) {
        let Some(pending) = self.untrack(resp.id) else {
            return; // late or unknown: harmless
        };
        if pending.peer != from {
            self.track(resp.id, pending);
            return self.misbehaved(from, "answer to a request sent elsewhere");
        }
        let k = self.config.table.k;
        let oversized =
            resp.closer.len() > k || resp.providers.len() > self.config.max_providers_per_key;
        if oversized {
            self.misbehaved(from, "oversized kad answer");
        }
        if oversized || self.learn_sender(from, seen, resp.sender, now).is_err() {
            // A dropped answer is a failed request: the lookup moves on without it.
            return self.request_failed(pending, now);
        }
        if pending.table_ping {
            self.table.ping_result(from, true, now);
        }
        let mut forged = false;
        let mut verify = |kad: &mut Self, list: Vec<wire::PeerRecord>| -> Vec<PeerRecord> {
            list.into_iter()
                .filter_map(|r| match kad.verify_record(r) {
                    Ok(r) => Some(r),
                    Err(_) => {
                        forged = true;
                        None
                    }
                })
                .collect()
        };
        let closer = verify(self, resp.closer);
        let providers = verify(self, resp.providers);
        if forged {
            self.misbehaved(from, "forged peer record");
        }
        if let Some(id) = pending.lookup {
            if let Some(run) = self.lookups.get_mut(&id) {
                run.lookup.on_response(&from, closer, providers);
            }
            self.drive(id, now);
        }
    }

    // ------------------------------------------------------------ lookups

    /// Starts a lookup of the k nodes closest to `target`.
    pub fn find_node(&mut self, target: Key, now: Instant) -> Option<LookupId> {
        self.start_lookup(target, LookupKind::FindNode, now)
    }

    /// Starts a lookup of providers of `key`.
    pub fn find_providers(&mut self, key: Key, now: Instant) -> Option<LookupId> {
        self.start_lookup(key, LookupKind::GetProviders, now)
    }

    /// Announces this node as a provider of `key`, now and every republish interval.
    pub fn provide(&mut self, key: Key, now: Instant) -> Option<LookupId> {
        self.provided.insert(key, now + self.config.republish_every);
        self.start_lookup(key, LookupKind::Provide, now)
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

    fn bootstrap_on_first_contact(&mut self, now: Instant) {
        if !self.bootstrapped && !self.table.is_empty() {
            self.bootstrap(now);
        }
    }

    fn start_lookup(&mut self, target: Key, kind: LookupKind, now: Instant) -> Option<LookupId> {
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
    fn drive(&mut self, id: LookupId, now: Instant) {
        let Some(run) = self.lookups.get_mut(&id) else {
            return;
        };
        let queries = run.lookup.next_queries();
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
        let done = self.lookups.get(&id).is_some_and(|r| r.lookup.is_done());
        if done {
            if let Some(run) = self.lookups.remove(&id) {
                self.finish(id, run, now);
            }
        }
    }

    fn finish(&mut self, id: LookupId, run: RunningLookup, now: Instant) {
        let (closest, hops) = run.lookup.result();
        let target = *run.lookup.target();
        match run.kind {
            LookupKind::Provide => {
                let ttl = self.config.provider_ttl.as_secs();
                for r in &closest {
                    let body = wire::kad_request::Body::AddProvider(wire::AddProvider {
                        key: target.to_vec(),
                        ttl_secs: ttl,
                    });
                    self.request(r.id, r.addrs.clone(), body, None, false, now);
                }
                // Providers also remember themselves, so a lookup that reaches them finds them.
                let me = self.record.clone();
                self.providers
                    .add(target, me, self.config.provider_ttl, now);
            }
            LookupKind::Bootstrap => self.refresh(now, true),
            _ => {}
        }
        let mut providers: Vec<PeerRecord> = run.lookup.providers.values().cloned().collect();
        if run.kind == LookupKind::GetProviders {
            providers.extend(self.providers.get(&target, now));
            providers.sort_by_key(|p| p.id);
            providers.dedup_by_key(|p| p.id);
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

    /// Random lookups in buckets not refreshed lately (all of them when joining).
    fn refresh(&mut self, now: Instant, all: bool) {
        let every = if all {
            Duration::ZERO
        } else {
            self.config.refresh_every
        };
        let local = *self.local.as_bytes();
        for index in self.table.stale_buckets(now, every) {
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

    fn request(
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

    fn fail_request(&mut self, id: u64, now: Instant) {
        if let Some(p) = self.untrack(id) {
            self.request_failed(p, now);
        }
    }

    fn request_failed(&mut self, p: Pending, now: Instant) {
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

    fn track(&mut self, id: u64, p: Pending) {
        self.deadlines.insert((p.deadline, id));
        if let Some(old) = self.pending.insert(id, p) {
            self.deadlines.remove(&(old.deadline, id));
        }
    }

    fn untrack(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        Some(p)
    }

    /// When [`Kademlia::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.next_refresh;
        if let Some((first, _)) = self.deadlines.first() {
            at = at.min(*first);
        }
        if let Some(t) = self.table.next_ping_deadline() {
            at = at.min(t);
        }
        if let Some(started) = self.lookups.values().map(|r| r.started).min() {
            at = at.min(started + self.config.lookup_timeout);
        }
        for t in self.provided.values() {
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
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.provide(key, now);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_every;
            self.providers.expire(now);
            self.refresh(now, false);
        }
    }

    // ------------------------------------------------------------ outputs

    /// The next message to send or penalty to apply.
    pub fn poll_output(&mut self) -> Option<KadOutput> {
        self.outputs.pop_front()
    }

    /// The next finished lookup.
    pub fn poll_result(&mut self) -> Option<LookupResult> {
        self.results.pop_front()
    }

    /// Lookups running.
    pub fn running_lookups(&self) -> usize {
        self.lookups.len()
    }
}

/// Most verified records remembered.
const MAX_VERIFIED: usize = 8192;

impl Kademlia {
    /// Verifies `raw`, skipping the signature check for a byte-identical record
    /// verified before.
    fn verify_record(&mut self, raw: wire::PeerRecord) -> Result<PeerRecord, record::RecordError> {
        if let Some(known) = self.verified.get(&raw.signature) {
            if known.to_wire() == raw {
                return Ok(known.clone());
            }
        }
        let rec = PeerRecord::verify(raw)?;
        if self.verified.len() >= MAX_VERIFIED {
            self.verified.clear();
        }
        self.verified.insert(rec.to_wire().signature, rec.clone());
        Ok(rec)
    }
}

fn key32(bytes: &[u8]) -> Option<Key> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests;
