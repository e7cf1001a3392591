//! The public face of a node: a builder that starts it and a handle to use it.

pub(crate) mod command;
pub(crate) mod core;
pub(crate) mod delivery;
mod event;
#[cfg(any(test, fuzzing))]
pub mod harness;
pub(crate) mod shared;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::config::{NodeConfig, PeerLimits, PersistentPeer};
use crate::conn::Direction;
use crate::driver::node_slot::{NodeSlot, Replier};
use crate::driver::{socket, LoopCommand, Runtime, RuntimeShared};
use crate::error::{IdentityError, SendError};
use crate::gossip::{message, GossipConfig, MessageId, TopicMetrics, Validator, GOSSIP_CHANNEL};
use crate::identity::{Keypair, PeerId};
use crate::kad::key::Key;
use crate::kad::record::PeerRecord;
use crate::kad::{KadConfig, LookupResult, KAD_CHANNEL, MAX_KAD_MESSAGE};
use crate::metrics::Metrics;
use crate::mux::{ChannelConfig, ChannelId, RateLimit, SendOptions};
use crate::secure::HandshakeConfig;
use command::{Command, Reply, RequestId};
use delivery::Delivery;
pub use event::Event;
use shared::NodeShared;

/// Why a node did not start.
#[derive(Debug)]
pub enum StartError {
    /// Binding a listen address or starting the loop failed.
    Io(std::io::Error),
    /// The key could not be loaded or made.
    Identity(IdentityError),
    /// The configuration is inconsistent.
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "i/o: {e}"),
            StartError::Identity(e) => write!(f, "identity: {e}"),
            StartError::Config(e) => write!(f, "config: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

/// Builds and starts a node. Every setting has a default (see [`crate::config`]).
pub struct NodeBuilder {
    config: NodeConfig,
    key: Option<Arc<Keypair>>,
    dedicated: HashMap<ChannelId, usize>,
    validator: Option<Validator>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// A builder for a node of `network_id`.
    pub fn new(network_id: impl Into<String>) -> Self {
        NodeBuilder {
            config: NodeConfig::new(network_id),
            key: None,
            dedicated: HashMap::new(),
            validator: None,
        }
    }

    /// Uses this key (a fresh one is generated otherwise).
    pub fn keypair(mut self, key: Keypair) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Loads the key from `path`, creating it on first use.
    pub fn key_file(mut self, path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        self.key = Some(Arc::new(Keypair::load_or_create(path)?));
        Ok(self)
    }

    /// Listens on `addr` (port 0 picks a free one). Dials go out from its IP too.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen.push(addr);
        self
    }

    /// Adds a channel.
    pub fn channel(mut self, channel: ChannelConfig) -> Self {
        self.config.mux.channels.retain(|c| c.id != channel.id);
        self.config.mux.channels.push(channel);
        self
    }

    /// Delivers `channel`'s messages to a queue of their own (see
    /// [`NodeHandle::channel_events`]) holding up to `capacity` messages, so the
    /// application can take each channel at its own pace.
    pub fn dedicated_queue(mut self, channel: ChannelId, capacity: usize) -> Self {
        self.dedicated.insert(channel, capacity.max(1));
        self
    }

    /// Keeps a connection to this peer, redialing with backoff.
    pub fn persistent_peer(mut self, addr: SocketAddr, id: Option<PeerId>) -> Self {
        self.config
            .persistent_peers
            .push(PersistentPeer { addr, id });
        self
    }

    /// Sets connection limits and scoring.
    pub fn limits(mut self, limits: PeerLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Sets the keepalive ping interval and pong timeout.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.mux.ping_interval = interval;
        self.config.mux.pong_timeout = timeout;
        self
    }

    /// Limits each connection's send and receive rates.
    pub fn rate_limits(mut self, send: Option<RateLimit>, recv: Option<RateLimit>) -> Self {
        self.config.mux.send_rate = send;
        self.config.mux.recv_rate = recv;
        self
    }

    /// Sets the handshake timeout.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Seeds the node's protocol randomness.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Dials `addr` at start to join the network; the DHT finds the rest.
    pub fn bootstrap(self, addr: SocketAddr) -> Self {
        self.bootstrap_peer(addr, None)
    }

    /// Like [`NodeBuilder::bootstrap`], refusing anyone at `addr` but `id`.
    pub fn bootstrap_peer(mut self, addr: SocketAddr, id: Option<PeerId>) -> Self {
        self.config.bootstrap.push(PersistentPeer { addr, id });
        self
    }

    /// Sets gossip's settings, or turns it off with `None`.
    pub fn gossip(mut self, gossip: Option<GossipConfig>) -> Self {
        self.config.gossip = gossip;
        self
    }

    /// Checks every gossip message before it is delivered or forwarded. Runs on the
    /// loop thread: keep it quick.
    pub fn gossip_validator(
        mut self,
        validator: impl Fn(&str, &[u8]) -> crate::gossip::Validation + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(validator));
        self
    }

    /// Sets the DHT's settings, or turns it off with `None`.
    pub fn kad(mut self, kad: Option<KadConfig>) -> Self {
        self.config.kad = kad;
        self
    }

    /// Everything else.
    pub fn config_mut(&mut self) -> &mut NodeConfig {
        &mut self.config
    }

    /// Starts the node on a loop thread of its own.
    pub fn start(self) -> Result<NodeHandle, StartError> {
        let runtime = Runtime::spawn(true)?;
        self.start_on(&runtime)
    }

    /// Starts the node on a shared loop thread.
    pub fn start_on(self, runtime: &Runtime) -> Result<NodeHandle, StartError> {
        let NodeBuilder {
            mut config,
            key,
            dedicated,
            validator,
        } = self;
        if config.mux.channels.is_empty() {
            return Err(StartError::Config(
                "a node needs at least one channel".into(),
            ));
        }
        for id in dedicated.keys() {
            if config.channel(*id).is_none() {
                return Err(StartError::Config(format!(
                    "dedicated queue for unknown channel {id}"
                )));
            }
        }
        let key = match key {
            Some(k) => k,
            None => Arc::new(Keypair::generate().map_err(StartError::Identity)?),
        };
        complete_config(&mut config);
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for addr in &config.listen {
            let l = socket::listen(*addr, &config.socket)?;
            bound.push(l.local_addr()?);
            listeners.push(l);
        }
        config.listen.clone_from(&bound);
        let handshake = handshake_config(&config, &bound)?;
        let config = Arc::new(config);
        let shared = Arc::new(NodeShared::new(config.clone()));
        let (events_tx, events) = crossbeam_channel::bounded(config.event_queue.max(1));
        let mut channel_tx = HashMap::new();
        let mut channel_events = HashMap::new();
        for (id, capacity) in dedicated {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            channel_tx.insert(id, tx);
            channel_events.insert(id, rx);
        }
        let now = Instant::now();
        let mut core = core::NodeCore::new(
            config.clone(),
            Arc::new(handshake),
            key.clone(),
            validator,
            ring::rand::SystemRandom::new(),
            now,
            unix_secs(),
        );
        core.start(now);
        let slot = NodeSlot::new(
            core,
            shared.clone(),
            Delivery::new(events_tx, channel_tx),
            config.socket,
        );
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let added = runtime.shared.submit_blocking(LoopCommand::AddNode {
            slot: Box::new(slot),
            listeners,
            ready: ready_tx,
        });
        let index = match ready_rx.recv() {
            Ok(result) if added => result?,
            _ => return Err(StartError::Config("the loop thread is gone".into())),
        };
        log::info!(
            "node {} started, listening on {bound:?}",
            key.peer_id().short()
        );
        Ok(NodeHandle {
            inner: Arc::new(HandleInner {
                shared,
                runtime: runtime.shared.clone(),
                index,
                id: key.peer_id(),
                listen_addrs: bound,
                events,
                channel_events,
                key: key.clone(),
                seqno: std::sync::atomic::AtomicU64::new(now_nanos() >> 1),
                sign: config.gossip.as_ref().is_none_or(|g| g.sign),
            }),
        })
    }
}

