//! The public face of a node: a builder that starts it and a handle to use it.

pub(crate) mod command;
pub(crate) mod core;
pub(crate) mod delivery;
mod event;
mod handle;
mod handle_overlay;
mod handle_requests;
#[cfg(any(test, fuzzing))]
pub mod harness;
mod observed;
mod peer_details;
pub(crate) mod reactor;
mod requests;
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
use crate::gossip::{GossipConfig, MessageId, Outgoing, TopicMetrics, Validator, GOSSIP_CHANNEL};
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
use handle::HandleInner;
pub use handle::{NodeHandle, PeerInfo};
pub use handle_requests::{RouteOptions, RouteOutcome};
pub use peer_details::PeerDetails;
pub use reactor::{Reactor, ReactorError, ReactorEvent};
pub use requests::{InboundRequestId, OutboundRequestId, RequestConfig, RequestError};
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

    /// Keeps a connection to this peer, redialing with capped backoff for as long
    /// as the node runs. Its connection takes a reserved slot: the inbound and
    /// outbound limits (and the outbound slots the DHT fills) never refuse it.
    pub fn persistent_peer(mut self, addr: SocketAddr, id: Option<PeerId>) -> Self {
        self.config
            .persistent_peers
            .push(PersistentPeer { addr, id });
        self
    }

    /// Announces `addr` (in the handshake and the DHT record) instead of the bound
    /// listen addresses: the public address of a node behind NAT or a load
    /// balancer. Call again to announce several.
    pub fn announce(mut self, addr: SocketAddr) -> Self {
        self.config.announce.get_or_insert_with(Vec::new).push(addr);
        self
    }

    /// Exempts this peer from the inbound and outbound limits (CometBFT's
    /// unconditional peers): a validator's sentries, a sentry's validator.
    pub fn unconditional_peer(mut self, id: PeerId) -> Self {
        self.config.unconditional_peers.push(id);
        self
    }

    /// Never passes this peer on: it stays out of the DHT table and the provider
    /// store, so no DHT answer or peer exchange names it (a sentry's validator).
    pub fn private_peer(mut self, id: PeerId) -> Self {
        self.config.private_peers.push(id);
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
        // Peers cannot dial 0.0.0.0: announce an interface address instead.
        let dialable: Vec<SocketAddr> = bound.iter().map(|a| socket::dialable(*a)).collect();
        let handshake = handshake_config(&config, &dialable)?;
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
        core.handle_wall_clock(Instant::now(), std::time::SystemTime::now());
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
                    .announce_first_fragment(true)
                    .requests(false),
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
                .send_queue_capacity(256)
                .requests(false),
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
