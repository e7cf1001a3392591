//! The node's state machine: connections, peers, duplicates, bans and delivery.
//! Sans-IO: the driver reports socket happenings and moves bytes; every decision is
//! made here.

use crate::collections::{Map, Set};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;

use crate::config::{NodeConfig, PersistentPeer};
use crate::conn::{ConnEvent, Connection, Direction};
use crate::error::{DisconnectReason, LocalClose, SendError};
use crate::gossip::{GossipOutput, Router, Validator, GOSSIP_CHANNEL};
use crate::identity::{Keypair, PeerId};
use crate::kad::key::Key;
use crate::kad::record::PeerRecord;
use crate::kad::table::subnet;
use crate::kad::{KadOutput, Kademlia, LookupKind, LookupResult, KAD_CHANNEL};
use crate::metrics::{Metrics, PeerBytes};
use crate::mux::{ChannelCounters, ChannelId, MuxConfig, SendOptions};
use crate::node::command::{Command, Reply, RequestId};
use crate::node::delivery::Release;
use crate::node::event::Event;
use crate::node::requests::RequestBook;
use crate::peer_score::ScoreSource;
use crate::peers::{PeerManager, Refusal, Slot};
use crate::rng::Rng;
use crate::secure::HandshakeConfig;

mod addresses;
mod commands;
mod connections;
mod dialing;
mod gossip;
mod lookups;
mod output;
mod peer_control;
mod requests;
mod timers;

pub(crate) use output::{Io, IoBudget, IoOutcome, Output};

/// Counts of the core's expensive operations since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Work {
    /// Ed25519 verifications of gossip messages.
    pub(crate) signature_checks: u64,
    /// Handshakes finished, well or not (each a key agreement, a signature, a check).
    pub(crate) handshakes: u64,
}

/// A connection's id within its node.
pub(crate) type ConnId = usize;

/// How often outbound slots are topped up from the DHT table.
const FILL_EVERY: Duration = Duration::from_secs(1);
/// Most outbound peers from one /24.
const MAX_OUTBOUND_PER_SUBNET: usize = 2;
/// DHT messages waiting for a lookup connection, per peer.
const MAX_KAD_WAITING: usize = 16;
/// How long the losing connection of a duplicate pair waits for its dialer's Close.
const DUPLICATE_GRACE: Duration = Duration::from_secs(5);
/// How often the records offered by peer exchange are sampled from the DHT table.
const PX_REFRESH: Duration = Duration::from_secs(5);
/// Bootstrap peers are redialed this often while the DHT table is empty.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(2);
/// An inbound lookup-only connection quiet this long may make room for a new one.
/// A joiner's request to a seed is answered in one round trip and the joiner then
/// moves on: at 1 s, three seeds took about 150 joiners a second between them, and
/// of 10,000 joining within 10 s (S1), 1,283 had not got in after 60 s.
const LOOKUP_QUIET: Duration = Duration::from_millis(250);

struct Entry {
    conn: Connection,
    addr: SocketAddr,
    /// Dial deadline while the TCP connect is in progress.
    connecting: Option<Instant>,
    /// Set once this connection is the peer's announced one.
    announced: bool,
    persistent: bool,
    /// What it holds in the peer manager.
    slot: Slot,
    /// Carries DHT lookups only; closed when idle.
    lookup_only: bool,
    /// Whom we dialed.
    expected: Option<PeerId>,
    last_active: Instant,
    /// A lookup-only dial to a bootstrap peer: introduce ourselves once it is up.
    bootstrap: bool,
    /// Reassembly bytes it held when last looked at (its share of the node budget).
    reassembly: usize,
    /// It lost the duplicate rule and waits for its dialer's Close until then.
    retire_at: Option<Instant>,
    /// The channels the peer announced in its handshake (empty until then): DHT and
    /// gossip traffic goes only to a peer that serves them, since a message on a
    /// channel it does not serve is a violation on its side.
    channels: Vec<ChannelId>,
    /// What the peer announced as its software and version.
    version: String,
    /// When the connection was announced (set then).
    connected_at: Option<Instant>,
    /// The address the peer says it sees us on (its handshake's observed address).
    observed: Option<SocketAddr>,
    /// Bytes read from and written to its socket.
    bytes_read: u64,
    bytes_written: u64,
}

impl Entry {
    fn serves(&self, channel: ChannelId) -> bool {
        self.channels.contains(&channel)
    }
}