/// A connected peer, as [`NodeHandle::peers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// Its address on this connection.
    pub addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// Channels it serves.
    pub channels: Vec<ChannelId>,
}

struct HandleInner {
    shared: Arc<NodeShared>,
    runtime: Arc<RuntimeShared>,
    index: usize,
    id: PeerId,
    listen_addrs: Vec<SocketAddr>,
    events: Receiver<Event>,
    channel_events: HashMap<ChannelId, Receiver<Event>>,
    key: Arc<Keypair>,
    seqno: std::sync::atomic::AtomicU64,
    sign: bool,
}

/// Gossip sequence numbers start from the wall clock so a restarted node never
/// reuses one (and so never reuses a message id).
/// Adds the protocol's own channels (gossip, DHT) to `config` unless the user
/// described them, and sizes gossip RPCs to the gossip channel.
pub(crate) fn complete_config(config: &mut NodeConfig) {
    if let Some(g) = &config.gossip {
        let max = g.max_message_size + 4096;
        if config.channel(GOSSIP_CHANNEL).is_none() {
            config.mux.channels.push(
                ChannelConfig::new(GOSSIP_CHANNEL)
                    .priority(2)
                    .max_message_size(max)
                    .recv_window((2 * max).max(8 << 20))
                    .send_queue_capacity(4096)
                    .announce_first_fragment(true),
            );
        }
    }
    // Our RPCs are packed to what the gossip channel carries.
    if let (Some(g), Some(c)) = (&mut config.gossip, config.mux.channel(GOSSIP_CHANNEL)) {
        g.rpc_limits.max_bytes = c.max_message_size;
    }
    if config.kad.is_some() && config.channel(KAD_CHANNEL).is_none() {
        config.mux.channels.push(
            ChannelConfig::new(KAD_CHANNEL)
                .priority(4)
                .max_message_size(MAX_KAD_MESSAGE)
                .recv_window(4 * MAX_KAD_MESSAGE)
                .send_queue_capacity(256),
        );
    }
}

