//! The node's state machine: connections, peers, duplicates, bans and delivery.
//! Sans-IO: the driver reports socket happenings and moves bytes; every decision is
//! made here.

use std::collections::{HashMap, VecDeque};
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
use crate::metrics::Metrics;
use crate::mux::{ChannelCounters, ChannelId, MuxConfig, SendOptions};
use crate::node::command::Command;
use crate::node::delivery::{Delivery, Release};
use crate::node::event::Event;
use crate::node::shared::{NodeShared, SharedPeer};
use crate::peers::{PeerManager, Refusal, Slot};
use crate::rng::Rng;
use crate::secure::HandshakeConfig;

mod commands;
mod connections;
mod dialing;
mod gossip;
mod lookups;
mod timers;

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
/// Bootstrap peers are redialed this often while the DHT table is empty.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(2);

/// What the node asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Open a TCP connection for `conn` to `addr`, from `local` if given.
    Dial {
        conn: ConnId,
        addr: SocketAddr,
        local: Option<IpAddr>,
    },
}

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
}

pub(crate) struct NodeCore {
    config: Arc<NodeConfig>,
    handshake: Arc<HandshakeConfig>,
    mux: Arc<MuxConfig>,
    key: Arc<Keypair>,
    shared: Arc<NodeShared>,
    conns: HashMap<ConnId, Entry>,
    /// The connection each connected peer uses.
    peers: HashMap<PeerId, ConnId>,
    manager: PeerManager,
    rng: Rng,
    sys_rng: SystemRandom,
    delivery: Delivery,
    metrics: Metrics,
    actions: VecDeque<Action>,
    /// Connections whose state changed outside their own I/O; the driver services them.
    touched: Vec<ConnId>,
    next_conn: ConnId,
    local_ip: Option<IpAddr>,
    shutdown: Option<Vec<crossbeam_channel::Sender<()>>>,
    kad: Option<Kademlia>,
    /// Handshake settings of lookup-only dials.
    lookup_handshake: Arc<HandshakeConfig>,
    /// Lookup-only connections by peer (dialing or up).
    kad_conns: HashMap<PeerId, ConnId>,
    /// DHT messages waiting for a lookup connection.
    kad_waiting: HashMap<PeerId, Vec<Vec<u8>>>,
    lookup_waiters: HashMap<u64, crossbeam_channel::Sender<LookupResult>>,
    /// Lookups the application asked for, to report as events.
    user_lookups: std::collections::HashSet<u64>,
    next_fill: Instant,
    next_bootstrap: Instant,
    router: Option<Router>,
    /// Reassembly bytes held by all connections together.
    reassembly_used: usize,
}

impl NodeCore {
    /// `unix_secs` is the wall-clock time in seconds, given by the caller (the core
    /// reads no clock): it numbers our peer record, so a restarted node's new record
    /// replaces its old one everywhere.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        handshake: Arc<HandshakeConfig>,
        key: Arc<Keypair>,
        shared: Arc<NodeShared>,
        delivery: Delivery,
        validator: Option<Validator>,
        now: Instant,
        unix_secs: u64,
    ) -> Self {
        let mut rng = Rng::new(config.seed ^ u64::from_le_bytes(first8(key.peer_id())));
        let manager = PeerManager::new(
            config.limits.clone(),
            config.persistent_peers.clone(),
            now,
            rng.fork(),
        );
        let local_ip = config
            .listen
            .first()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let addrs = &handshake.node_info.listen_addrs;
        let kad = config.kad.clone().map(|kc| {
            let mut kad = Kademlia::new(&key, addrs, kc, rng.fork(), now);
            kad.set_record(PeerRecord::sign(&key, addrs, unix_secs.max(2)));
            kad
        });
        let router = config
            .gossip
            .clone()
            .map(|gc| Router::new(gc, Some(key.clone()), validator, rng.fork(), now));
        let mut lookup_hs = (*handshake).clone();
        lookup_hs.node_info.lookup_only = true;
        NodeCore {
            mux: Arc::new(config.mux.clone()),
            config,
            handshake,
            key,
            shared,
            conns: HashMap::new(),
            peers: HashMap::new(),
            manager,
            rng,
            sys_rng: SystemRandom::new(),
            delivery,
            metrics: Metrics::default(),
            actions: VecDeque::new(),
            touched: Vec::new(),
            next_conn: 0,
            local_ip,
            shutdown: None,
            kad,
            lookup_handshake: Arc::new(lookup_hs),
            kad_conns: HashMap::new(),
            kad_waiting: HashMap::new(),
            lookup_waiters: HashMap::new(),
            user_lookups: Default::default(),
            next_fill: now,
            next_bootstrap: now,
            router,
            reassembly_used: 0,
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

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn has_touched(&self) -> bool {
        !self.touched.is_empty() || !self.actions.is_empty()
    }

    pub(crate) fn socket_options(&self) -> crate::config::SocketOptions {
        self.config.socket
    }

    pub(crate) fn take_touched(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.touched)
    }

    /// Whether shutdown finished: every connection is gone.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.is_some() && self.conns.is_empty()
    }

    fn check_shutdown_done(&mut self) {
        if self.conns.is_empty() {
            if let Some(waiters) = &mut self.shutdown {
                for w in waiters.drain(..) {
                    let _ = w.try_send(());
                }
            }
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.waiting_events = self.delivery.waiting() as u64;
        m.drops.extend(
            (self.delivery.dropped_control > 0)
                .then_some(("event_queue_full", self.delivery.dropped_control)),
        );
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
        m
    }

    // ------------------------------------------------------------ helpers

    fn close_conn(&mut self, id: ConnId, why: LocalClose, flush: bool, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.conn.close(why, flush, now);
            self.touched.push(id);
        }
    }

    fn delivery_push(&mut self, event: Event, release: Option<Release>) {
        let mut released = Vec::new();
        self.delivery.deliver(event, release, &mut released);
        self.apply_releases(released);
    }

    fn apply_releases(&mut self, released: Vec<Release>) {
        for (id, channel, bytes) in released {
            if let Some(e) = self.conns.get_mut(&id) {
                e.conn.release(channel, bytes);
                self.touched.push(id);
            }
        }
    }

    /// Brings the handle's queued counts in line with what left `id`'s queues.
    pub(crate) fn sync_dequeued(&mut self, id: ConnId) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(peer) = e.conn.remote() else { return };
        let Some(mux) = e.conn.mux() else { return };
        let peers = self.shared.peers.read();
        let Some(p) = peers.get(&peer) else { return };
        mux.take_dequeued(|channel, n| self.shared.dequeued(&p.queued, channel, n as usize));
    }
}

fn first8(id: PeerId) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    b
}