pub(crate) struct NodeCore {
    config: Arc<NodeConfig>,
    handshake: Arc<HandshakeConfig>,
    mux: Arc<MuxConfig>,
    key: Arc<Keypair>,
    conns: Map<ConnId, Entry>,
    /// The connection each connected peer uses.
    peers: Map<PeerId, ConnId>,
    manager: PeerManager,
    rng: Rng,
    /// Key material only (ephemeral keys, nonces): no decision depends on it.
    secure_rng: SystemRandom,
    metrics: Metrics,
    outputs: VecDeque<Output>,
    /// Connections whose state changed outside their own I/O; the driver services them.
    touched: Vec<ConnId>,
    next_conn: ConnId,
    local_ip: Option<IpAddr>,
    /// Set once shutdown began: the requests waiting for it to finish.
    shutdown: Option<Vec<RequestId>>,
    kad: Option<Kademlia>,
    /// Handshake settings of lookup-only dials.
    lookup_handshake: Arc<HandshakeConfig>,
    /// Lookup-only connections by peer (dialing or up).
    kad_conns: Map<PeerId, ConnId>,
    /// DHT messages waiting for a lookup connection.
    kad_waiting: Map<PeerId, Vec<Vec<u8>>>,
    /// Lookups a request waits for: lookup id → request.
    lookup_waiters: Map<u64, RequestId>,
    /// Lookups the application asked for, to report as events.
    user_lookups: Set<u64>,
    next_fill: Instant,
    next_bootstrap: Instant,
    /// When an outbound peer was last swapped for one a PRUNE offered.
    px_swapped_at: Option<Instant>,
    next_px: Instant,
    router: Option<Router>,
    /// Reassembly bytes held by all connections together.
    reassembly_used: usize,
    /// Requests in flight, both ways.
    requests: RequestBook,
    /// DHT lookups of a peer's address that requests wait for: lookup id → peer.
    request_lookups: Map<u64, PeerId>,
    /// Channels a lookup-only connection may carry: the DHT's, and the
    /// application's for requests (not gossip's).
    light_channels: Vec<ChannelId>,
    /// Smoothed round trip of requests' answers, per peer (bounded).
    request_rtt: Map<PeerId, Duration>,
    /// What peers told us about our address.
    observed: crate::node::observed::ObservedAddrs,
    /// Dial-backs under way, by peer.
    dial_backs: Map<PeerId, addresses::DialBack>,
}