/// What the handshake tells peers, from the completed config and bound addresses.
pub(crate) fn handshake_config(
    config: &NodeConfig,
    bound: &[SocketAddr],
) -> Result<HandshakeConfig, StartError> {
    let mut handshake = HandshakeConfig::new(config.network_id.clone());
    handshake.ciphers.clone_from(&config.ciphers);
    handshake.max_frame_plaintext = config.max_frame_plaintext;
    handshake.timeout = config.handshake_timeout;
    handshake.node_info.listen_addrs = config.announce.clone().unwrap_or_else(|| bound.to_vec());
    handshake.node_info.channels = config.mux.channels.iter().map(|c| c.id).collect();
    // Announce what we accept, so peers stay within it rather than guess.
    handshake.node_info.max_frame_plaintext = Some(config.max_frame_plaintext);
    handshake.node_info.channel_max_message = config
        .mux
        .channels
        .iter()
        .map(|c| c.max_message_size as u64)
        .collect();
    handshake
        .validate()
        .map_err(|e| StartError::Config(format!("handshake settings: {e}")))?;
    Ok(handshake)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A handle to a running node: cheap to clone, usable from any thread. Every call
/// returns at once.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.inner.id.short())
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.id
    }

    /// The addresses it listens on.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.inner.listen_addrs
    }

    /// Events: connections, dial failures and messages of channels without a
    /// dedicated queue.
    pub fn events(&self) -> Receiver<Event> {
        self.inner.events.clone()
    }

    /// The messages of a channel that has a dedicated queue.
    pub fn channel_events(&self, channel: ChannelId) -> Option<Receiver<Event>> {
        self.inner.channel_events.get(&channel).cloned()
    }

    fn submit(&self, cmd: Command) -> Result<(), SendError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        self.inner
            .runtime
            .submit(LoopCommand::Node(self.inner.index, cmd))
            .map_err(|_| SendError::Full)
    }

    /// Dials `addr`; with `expected`, any other peer there is refused. The outcome
    /// arrives as [`Event::PeerConnected`] or [`Event::DialFailed`].
    pub fn dial(&self, addr: SocketAddr, expected: Option<PeerId>) -> Result<(), SendError> {
        self.submit(Command::Dial { addr, expected })
    }

    /// Queues `data` to `peer` on `channel`.
    pub fn send(&self, peer: PeerId, channel: ChannelId, data: Vec<u8>) -> Result<(), SendError> {
        self.send_with(peer, channel, data, SendOptions::default())
    }

    /// [`NodeHandle::send`] with a deadline or replace key.
    pub fn send_with(
        &self,
        peer: PeerId,
        channel: ChannelId,
        data: Vec<u8>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let index = self.check_channel(channel, data.len())?;
        let peers = self.inner.shared.peers.read();
        let p = peers.get(&peer).ok_or(SendError::UnknownPeer)?;
        if !p.channels.contains(&channel) {
            return Err(SendError::UnknownChannel(channel));
        }
        let queued = p.queued.clone();
        drop(peers);
        self.reserve(&queued[index], channel)?;
        let data = Arc::new(data);
        self.submit(Command::Send {
            peer,
            channel,
            data,
            opts,
        })
        .inspect_err(|_| {
            queued[index].fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Queues `data` on `channel` to every connected peer serving it whose queue has
    /// room; returns to how many.
    pub fn broadcast(&self, channel: ChannelId, data: Vec<u8>) -> Result<usize, SendError> {
        let index = self.check_channel(channel, data.len())?;
        let mut targets = Vec::new();
        for (id, p) in self.inner.shared.peers.read().iter() {
            if p.channels.contains(&channel) && self.reserve(&p.queued[index], channel).is_ok() {
                targets.push((*id, p.queued.clone()));
            }
        }
        let count = targets.len();
        if count == 0 {
            return Ok(0);
        }
        let peers = targets.iter().map(|(id, _)| *id).collect();
        let data = Arc::new(data);
        self.submit(Command::Broadcast {
            peers,
            channel,
            data,
        })
        .inspect_err(|_| {
            for (_, q) in &targets {
                q[index].fetch_sub(1, Ordering::AcqRel);
            }
        })?;
        Ok(count)
    }

    fn check_channel(&self, channel: ChannelId, len: usize) -> Result<usize, SendError> {
        let shared = &self.inner.shared;
        let index = shared
            .channel_index(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        let max = shared
            .config
            .channel(channel)
            .map_or(0, |c| c.max_message_size);
        if len > max {
            return Err(SendError::TooLarge { size: len, max });
        }
        Ok(index)
    }

    fn reserve(
        &self,
        queued: &std::sync::atomic::AtomicUsize,
        channel: ChannelId,
    ) -> Result<(), SendError> {
        let cap = self
            .inner
            .shared
            .config
            .channel(channel)
            .map_or(0, |c| c.send_queue_capacity);
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < cap).then_some(q + 1)
            })
            .map(drop)
            .map_err(|_| SendError::Full)
    }

    /// The connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner
            .shared
            .peers
            .read()
            .iter()
            .map(|(id, p)| PeerInfo {
                id: *id,
                addr: p.addr,
                direction: p.direction,
                channels: p.channels.clone(),
            })
            .collect()
    }

    /// Closes the connection to `peer` after sending what is queued.
    pub fn disconnect(&self, peer: PeerId) -> Result<(), SendError> {
        self.submit(Command::Disconnect(peer))
    }

    /// Bans `peer` for `duration`, disconnecting it now.
    pub fn ban(&self, peer: PeerId, duration: Duration) -> Result<(), SendError> {
        self.submit(Command::Ban(peer, duration))
    }

    /// Sends the command `make` builds and waits up to `timeout` for its reply.
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(RequestId) -> Command,
        pick: fn(Reply) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, SendError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let reply: Replier = Box::new(move |r| {
            if let Some(v) = pick(r) {
                let _ = tx.try_send(v);
            }
        });
        self.inner
            .runtime
            .submit(LoopCommand::Request {
                index: self.inner.index,
                request,
                cmd: make(request),
                reply,
            })
            .map_err(|_| SendError::Full)?;
        rx.recv_timeout(timeout).map_err(|_| SendError::Closed)
    }

    /// A snapshot of the node's counters.
    pub fn metrics(&self) -> Result<Metrics, SendError> {
        self.ask(
            Command::Metrics,
            |r| match r {
                Reply::Metrics(m) => Some(*m),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// Subscribes to a gossip topic: its messages arrive as [`Event::Gossip`].
    pub fn subscribe(&self, topic: &str) -> Result<(), SendError> {
        self.submit(Command::Subscribe(topic.to_string()))
    }

    /// Leaves a gossip topic.
    pub fn unsubscribe(&self, topic: &str) -> Result<(), SendError> {
        self.submit(Command::Unsubscribe(topic.to_string()))
    }

    /// Publishes `data` to every subscriber of `topic`; returns the message id. The
    /// message is signed here, on the caller's thread.
    pub fn publish(&self, topic: &str, data: Vec<u8>) -> Result<MessageId, SendError> {
        let max = self
            .inner
            .shared
            .config
            .gossip
            .as_ref()
            .map_or(0, |g| g.max_message_size);
        if data.len() > max {
            return Err(SendError::TooLarge {
                size: data.len(),
                max,
            });
        }
        let seqno = self.inner.seqno.fetch_add(1, Ordering::Relaxed);
        let key = self.inner.sign.then_some(&*self.inner.key);
        let mut msg = message::build(key, topic, seqno, data);
        msg.hops = 1;
        let id = message::message_id(&msg);
        self.submit(Command::Publish(Box::new(msg)))?;
        Ok(id)
    }

    /// Gossip counters per topic.
    pub fn gossip_metrics(&self) -> Result<HashMap<String, TopicMetrics>, SendError> {
        self.ask(
            Command::GossipMetrics,
            |r| match r {
                Reply::GossipMetrics(m) => Some(m),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// The mesh peers of `topic`.
    pub fn mesh_peers(&self, topic: &str) -> Result<Vec<PeerId>, SendError> {
        self.ask(
            |request| Command::MeshPeers(topic.to_string(), request),
            |r| match r {
                Reply::MeshPeers(m) => Some(m),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// Starts a DHT lookup of the nodes closest to `key`; the answer arrives as
    /// [`Event::Lookup`].
    pub fn find_node(&self, key: Key) -> Result<(), SendError> {
        self.submit(Command::FindNode(key, None))
    }

    /// Starts a DHT lookup of the providers of `key`; the answer arrives as
    /// [`Event::Lookup`].
    pub fn find_providers(&self, key: Key) -> Result<(), SendError> {
        self.submit(Command::FindProviders(key, None))
    }

    /// Looks up the nodes closest to `key`, waiting at most `timeout`.
    pub fn find_node_blocking(
        &self,
        key: Key,
        timeout: Duration,
    ) -> Result<LookupResult, SendError> {
        self.ask(
            |request| Command::FindNode(key, Some(request)),
            pick_lookup,
            timeout,
        )
    }

    /// Looks up the providers of `key`, waiting at most `timeout`.
    pub fn find_providers_blocking(
        &self,
        key: Key,
        timeout: Duration,
    ) -> Result<LookupResult, SendError> {
        self.ask(
            |request| Command::FindProviders(key, Some(request)),
            pick_lookup,
            timeout,
        )
    }

    /// Announces this node as a provider of `key` (a service, a partition) to the
    /// nodes closest to it, and keeps republishing it.
    pub fn provide(&self, key: Key) -> Result<(), SendError> {
        self.submit(Command::Provide(key))
    }

    /// A snapshot of the DHT's routing table.
    pub fn routing_table(&self) -> Result<Vec<PeerRecord>, SendError> {
        self.ask(
            Command::RoutingTable,
            |r| match r {
                Reply::RoutingTable(t) => Some(t),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// Closes every connection after flushing what was accepted, and stops the node.
    /// Waits until done (at most the linger time plus a margin).
    pub fn shutdown(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let reply: Replier = Box::new(move |_| {
            let _ = tx.try_send(());
        });
        let submitted = self.inner.runtime.submit_blocking(LoopCommand::Request {
            index: self.inner.index,
            request,
            cmd: Command::Shutdown(request),
            reply,
        });
        self.inner.shared.closed.store(true, Ordering::Release);
        if submitted {
            let _ = rx.recv_timeout(crate::conn::LINGER + Duration::from_secs(3));
        }
    }
}

/// Request ids of every node in the process (unique is all they need to be).
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn pick_lookup(r: Reply) -> Option<LookupResult> {
    match r {
        Reply::Lookup(l) => Some(l),
        _ => None,
    }
}
