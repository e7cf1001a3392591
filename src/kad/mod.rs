//! Kademlia DHT: routing table, iterative lookups, signed peer records and provider
//! records. Sans-IO: messages and `now` in; messages to send, penalties and lookup
//! results out. The node core carries the messages on their own channel.

mod dial_back;
mod violation;
pub use violation::KadViolation;
pub mod key;
pub mod lookup;
pub mod provider;
pub mod providers;
mod queries;
/// Signed peer records (shared with gossip's peer exchange).
pub use crate::record;
mod rpc;
mod shape;
pub mod table;

use crate::collections::Map;
use std::collections::VecDeque;
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
use record::{PeerRecord, UncheckedRecord, VerifiedRecords};
use table::{RoutingTable, TableConfig};

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
    /// A record enters the routing table only once one of its addresses was
    /// reached: by a connection we dialed there, else by a dial-back
    /// ([`KadOutput::DialBack`]). Off: a peer's word on its address is taken.
    pub dial_back: bool,
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
            dial_back: true,
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
    /// `peer` broke the protocol (garbage, forged records), or made too many
    /// requests ([`KadViolation::is_minor`]).
    Misbehaved {
        /// Who.
        peer: PeerId,
        /// How.
        reason: KadViolation,
    },
    /// Dial `peer` at `addrs` (in order, until one answers as `peer`) and tell
    /// [`Kademlia::handle_dial_back`] whether it was reached: its record waits for
    /// that before it enters the table.
    DialBack {
        /// Whom.
        peer: PeerId,
        /// Where its record says it listens.
        addrs: Vec<SocketAddr>,
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
    /// Providers found (GetProviders), each with the metadata it signed.
    pub providers: Vec<provider::Provider>,
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
    /// By id, which grows with the start time: the first is the oldest.
    lookups: std::collections::BTreeMap<LookupId, RunningLookup>,
    pending: Map<u64, Pending>,
    /// The pending requests' deadlines, in order: the next one without a scan.
    deadlines: std::collections::BTreeSet<(Instant, u64)>,
    providers: ProviderStore,
    /// Keys we provide: when to republish, and our signed announcement.
    provided: Map<Key, (Instant, Vec<u8>, Vec<u8>)>,
    rates: RateTable<PeerId>,
    /// Records verified lately: each is checked once, not per copy.
    verified: VerifiedRecords,
    outputs: VecDeque<KadOutput>,
    results: VecDeque<LookupResult>,
    rng: Rng,
    next_refresh: Instant,
    next_lookup: LookupId,
    bootstrapped: bool,
    /// Peers never passed on: kept out of the table and the provider store, so no
    /// answer (and no peer exchange sampled from the table) names them.
    private: crate::collections::Set<PeerId>,
    /// Records waiting for their dial-back.
    dial_backs: dial_back::DialBacks,
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
            lookups: std::collections::BTreeMap::new(),
            pending: Map::default(),
            deadlines: std::collections::BTreeSet::new(),
            provided: Map::default(),
            rates,
            verified: VerifiedRecords::new(MAX_VERIFIED),
            outputs: VecDeque::new(),
            results: VecDeque::new(),
            rng,
            next_lookup: 0,
            bootstrapped: false,
            private: Default::default(),
            dial_backs: Default::default(),
        }
    }

    /// Makes `peer` private (never passed on; dropped from the table now) or not.
    pub fn set_private(&mut self, peer: PeerId, yes: bool) {
        if yes {
            self.private.insert(peer);
            self.table.remove(&peer);
        } else {
            self.private.remove(&peer);
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

    // ------------------------------------------------------------ outputs

    /// The next message to send or penalty to apply.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<KadOutput> {
        self.outputs.pop_front()
    }

    /// The next finished lookup.
    #[must_use]
    pub fn poll_result(&mut self) -> Option<LookupResult> {
        self.results.pop_front()
    }

    /// Provider records held for others now.
    pub fn provider_records(&self) -> usize {
        self.providers.len()
    }

    /// Keys we provide now.
    pub fn providing(&self) -> usize {
        self.provided.len()
    }

    /// Lookups running now.
    pub fn running_lookups(&self) -> usize {
        self.lookups.len()
    }
}

/// Record digests remembered as verified (16 bytes each).
const MAX_VERIFIED: usize = 2048;

impl Kademlia {
    /// Verifies the record a peer sent about itself; one seen before is not
    /// checked again.
    fn verify_record(&mut self, raw: wire::PeerRecord) -> Result<PeerRecord, record::RecordError> {
        self.verified.verify(UncheckedRecord::parse(raw)?)
    }
}

/// Verifies a record `from` named in an answer, now that it is about to be used.
/// A forgery is put on `forgers`.
fn check_named(
    verified: &mut VerifiedRecords,
    forgers: &mut Vec<PeerId>,
    record: UncheckedRecord,
    from: PeerId,
) -> Option<PeerRecord> {
    match verified.verify(record) {
        Ok(r) => Some(r),
        Err(_) => {
            forgers.push(from);
            None
        }
    }
}

fn key32(bytes: &[u8]) -> Option<Key> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