impl NodeCore {
    /// `unix_secs` is the wall-clock time in seconds, given by the caller (the core
    /// reads no clock): it numbers our peer record, so a restarted node's new record
    /// replaces its old one everywhere. Every decision's randomness comes from
    /// `config.seed` and our id; `secure_rng` makes key material only.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        handshake: Arc<HandshakeConfig>,
        key: Arc<Keypair>,
        validator: Option<Validator>,
        secure_rng: SystemRandom,
        now: Instant,
        unix_secs: u64,
    ) -> Self {
        let mut rng = Rng::new(config.seed ^ u64::from_le_bytes(first8(key.peer_id())));
        let mut manager = PeerManager::new(
            config.limits.clone(),
            config.persistent_peers.clone(),
            now,
            rng.fork(),
        );
        for peer in &config.unconditional_peers {
            manager.set_unconditional(*peer, true);
        }
        let local_ip = config
            .listen
            .first()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let addrs = &handshake.node_info.listen_addrs;
        let kad = config.kad.clone().map(|kc| {
            let mut kad = Kademlia::new(&key, addrs, kc, rng.fork(), now);
            kad.set_record(PeerRecord::sign(&key, addrs, unix_secs.max(2)));
            for peer in &config.private_peers {
                kad.set_private(*peer, true);
            }
            kad
        });
        let router = config
            .gossip
            .clone()
            .map(|gc| Router::new(gc, Some(key.clone()), validator, rng.fork(), now));
        let light_channels = config
            .mux
            .channels
            .iter()
            .map(|c| c.id)
            .filter(|c| *c != GOSSIP_CHANNEL)
            .collect();
        let mut lookup_hs = (*handshake).clone();
        lookup_hs.node_info.lookup_only = true;
        let config_requests = config.requests.clone();
        NodeCore {
            mux: Arc::new(config.mux.clone()),
            config,
            handshake,
            key,
            conns: Map::default(),
            peers: Map::default(),
            manager,
            rng,
            secure_rng,
            metrics: Metrics::default(),
            outputs: VecDeque::new(),
            touched: Vec::new(),
            next_conn: 0,
            local_ip,
            shutdown: None,
            kad,
            lookup_handshake: Arc::new(lookup_hs),
            kad_conns: Map::default(),
            kad_waiting: Map::default(),
            lookup_waiters: Map::default(),
            user_lookups: Default::default(),
            next_fill: now,
            next_bootstrap: now,
            px_swapped_at: None,
            next_px: now,
            router,
            reassembly_used: 0,
            requests: RequestBook::new(config_requests),
            request_lookups: Map::default(),
            light_channels,
            request_rtt: Map::default(),
            observed: Default::default(),
            dial_backs: Map::default(),
        }
    }

    /// Dials the bootstrap peers; call once, right after creation.
    pub(crate) fn start(&mut self, now: Instant) {
        self.dial_bootstrap(now);
    }

    pub(crate) fn local_id(&self) -> PeerId {
        self.key.peer_id()
    }

    fn alloc(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    // ------------------------------------------------------------ outputs

    /// Reassembly bytes held by all connections together.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn reassembly_in_use(&self) -> usize {
        self.reassembly_used
    }

    /// Bytes `id` sealed and has not yet written.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn pending_output(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, |e| e.conn.pending_output())
    }

    /// The next thing for the driver to do, in order; `None` when there is nothing.
    #[must_use]
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        if self.touched.is_empty() {
            return None;
        }
        // Wake each touched connection once, in the order first touched.
        let mut touched = std::mem::take(&mut self.touched);
        let mut seen = Set::with_capacity_and_hasher(touched.len(), Default::default());
        touched.retain(|id| seen.insert(*id));
        self.outputs.extend(touched.into_iter().map(Output::Wake));
        self.outputs.pop_front()
    }

    fn check_shutdown_done(&mut self) {
        if self.conns.is_empty() {
            if let Some(waiters) = &mut self.shutdown {
                for request in waiters.drain(..) {
                    self.outputs.push_back(Output::Reply {
                        request,
                        reply: Reply::ShutDown,
                    });
                }
            }
        }
    }

    fn reply(&mut self, request: RequestId, reply: Reply) {
        self.outputs.push_back(Output::Reply { request, reply });
    }

    /// Expensive work done so far, cheap to read (the simulator charges modeled CPU
    /// time for it).
    #[must_use]
    pub(crate) fn poll_work(&self) -> Work {
        Work {
            signature_checks: self.router.as_ref().map_or(0, Router::signature_checks),
            handshakes: self.metrics.handshakes_ok
                + self.metrics.handshakes_failed.values().sum::<u64>(),
        }
    }

    /// The node's counters (the driver adds what waits in its event queues).
    pub(crate) fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        for e in self.conns.values() {
            if e.announced {
                match e.conn.direction() {
                    Direction::Inbound => m.inbound += 1,
                    Direction::Outbound => m.outbound += 1,
                }
            } else if !e.conn.is_established() {
                m.pending += 1;
            }
        }
        let mut live: Vec<(ChannelId, ChannelCounters)> = Vec::new();
        for e in self.conns.values() {
            if let Some(counters) = e.conn.channel_counters() {
                live.extend(counters);
            }
        }
        for (channel, c) in live {
            m.add_channel(channel, &c);
            if c.expired > 0 {
                *m.drops.entry("expired").or_default() += c.expired;
            }
        }
        if let Some(r) = &self.router {
            m.topics = r.metrics().into_iter().collect();
        }
        if let Some(k) = &self.kad {
            m.dht_table_peers = k.table().len() as u64;
            m.dht_provider_records = k.provider_records() as u64;
            m.dht_lookups_running = k.running_lookups() as u64;
            m.dht_providing = k.providing() as u64;
            let (waiting, dropped) = k.dial_backs();
            m.dht_dial_backs_waiting = waiting as u64;
            m.dht_dial_backs_dropped = dropped;
        }
        for (peer, id) in &self.peers {
            let Some(e) = self.conns.get(id) else {
                continue;
            };
            if let Some(rtt) = e.conn.rtt() {
                m.peer_rtt.insert(*peer, rtt);
            }
            m.peer_bytes.insert(
                *peer,
                PeerBytes {
                    read: e.bytes_read,
                    written: e.bytes_written,
                },
            );
        }
        m
    }

    // ------------------------------------------------------------ helpers

    fn close_conn(&mut self, id: ConnId, why: LocalClose, flush: bool, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.conn.close(why, flush, now);
            self.touched.push(id);
        }
    }

    /// Hands `event` to the application, through the driver.
    fn delivery_push(&mut self, event: Event, release: Option<Release>) {
        self.outputs.push_back(Output::Event { event, release });
    }

    /// The application's queue took an event: its credit goes back to the peer.
    pub(crate) fn handle_released(&mut self, (id, channel, bytes): Release) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.conn.release(channel, bytes);
            self.touched.push(id);
        }
    }

    /// Tells the handles what left `id`'s queues.
    fn sync_dequeued(&mut self, id: ConnId) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(peer) = e.conn.remote() else { return };
        if !self.peers.contains_key(&peer) {
            return;
        }
        let Some(mux) = e.conn.mux() else { return };
        let outputs = &mut self.outputs;
        mux.take_dequeued(|channel, n| {
            outputs.push_back(Output::Dequeued {
                peer,
                channel,
                n: n as usize,
            })
        });
    }
}

fn first8(id: PeerId) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    b
}
