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
use crate::identity::{Keypair, PeerId};
use crate::metrics::Metrics;
use crate::mux::{ChannelCounters, ChannelId, MuxConfig, SendOptions};
use crate::node::command::Command;
use crate::node::delivery::{Delivery, Release};
use crate::node::event::Event;
use crate::node::shared::{NodeShared, SharedPeer};
use crate::peers::PeerManager;
use crate::rng::Rng;
use crate::secure::HandshakeConfig;

/// A connection's id within its node.
pub(crate) type ConnId = usize;

/// How often waiting deliveries are retried.
const DELIVERY_RETRY: Duration = Duration::from_millis(1);

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
}

impl NodeCore {
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        handshake: Arc<HandshakeConfig>,
        key: Arc<Keypair>,
        shared: Arc<NodeShared>,
        delivery: Delivery,
        now: Instant,
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
        if let Err(refusal) = self.manager.admit(Direction::Inbound, addr.ip()) {
            log::debug!("refused inbound from {addr}: {refusal:?}");
            Metrics::count(&mut self.metrics.refused, refusal.label());
            return None;
        }
        self.metrics.accepted += 1;
        let conn = Connection::inbound(
            self.handshake.clone(),
            self.key.clone(),
            self.mux.clone(),
            now,
            self.rng.next_u64(),
        );
        let id = self.alloc();
        let persistent = false;
        self.conns.insert(
            id,
            Entry {
                conn,
                addr,
                connecting: None,
                announced: false,
                persistent,
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
        let fail = |core: &mut Self, reason: DisconnectReason| {
            core.metrics.dial_failures += 1;
            core.delivery_push(Event::DialFailed { addr, reason }, None);
            if persistent {
                core.manager.persistent_lost(addr, expected, now);
            }
        };
        if self.shutdown.is_some() {
            return;
        }
        if let Some(peer) = expected {
            if self.peers.contains_key(&peer) {
                return;
            }
            if self.manager.is_banned(&peer, now) {
                return fail(self, DisconnectReason::Local(LocalClose::Banned));
            }
        }
        if self.manager.admit(Direction::Outbound, addr.ip()).is_err() {
            return fail(self, DisconnectReason::Local(LocalClose::TooManyPeers));
        }
        let conn = match Connection::outbound(
            self.handshake.clone(),
            self.key.clone(),
            expected,
            self.mux.clone(),
            now,
            &self.sys_rng,
            self.rng.next_u64(),
        ) {
            Ok(conn) => conn,
            Err(reason) => {
                self.manager.release(Direction::Outbound, addr.ip());
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
            },
        );
        self.actions.push_back(Action::Dial {
            conn: id,
            addr,
            local: self.local_ip,
        });
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
            self.manager.release(Direction::Outbound, e.addr.ip());
            self.metrics.dial_failures += 1;
            log::debug!("dial {} failed: {kind}", e.addr);
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
            match event {
                ConnEvent::Established { remote, info } => {
                    self.on_established(id, remote, info.channels, now)
                }
                ConnEvent::Message { channel, data } => {
                    let Some(peer) = entry.conn.remote() else {
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
    }

    fn on_established(
        &mut self,
        id: ConnId,
        remote: PeerId,
        channels: Vec<ChannelId>,
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
        let Some(&existing) = self.peers.get(&remote) else {
            self.announce(id, remote, channels);
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

    fn announce(&mut self, id: ConnId, remote: PeerId, channels: Vec<ChannelId>) {
        let entry = self.conns.get_mut(&id).expect("established conn exists");
        entry.announced = true;
        let (addr, direction) = (entry.addr, entry.conn.direction());
        if entry.persistent || self.manager.is_persistent(addr, Some(remote)) {
            self.manager.persistent_connected(addr, remote);
        }
        self.peers.insert(remote, id);
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
        self.manager
            .release(entry.conn.direction(), entry.addr.ip());
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
                    if self.manager.violation(peer, now) {
                        self.metrics.bans += 1;
                        log::info!("peer {} banned", peer.short());
                    }
                }
            }
        }
        if let (Some(peer), true) = (remote, entry.announced) {
            Metrics::count(&mut self.metrics.disconnects, reason.label());
            // Messages still queued are lost with the peer; free their counts.
            let unsent = entry.conn.take_unsent();
            self.peers.remove(&peer);
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
        let delivery = self.delivery.is_blocked().then(|| now + DELIVERY_RETRY);
        match (delivery, self.manager.next_dial()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let mut released = Vec::new();
        self.delivery.flush(&mut released);
        self.apply_releases(released);
        if self.shutdown.is_none() {
            for PersistentPeer { addr, id } in self.manager.due_dials(now) {
                self.dial(addr, id, true, now);
            }
        }
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
