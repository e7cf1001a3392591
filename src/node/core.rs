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

/// A connection's id within its node.
pub(crate) type ConnId = usize;

/// How often outbound slots are topped up from the DHT table.
const FILL_EVERY: Duration = Duration::from_secs(1);
/// Most outbound peers from one /24.
const MAX_OUTBOUND_PER_SUBNET: usize = 2;
/// DHT messages waiting for a lookup connection, per peer.
const MAX_KAD_WAITING: usize = 16;
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

    /// Joining needs only the bootstrap peers' DHT, not a slot with them: the dials are
    /// lookup-only, and the outbound slots are then filled from the table.
    fn dial_bootstrap(&mut self, now: Instant) {
        self.next_bootstrap = now + BOOTSTRAP_RETRY;
        for PersistentPeer { addr, id: expected } in self.config.bootstrap.clone() {
            let dialing = self.conns.values().any(|e| e.bootstrap && e.addr == addr);
            if dialing || self.kad.is_none() {
                continue;
            }
            if let Some(id) = self.dial_with(addr, expected, false, true, now) {
                if let Some(e) = self.conns.get_mut(&id) {
                    e.bootstrap = true;
                }
            }
        }
    }

    pub(crate) fn local_id(&self) -> PeerId {
        self.key.peer_id()
    }

    fn alloc(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    // ------------------------------------------------------------ driver inputs

    /// A TCP connection was accepted; `None` means refuse it (drop the socket).
    pub(crate) fn on_inbound(&mut self, addr: SocketAddr, now: Instant) -> Option<ConnId> {
        if self.shutdown.is_some() {
            return None;
        }
        let slot = match self.manager.admit_inbound(addr.ip(), now) {
            Ok(slot) => slot,
            Err(refusal) => {
                log::debug!("refused inbound from {addr}: {refusal:?}");
                Metrics::count(&mut self.metrics.refused, refusal.label());
                return None;
            }
        };
        self.metrics.accepted += 1;
        let conn = Connection::inbound(
            self.handshake.clone(),
            self.key.clone(),
            self.mux.clone(),
            now,
            self.rng.next_u64(),
        );
        let id = self.alloc();
        self.conns.insert(
            id,
            Entry {
                conn,
                addr,
                connecting: None,
                announced: false,
                persistent: false,
                slot,
                lookup_only: false,
                expected: None,
                last_active: now,
                bootstrap: false,
                reassembly: 0,
            },
        );
        Some(id)
    }

    /// Starts a dial; the driver gets an [`Action::Dial`].
    pub(crate) fn dial(
        &mut self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        persistent: bool,
        now: Instant,
    ) {
        self.dial_with(addr, expected, persistent, false, now);
    }

    fn dial_with(
        &mut self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        persistent: bool,
        lookup_only: bool,
        now: Instant,
    ) -> Option<ConnId> {
        let fail = |core: &mut Self, reason: DisconnectReason| {
            core.metrics.dial_failures += 1;
            if !lookup_only {
                core.delivery_push(Event::DialFailed { addr, reason }, None);
            }
            if persistent {
                core.manager.persistent_lost(addr, expected, now);
            }
            None
        };
        if self.shutdown.is_some() {
            return None;
        }
        if let Some(peer) = expected {
            if self.peers.contains_key(&peer) {
                return None;
            }
            if self.manager.is_banned(&peer, now) {
                return fail(self, DisconnectReason::Local(LocalClose::Banned));
            }
        }
        let slot = if lookup_only {
            Slot::None
        } else {
            match self.manager.admit(Direction::Outbound, addr.ip()) {
                Ok(slot) => slot,
                Err(_) => return fail(self, DisconnectReason::Local(LocalClose::TooManyPeers)),
            }
        };
        let hs = if lookup_only {
            &self.lookup_handshake
        } else {
            &self.handshake
        };
        let conn = match Connection::outbound(
            hs.clone(),
            self.key.clone(),
            expected,
            self.mux.clone(),
            now,
            &self.sys_rng,
            self.rng.next_u64(),
        ) {
            Ok(conn) => conn,
            Err(reason) => {
                self.manager.release(slot, addr.ip());
                return fail(self, reason);
            }
        };
        let id = self.alloc();
        self.metrics.dials += 1;
        let connecting = Some(now + self.config.dial_timeout);
        self.conns.insert(
            id,
            Entry {
                conn,
                addr,
                connecting,
                announced: false,
                persistent,
                slot,
                lookup_only,
                expected,
                last_active: now,
                bootstrap: false,
                reassembly: 0,
            },
        );
        self.actions.push_back(Action::Dial {
            conn: id,
            addr,
            local: self.local_ip,
        });
        Some(id)
    }

    /// The TCP connect of `id` completed.
    pub(crate) fn on_connected(&mut self, id: ConnId) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.connecting = None;
        }
    }

    /// The TCP connect of `id` failed; its entry is gone.
    pub(crate) fn on_dial_failed(&mut self, id: ConnId, kind: std::io::ErrorKind, now: Instant) {
        if let Some(e) = self.conns.remove(&id) {
            self.manager.release(e.slot, e.addr.ip());
            self.metrics.dial_failures += 1;
            log::debug!("dial {} failed: {kind}", e.addr);
            if e.lookup_only {
                self.lookup_conn_gone(id, e.expected, now);
                return;
            }
            let reason = DisconnectReason::Io(kind);
            self.delivery_push(
                Event::DialFailed {
                    addr: e.addr,
                    reason,
                },
                None,
            );
            if e.persistent {
                self.manager.persistent_lost(e.addr, None, now);
            }
        }
    }

    /// A lookup-only connection ended: what waited for it fails.
    fn lookup_conn_gone(&mut self, id: ConnId, peer: Option<PeerId>, now: Instant) {
        let Some(peer) = peer else { return };
        if self.kad_conns.get(&peer) == Some(&id) {
            self.kad_conns.remove(&peer);
            if self.kad_waiting.remove(&peer).is_some() {
                if let Some(kad) = &mut self.kad {
                    kad.on_unreachable(peer, now);
                }
            }
            self.drain_kad(now);
        }
    }

    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns.get_mut(&id).map(|e| &mut e.conn)
    }

    /// Whether `id` is still waiting for its TCP connect.
    pub(crate) fn is_connecting(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|e| e.connecting.is_some())
    }

    pub(crate) fn add_io(&mut self, read: usize, written: usize) {
        self.metrics.bytes_read += read as u64;
        self.metrics.bytes_written += written as u64;
    }

    /// Before the driver reads `id`: what it may hold for reassembly is its own share
    /// plus what the node budget has left, so no read can take more than the budget.
    pub(crate) fn begin_read(&mut self, id: ConnId) {
        let budget = self.config.reassembly_budget;
        if let Some(e) = self.conns.get_mut(&id) {
            let others = self.reassembly_used - e.reassembly;
            e.conn.set_reassembly_limit(budget.saturating_sub(others));
        }
    }

    /// Handles what `id` produced; call after its I/O.
    pub(crate) fn process(&mut self, id: ConnId, now: Instant) {
        let mut released = Vec::new();
        loop {
            let Some(entry) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(event) = entry.conn.poll_event() else {
                break;
            };
            // Gossip and application data count only from a peer that was announced
            // (lookup-only connections are restricted to the DHT channel anyway).
            let peer = entry.conn.remote().filter(|p| self.peers.contains_key(p));
            match event {
                ConnEvent::Established { remote, info } => {
                    self.on_established(id, remote, info, now)
                }
                ConnEvent::FirstFragment {
                    channel: GOSSIP_CHANNEL,
                    data,
                } => {
                    if let (Some(peer), Some(r)) = (peer, &mut self.router) {
                        r.handle_first_fragment(peer, &data, now);
                        self.drain_gossip(now, None);
                    }
                }
                ConnEvent::FirstFragment { .. } => {}
                ConnEvent::Message {
                    channel: GOSSIP_CHANNEL,
                    data,
                } => {
                    // The RPC's credit goes back as the application takes the messages
                    // it delivered (the rest at once): a slow application throttles
                    // its gossip senders instead of queueing without bound.
                    let len = data.len();
                    if let (Some(peer), Some(r)) = (peer, &mut self.router) {
                        r.handle_rpc(peer, &data, now);
                    }
                    self.drain_gossip(now, Some((id, len)));
                }
                ConnEvent::Message {
                    channel: KAD_CHANNEL,
                    data,
                } => {
                    entry.last_active = now;
                    let peer = entry.conn.remote();
                    let seen = entry.addr.ip();
                    entry.conn.release(KAD_CHANNEL, data.len());
                    if let (Some(peer), Some(kad)) = (peer, &mut self.kad) {
                        kad.handle_message(peer, Some(seen), &data, now);
                    }
                    self.touched.push(id);
                    self.drain_kad(now);
                }
                ConnEvent::Message { channel, data } => {
                    let Some(peer) = peer else {
                        // Not an announced peer's: nothing to deliver; free its credit.
                        entry.conn.release(channel, data.len());
                        self.touched.push(id);
                        continue;
                    };
                    let len = data.len();
                    let event = Event::Message {
                        peer,
                        channel,
                        data,
                    };
                    self.delivery
                        .deliver(event, Some((id, channel, len)), &mut released);
                }
            }
        }
        self.apply_releases(released);
        self.sync_dequeued(id);
        if let Some(e) = self.conns.get_mut(&id) {
            let held = e.conn.reassembly_bytes();
            self.reassembly_used = self.reassembly_used - e.reassembly + held;
            e.reassembly = held;
        }
    }

    fn on_established(
        &mut self,
        id: ConnId,
        remote: PeerId,
        info: crate::secure::NodeInfo,
        now: Instant,
    ) {
        self.metrics.handshakes_ok += 1;
        if self.manager.is_banned(&remote, now) || self.shutdown.is_some() {
            let why = if self.shutdown.is_some() {
                LocalClose::Shutdown
            } else {
                LocalClose::Banned
            };
            self.close_conn(id, why, false, now);
            return;
        }
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        if entry.lookup_only || info.lookup_only {
            // DHT traffic only: no slot, no announcement, no other channel.
            entry.slot = self.manager.unslot(entry.slot);
            entry.lookup_only = true;
            entry.expected = Some(remote);
            entry.conn.restrict_to(&[KAD_CHANNEL]);
            let inbound = entry.conn.direction() == Direction::Inbound;
            let max = self.config.max_lookup_conns;
            let inbound_lookups = self
                .conns
                .values()
                .filter(|e| {
                    e.lookup_only
                        && e.conn.direction() == Direction::Inbound
                        && e.conn.is_established()
                })
                .count();
            if self.kad.is_none() || (inbound && inbound_lookups > max) {
                Metrics::count(&mut self.metrics.refused, "max_lookup_conns");
                self.close_conn(id, LocalClose::TooManyPeers, false, now);
                return;
            }
            let Some(entry) = self.conns.get_mut(&id) else {
                return;
            };
            let introduce = entry.bootstrap;
            for bytes in self.kad_waiting.remove(&remote).unwrap_or_default() {
                let _ = entry
                    .conn
                    .send(KAD_CHANNEL, Arc::new(bytes), SendOptions::default());
            }
            self.kad_conns.insert(remote, id);
            if introduce {
                if let Some(kad) = &mut self.kad {
                    kad.on_connected(remote, info.listen_addrs, now);
                }
            }
            self.touched.push(id);
            self.drain_kad(now);
            return;
        }
        // A full peer: an inbound one now needs one of the inbound slots.
        match self.manager.establish(entry.slot) {
            Ok(slot) => entry.slot = slot,
            Err(slot) => {
                entry.slot = slot;
                Metrics::count(&mut self.metrics.refused, Refusal::TooManyInbound.label());
                log::debug!("peer {}: inbound slots full", remote.short());
                self.close_conn(id, LocalClose::TooManyPeers, false, now);
                return;
            }
        }
        let channels = info.channels;
        let Some(&existing) = self.peers.get(&remote) else {
            self.announce(id, remote, channels, now);
            if let Some(kad) = &mut self.kad {
                kad.on_connected(remote, info.listen_addrs, now);
            }
            self.drain_kad(now);
            return;
        };
        // Two connections to one peer: both sides keep the one dialed by the lower id.
        let dialer = |core: &Self, c: ConnId| match core.conns[&c].conn.direction() {
            Direction::Outbound => core.local_id(),
            Direction::Inbound => remote,
        };
        let (old_dialer, new_dialer) = (dialer(self, existing), dialer(self, id));
        if new_dialer < old_dialer {
            log::debug!("peer {}: new connection wins the duplicate", remote.short());
            let unsent = self
                .conns
                .get_mut(&existing)
                .map(|e| e.conn.take_unsent())
                .unwrap_or_default();
            if let Some(e) = self.conns.get_mut(&existing) {
                e.announced = false;
            }
            self.close_conn(existing, LocalClose::Duplicate, true, now);
            self.peers.insert(remote, id);
            let entry = self.conns.get_mut(&id).expect("established conn exists");
            entry.announced = true;
            let addr = entry.addr;
            let direction = entry.conn.direction();
            for (channel, data, opts) in unsent {
                // The new connection's queues start empty, so these fit.
                if entry.conn.send(channel, data, opts).is_err() {
                    Metrics::count(&mut self.metrics.drops, "migration");
                }
            }
            if let Some(p) = self.shared.peers.write().get_mut(&remote) {
                p.addr = addr;
                p.direction = direction;
                p.channels = channels;
            }
            self.touched.push(id);
        } else {
            log::debug!("peer {}: keeping the existing connection", remote.short());
            self.close_conn(id, LocalClose::Duplicate, true, now);
        }
    }

    fn announce(&mut self, id: ConnId, remote: PeerId, channels: Vec<ChannelId>, now: Instant) {
        let entry = self.conns.get_mut(&id).expect("established conn exists");
        entry.announced = true;
        let (addr, direction) = (entry.addr, entry.conn.direction());
        if entry.persistent || self.manager.is_persistent(addr, Some(remote)) {
            self.manager.persistent_connected(addr, remote);
        }
        self.peers.insert(remote, id);
        if let Some(r) = &mut self.router {
            r.add_peer(remote, addr.ip(), now);
        }
        self.shared.peers.write().insert(
            remote,
            SharedPeer {
                addr,
                direction,
                channels,
                queued: self.shared.new_queue_counts(),
            },
        );
        log::debug!("peer {} connected ({direction:?}, {addr})", remote.short());
        self.delivery_push(
            Event::PeerConnected {
                peer: remote,
                addr,
                direction,
            },
            None,
        );
    }

    /// The socket of `id` was dropped after [`Connection::is_finished`].
    pub(crate) fn on_closed(&mut self, id: ConnId, now: Instant) {
        let Some(mut entry) = self.conns.remove(&id) else {
            return;
        };
        let reason = entry
            .conn
            .disconnect_reason()
            .cloned()
            .unwrap_or(DisconnectReason::Eof);
        self.manager.release(entry.slot, entry.addr.ip());
        self.reassembly_used -= entry.reassembly;
        if entry.lookup_only {
            self.lookup_conn_gone(id, entry.expected.or(entry.conn.remote()), now);
            if reason.is_violation() {
                if let Some(peer) = entry.conn.remote() {
                    self.violation(peer, entry.addr, now);
                }
            }
            self.check_shutdown_done();
            return;
        }
        if let Some(mux) = entry.conn.mux() {
            for (channel, c) in mux.counters() {
                self.metrics.add_channel(channel, &c);
            }
        }
        let remote = entry.conn.remote();
        match (remote, &reason) {
            (None, DisconnectReason::Handshake(e)) => {
                Metrics::count(&mut self.metrics.handshakes_failed, handshake_label(e));
                log::debug!("handshake with {} failed: {e}", entry.addr);
                if entry.conn.direction() == Direction::Outbound {
                    self.delivery_push(
                        Event::DialFailed {
                            addr: entry.addr,
                            reason: reason.clone(),
                        },
                        None,
                    );
                }
            }
            (None, _) => {}
            (Some(peer), _) => {
                if reason.is_violation() {
                    log::info!("peer {} violated the protocol: {reason}", peer.short());
                    self.violation(peer, entry.addr, now);
                }
            }
        }
        if let (Some(peer), true) = (remote, entry.announced) {
            Metrics::count(&mut self.metrics.disconnects, reason.label());
            // Messages still queued are lost with the peer: counted, and their
            // counts freed.
            let unsent = entry.conn.take_unsent();
            if !unsent.is_empty() {
                *self.metrics.drops.entry("peer_gone").or_default() += unsent.len() as u64;
            }
            self.peers.remove(&peer);
            if let Some(r) = &mut self.router {
                r.remove_peer(&peer);
            }
            if let Some(p) = self.shared.peers.write().remove(&peer) {
                for (channel, _, _) in &unsent {
                    self.shared.dequeued(&p.queued, *channel, 1);
                }
            }
            log::debug!("peer {} disconnected: {reason}", peer.short());
            self.delivery_push(Event::PeerDisconnected { peer, reason }, None);
        }
        let persistent = entry.persistent || self.manager.is_persistent(entry.addr, remote);
        if persistent && remote.is_none_or(|p| !self.peers.contains_key(&p)) {
            self.manager.persistent_lost(entry.addr, remote, now);
        }
        self.check_shutdown_done();
    }

    // ------------------------------------------------------------ commands

    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Dial { addr, expected } => self.dial(addr, expected, false, now),
            Command::Send {
                peer,
                channel,
                data,
                opts,
            } => {
                if let Err(e) = self.send_to(peer, channel, data, opts) {
                    self.count_send_failure(peer, channel, &e);
                }
            }
            Command::Broadcast {
                peers,
                channel,
                data,
            } => {
                for peer in peers {
                    if let Err(e) =
                        self.send_to(peer, channel, data.clone(), SendOptions::default())
                    {
                        self.count_send_failure(peer, channel, &e);
                    }
                }
            }
            Command::Disconnect(peer) => {
                if let Some(&id) = self.peers.get(&peer) {
                    self.close_conn(id, LocalClose::Requested, true, now);
                }
            }
            Command::Ban(peer, duration) => {
                self.manager.ban(peer, duration, now);
                self.metrics.bans += 1;
                if let Some(&id) = self.peers.get(&peer) {
                    self.close_conn(id, LocalClose::Banned, false, now);
                }
            }
            Command::Metrics(reply) => {
                let _ = reply.try_send(self.metrics());
            }
            Command::Subscribe(topic) => {
                if let Some(r) = &mut self.router {
                    r.subscribe(&topic, now);
                }
                self.drain_gossip(now, None);
            }
            Command::Unsubscribe(topic) => {
                if let Some(r) = &mut self.router {
                    r.unsubscribe(&topic, now);
                }
                self.drain_gossip(now, None);
            }
            Command::Publish(msg) => {
                let (topic, id) = (msg.topic.clone(), crate::gossip::message::message_id(&msg));
                if let Some(r) = &mut self.router {
                    if let Err(reason) = r.publish_message(*msg, now) {
                        Metrics::count(&mut self.metrics.drops, "publish_no_peers");
                        self.delivery_push(Event::PublishFailed { topic, id, reason }, None);
                    }
                }
                self.drain_gossip(now, None);
            }
            Command::GossipMetrics(reply) => {
                let m = self
                    .router
                    .as_ref()
                    .map(Router::metrics)
                    .unwrap_or_default();
                let _ = reply.try_send(m);
            }
            Command::MeshPeers(topic, reply) => {
                let m = self
                    .router
                    .as_ref()
                    .map(|r| r.mesh(&topic))
                    .unwrap_or_default();
                let _ = reply.try_send(m);
            }
            Command::FindNode(key, reply) => {
                self.user_lookup(key, LookupKind::FindNode, reply, now)
            }
            Command::FindProviders(key, reply) => {
                self.user_lookup(key, LookupKind::GetProviders, reply, now)
            }
            Command::Provide(key) => {
                let id = self.kad.as_mut().and_then(|k| k.provide(key, now));
                self.user_lookups.extend(id);
                self.drain_kad(now);
            }
            Command::RoutingTable(reply) => {
                let table = self
                    .kad
                    .as_ref()
                    .map(|k| k.table().records().cloned().collect())
                    .unwrap_or_default();
                let _ = reply.try_send(table);
            }
            Command::Shutdown(done) => {
                self.shutdown.get_or_insert_with(Vec::new).push(done);
                let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                for id in ids {
                    self.close_conn(id, LocalClose::Shutdown, true, now);
                }
                self.check_shutdown_done();
            }
        }
    }

    fn send_to(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let id = *self.peers.get(&peer).ok_or(SendError::UnknownPeer)?;
        let entry = self.conns.get_mut(&id).ok_or(SendError::UnknownPeer)?;
        entry.conn.send(channel, data, opts)?;
        self.touched.push(id);
        Ok(())
    }

    /// A message accepted by the handle never reached a queue: free its count.
    fn count_send_failure(&mut self, peer: PeerId, channel: ChannelId, e: &SendError) {
        if let Some(p) = self.shared.peers.read().get(&peer) {
            self.shared.dequeued(&p.queued, channel, 1);
        }
        self.metrics_drop(match e {
            SendError::Full => "queue_full",
            SendError::UnknownPeer => "peer_gone",
            _ => "send_error",
        });
    }

    fn metrics_drop(&mut self, reason: &'static str) {
        Metrics::count(&mut self.metrics.drops, reason);
    }

    // ------------------------------------------------------------ timers

    /// When [`NodeCore::handle_timeout`] must run.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let idle = self.config.lookup_idle;
        [
            self.delivery.retry_in().map(|d| now + d),
            self.manager.next_dial(),
            self.kad.as_ref().and_then(|k| k.poll_timeout()),
            self.router.as_ref().map(Router::poll_timeout),
            self.kad
                .as_ref()
                .filter(|_| self.config.fill_outbound)
                .map(|_| self.next_fill),
            self.kad
                .as_ref()
                .filter(|k| k.table().is_empty() && !self.config.bootstrap.is_empty())
                .map(|_| self.next_bootstrap),
            self.conns
                .values()
                .filter(|e| e.lookup_only && e.conn.is_established() && !e.conn.is_closing())
                .map(|e| e.last_active + idle)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let mut released = Vec::new();
        self.delivery.flush(&mut released);
        self.apply_releases(released);
        if self.shutdown.is_some() {
            return;
        }
        for PersistentPeer { addr, id } in self.manager.due_dials(now) {
            self.dial(addr, id, true, now);
        }
        if let Some(kad) = &mut self.kad {
            kad.handle_timeout(now);
        }
        if let Some(r) = &mut self.router {
            if now >= r.poll_timeout() {
                // Peer exchange offers a few records from the DHT table.
                if let Some(kad) = &self.kad {
                    let mut px: Vec<_> = kad.table().records().take(64).cloned().collect();
                    self.rng.shuffle(&mut px);
                    px.truncate(16);
                    r.set_peer_exchange(px);
                }
                r.heartbeat(now);
            }
        }
        self.drain_gossip(now, None);
        self.close_idle_lookup_conns(now);
        let table_empty = self.kad.as_ref().is_some_and(|k| k.table().is_empty());
        if table_empty && !self.config.bootstrap.is_empty() && now >= self.next_bootstrap {
            self.dial_bootstrap(now);
        }
        if self.config.fill_outbound && now >= self.next_fill {
            self.next_fill = now + FILL_EVERY;
            self.fill_outbound(now);
        }
        self.drain_kad(now);
    }

    fn close_idle_lookup_conns(&mut self, now: Instant) {
        let idle = self.config.lookup_idle;
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, e)| {
                e.lookup_only
                    && e.conn.is_established()
                    && !e.conn.is_closing()
                    && e.last_active + idle <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.close_conn(id, LocalClose::Requested, true, now);
        }
    }

    /// Dials peers from the DHT table while outbound slots are free, at most two per
    /// /24 among outbound peers.
    fn fill_outbound(&mut self, now: Instant) {
        let Some(kad) = &self.kad else { return };
        let (_, outbound) = self.manager.slots();
        let mut free = self.config.limits.max_outbound.saturating_sub(outbound);
        if free == 0 {
            return;
        }
        let mut per_subnet = self.outbound_subnets();
        let mut busy: std::collections::HashSet<PeerId> = self.peers.keys().copied().collect();
        for e in self.conns.values().filter(|e| e.slot == Slot::Outbound) {
            busy.extend(e.expected);
        }
        let mut candidates: Vec<(PeerId, SocketAddr)> = kad
            .table()
            .records()
            .filter(|r| !busy.contains(&r.id))
            .filter_map(|r| r.addrs.first().map(|a| (r.id, *a)))
            .collect();
        self.rng.shuffle(&mut candidates);
        for (peer, addr) in candidates {
            if free == 0 {
                break;
            }
            let n = per_subnet.entry(subnet(addr.ip())).or_default();
            if *n >= MAX_OUTBOUND_PER_SUBNET || self.manager.is_banned(&peer, now) {
                continue;
            }
            *n += 1;
            free -= 1;
            self.dial(addr, Some(peer), false, now);
        }
    }

    fn user_lookup(
        &mut self,
        key: Key,
        kind: LookupKind,
        reply: Option<crossbeam_channel::Sender<LookupResult>>,
        now: Instant,
    ) {
        let Some(kad) = &mut self.kad else { return };
        let id = match kind {
            LookupKind::GetProviders => kad.find_providers(key, now),
            _ => kad.find_node(key, now),
        };
        if let Some(id) = id {
            match reply {
                Some(tx) => {
                    self.lookup_waiters.insert(id, tx);
                }
                None => {
                    self.user_lookups.insert(id);
                }
            }
        }
        self.drain_kad(now);
    }

    /// Carries out what the gossip router asked for. `credit` is the connection and
    /// size of the RPC just handled: its deliveries hold that credit until taken.
    fn drain_gossip(&mut self, now: Instant, mut credit: Option<(ConnId, usize)>) {
        let Some(router) = &mut self.router else {
            return self.release_rest(credit);
        };
        let outputs: Vec<GossipOutput> = std::iter::from_fn(|| router.poll_output()).collect();
        for out in outputs {
            match out {
                GossipOutput::Send {
                    peer,
                    bytes,
                    deadline,
                } => {
                    let Some(&id) = self.peers.get(&peer) else {
                        continue;
                    };
                    let Some(e) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    let opts = SendOptions {
                        deadline: Some(deadline),
                        replace_key: None,
                    };
                    if e.conn.send(GOSSIP_CHANNEL, Arc::new(bytes), opts).is_err() {
                        Metrics::count(&mut self.metrics.drops, "gossip_queue_full");
                    }
                    self.touched.push(id);
                }
                GossipOutput::Deliver(ev) => {
                    let release = credit.as_mut().map(|(conn, left)| {
                        let n = ev.data.len().min(*left);
                        *left -= n;
                        (*conn, GOSSIP_CHANNEL, n)
                    });
                    self.delivery_push(Event::Gossip(ev), release);
                }
                GossipOutput::Penalize { peer, penalty } => {
                    log::debug!("peer {} misbehaved in gossip: {penalty}", peer.short());
                    let full = self.config.limits.violation_penalty;
                    let delta = if penalty.is_severe() {
                        -full
                    } else {
                        -full / 5.0
                    };
                    self.punish(peer, delta, now);
                }
                GossipOutput::Connect { from, records } => {
                    let (_, outbound) = self.manager.slots();
                    let free = self.config.limits.max_outbound.saturating_sub(outbound);
                    // No slot free: the outbound peer whose full mesh pruned us makes room
                    // for one it offered, so a node is never stuck among full meshes.
                    let replace = free == 0
                        && self
                            .peers
                            .get(&from)
                            .and_then(|id| self.conns.get(id))
                            .is_some_and(|e| {
                                e.slot == Slot::Outbound
                                    && !self
                                        .config
                                        .persistent_peers
                                        .iter()
                                        .any(|p| p.id == Some(from))
                            });
                    if replace {
                        if let Some(&id) = self.peers.get(&from) {
                            if let Some(e) = self.conns.get_mut(&id) {
                                // Its slot goes to the replacement right away.
                                e.slot = self.manager.unslot(e.slot);
                            }
                            self.close_conn(id, LocalClose::Requested, true, now);
                        }
                    }
                    let dials = if replace { 1 } else { free.min(2) };
                    // Peer exchange obeys the per-subnet cap of outbound peers too.
                    let mut per_subnet = self.outbound_subnets();
                    let mut fresh = Vec::new();
                    for r in records {
                        let Some(addr) = r.addrs.first().copied() else {
                            continue;
                        };
                        let n = per_subnet.entry(subnet(addr.ip())).or_default();
                        if self.peers.contains_key(&r.id) || *n >= MAX_OUTBOUND_PER_SUBNET {
                            continue;
                        }
                        *n += 1;
                        fresh.push((r.id, addr));
                        if fresh.len() >= dials {
                            break;
                        }
                    }
                    for (peer, addr) in fresh {
                        self.dial(addr, Some(peer), false, now);
                    }
                }
            }
        }
        self.release_rest(credit);
    }

    /// Gives back the part of an RPC's credit no delivery holds.
    fn release_rest(&mut self, credit: Option<(ConnId, usize)>) {
        if let Some((id, left)) = credit.filter(|(_, left)| *left > 0) {
            if let Some(e) = self.conns.get_mut(&id) {
                e.conn.release(GOSSIP_CHANNEL, left);
                self.touched.push(id);
            }
        }
    }

    /// Outbound peers per subnet (dialing ones included).
    fn outbound_subnets(&self) -> HashMap<[u8; 6], usize> {
        let mut per_subnet: HashMap<[u8; 6], usize> = HashMap::new();
        for e in self.conns.values().filter(|e| e.slot == Slot::Outbound) {
            if e.conn.direction() == Direction::Outbound {
                *per_subnet.entry(subnet(e.addr.ip())).or_default() += 1;
            }
        }
        per_subnet
    }

    /// Lowers `peer`'s score; past the ban threshold it is banned, with the address
    /// it is seen on, and disconnected.
    fn punish(&mut self, peer: PeerId, delta: f64, now: Instant) {
        if !self.manager.adjust(peer, delta, now) {
            return;
        }
        let conn = self
            .peers
            .get(&peer)
            .or_else(|| self.kad_conns.get(&peer))
            .copied();
        let addr = conn.and_then(|id| self.conns.get(&id)).map(|e| e.addr);
        self.banned(peer, addr, now);
        if let Some(id) = conn {
            self.close_conn(id, LocalClose::Banned, false, now);
        }
    }

    /// A protocol violation by `peer`, seen at `addr`.
    fn violation(&mut self, peer: PeerId, addr: SocketAddr, now: Instant) {
        if self.manager.violation(peer, now) {
            self.banned(peer, Some(addr), now);
        }
    }

    fn banned(&mut self, peer: PeerId, addr: Option<SocketAddr>, now: Instant) {
        self.metrics.bans += 1;
        log::info!("peer {} banned", peer.short());
        if let Some(addr) = addr {
            let d = self.manager.ban_duration();
            self.manager.ban_ip(addr.ip(), d, now);
        }
    }

    /// Carries out what the DHT asked for: messages, penalties, finished lookups.
    /// Sends that fail at once feed back into the DHT, so this loops until it is quiet.
    fn drain_kad(&mut self, now: Instant) {
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
                    KadOutput::Misbehaved {
                        peer,
                        reason,
                        minor,
                    } => {
                        log::debug!("peer {} misbehaved in the DHT: {reason}", peer.short());
                        let penalty = if minor {
                            -self.config.limits.violation_penalty / 10.0
                        } else {
                            -self.config.limits.violation_penalty
                        };
                        self.punish(peer, penalty, now);
                    }
                }
            }
            for r in results {
                if let Some(tx) = self.lookup_waiters.remove(&r.id) {
                    let _ = tx.try_send(r);
                } else if self.user_lookups.remove(&r.id) {
                    self.delivery_push(Event::Lookup(r), None);
                }
            }
        }
    }

    fn send_kad(&mut self, peer: PeerId, addrs: Vec<SocketAddr>, bytes: Vec<u8>, now: Instant) {
        let conn = self
            .peers
            .get(&peer)
            .or_else(|| self.kad_conns.get(&peer))
            .copied();
        if let Some(id) = conn {
            if let Some(e) = self.conns.get_mut(&id) {
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
    fn evict_lookup_conn(&mut self, now: Instant) -> bool {
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

    /// When the driver must call [`NodeCore::conn_timeout`] for `id`.
    pub(crate) fn conn_poll_timeout(&self, id: ConnId) -> Option<Instant> {
        let e = self.conns.get(&id)?;
        match (e.connecting, e.conn.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs `id`'s deadlines; `true` if the dial timed out (the entry is gone).
    pub(crate) fn conn_timeout(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(e) = self.conns.get_mut(&id) else {
            return false;
        };
        if e.connecting.is_some_and(|d| now >= d) {
            self.on_dial_failed(id, std::io::ErrorKind::TimedOut, now);
            return true;
        }
        e.conn.handle_timeout(now);
        false
    }

    // ------------------------------------------------------------ outputs

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

fn handshake_label(e: &crate::error::HandshakeError) -> &'static str {
    use crate::error::HandshakeError as H;
    match e {
        H::MessageTooLarge { .. } | H::Malformed(_) => "malformed",
        H::VersionMismatch { .. } => "version",
        H::NetworkMismatch { .. } => "network",
        H::Rejected { .. } => "rejected",
        H::NoCommonCipher => "cipher",
        H::BadEphemeralKey | H::DecryptFailed | H::BadPublicKey | H::BadSignature => "auth",
        H::UnexpectedPeer { .. } => "unexpected_peer",
        H::SelfConnection => "self",
        H::BadNodeInfo(_) => "node_info",
        H::Timeout => "timeout",
        H::Closed | H::Poisoned => "closed",
        H::Rng => "rng",
    }
}
