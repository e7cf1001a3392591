//! Every node setting and its default, in one place.

use std::net::SocketAddr;
use std::time::Duration;

use crate::gossip::GossipConfig;
use crate::identity::PeerId;
use crate::kad::KadConfig;
use crate::mux::{ChannelConfig, MuxConfig};
use crate::secure::handshake::DEFAULT_HANDSHAKE_TIMEOUT;
use crate::secure::CipherSuite;

/// Default most inbound connections.
pub const DEFAULT_MAX_INBOUND: usize = 40;
/// Default most inbound connections still handshaking.
pub const DEFAULT_MAX_PENDING_INBOUND: usize = 64;
/// Default most outbound connections.
pub const DEFAULT_MAX_OUTBOUND: usize = 10;
/// Default most connections from one remote IP.
pub const DEFAULT_MAX_PER_IP: usize = 4;
/// Default dial timeout.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Default ban duration.
pub const DEFAULT_BAN_DURATION: Duration = Duration::from_secs(600);
/// Default bytes held for messages still arriving, all connections together.
pub const DEFAULT_REASSEMBLY_BUDGET: usize = 64 << 20;
/// Default capacity of the event queue to the application, in events.
pub const DEFAULT_EVENT_QUEUE: usize = 4096;

/// Limits and scoring of the peer manager.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// Most established inbound connections (lookup-only ones do not count).
    pub max_inbound: usize,
    /// Most inbound connections still handshaking.
    pub max_pending_inbound: usize,
    /// Most outbound connections (dialing ones included).
    pub max_outbound: usize,
    /// Most connections from one remote IP.
    pub max_per_ip: usize,
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Score below which a peer is disconnected and banned.
    pub ban_threshold: f64,
    /// Score lost per protocol violation.
    pub violation_penalty: f64,
    /// Scores decay halfway back to zero every this often.
    pub score_half_life: Duration,
    /// First redial delay of a persistent peer; doubles per failure.
    pub redial_base: Duration,
    /// Longest redial delay.
    pub redial_max: Duration,
    /// New inbound handshakes accepted per subnet (/24 for IPv4, /64 for IPv6);
    /// `None` = unlimited. Refused at accept, before any key agreement.
    pub handshake_rate: Option<HandshakeRate>,
}

/// A token bucket of new handshakes per subnet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandshakeRate {
    /// Sustained handshakes per second.
    pub per_sec: f64,
    /// Burst.
    pub burst: f64,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_inbound: DEFAULT_MAX_INBOUND,
            max_pending_inbound: DEFAULT_MAX_PENDING_INBOUND,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            max_per_ip: DEFAULT_MAX_PER_IP,
            ban_duration: DEFAULT_BAN_DURATION,
            ban_threshold: -100.0,
            violation_penalty: 50.0,
            score_half_life: Duration::from_secs(600),
            redial_base: Duration::from_secs(1),
            redial_max: Duration::from_secs(120),
            handshake_rate: Some(HandshakeRate {
                per_sec: 50.0,
                burst: 100.0,
            }),
        }
    }
}

/// Socket options applied to every connection.
///
/// Bytes sitting in kernel buffers are beyond the mux's priorities: an urgent message
/// written after them waits for all of them. The defaults therefore bound what the
/// kernel holds (unsent bytes on the sending side, the receive buffer on the other)
/// instead of letting autotuning grow both to megabytes.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// `SO_SNDBUF`; `None` keeps the system default (autotuned).
    pub send_buffer: Option<usize>,
    /// `SO_RCVBUF`; `None` keeps the system default (autotuned).
    pub recv_buffer: Option<usize>,
    /// `TCP_NOTSENT_LOWAT` (Linux): most bytes written but not yet sent.
    pub notsent_lowat: Option<u32>,
    /// Listen backlog.
    pub backlog: i32,
    /// TCP keepalive: idle time before the first probe (probes then every 10 s, 3
    /// of them); `None` turns it off.
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT` (Linux): written data unacknowledged for this long ends the
    /// connection in the kernel, whatever the peer advertises.
    pub user_timeout: Option<Duration>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            send_buffer: None,
            recv_buffer: Some(DEFAULT_RECV_BUFFER),
            notsent_lowat: Some(DEFAULT_NOTSENT_LOWAT),
            backlog: 1024,
            keepalive: Some(Duration::from_secs(30)),
            user_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Default `SO_RCVBUF`.
pub const DEFAULT_RECV_BUFFER: usize = 64 * 1024;
/// Default `TCP_NOTSENT_LOWAT`.
pub const DEFAULT_NOTSENT_LOWAT: u32 = 16 * 1024;

/// A peer to keep connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its id, if known; a different id there is refused.
    pub id: Option<PeerId>,
}

/// The whole configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Nodes of different networks refuse each other.
    pub network_id: String,
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Addresses to announce; defaults to the bound listen addresses.
    pub announce: Option<Vec<SocketAddr>>,
    /// Peers in this many different subnets must report the same observed IP (the
    /// address each handshake says it sees us on) before we announce it, with our
    /// listen port, after our own addresses: how a node behind NAT learns its
    /// public address. 0 never adopts one; nor does a node given `announce`.
    pub observed_addr_confirmations: usize,
    /// Channels and mux settings.
    pub mux: MuxConfig,
    /// Ciphers accepted, most preferred first.
    pub ciphers: Vec<CipherSuite>,
    /// Largest plaintext of one sealed frame.
    pub max_frame_plaintext: usize,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
    /// Dial timeout.
    pub dial_timeout: Duration,
    /// Peer limits and scoring.
    pub limits: PeerLimits,
    /// Socket options.
    pub socket: SocketOptions,
    /// Peers redialed whenever they are not connected.
    pub persistent_peers: Vec<PersistentPeer>,
    /// Peers exempt from the inbound and outbound limits (and from the per-IP limit
    /// when we dial them): a validator's sentries, a sentry's validator.
    pub unconditional_peers: Vec<PeerId>,
    /// Peers never passed on: kept out of the DHT table, so no DHT answer, peer
    /// exchange or record we give names them (a sentry's validator).
    pub private_peers: Vec<PeerId>,
    /// Bootstrap peers dialed at start (with their id, if known); the DHT finds the rest.
    pub bootstrap: Vec<PersistentPeer>,
    /// The Kademlia DHT (`None` turns it off).
    pub kad: Option<KadConfig>,
    /// Gossip broadcast (`None` turns it off).
    pub gossip: Option<GossipConfig>,
    /// Keep the outbound slots filled with peers from the DHT's table.
    pub fill_outbound: bool,
    /// A lookup-only connection (one that takes no slot: DHT lookups, requests to
    /// peers we are not connected to) closes after this long without traffic.
    pub lookup_idle: Duration,
    /// Lookup-only connections open at once, at most.
    pub max_lookup_conns: usize,
    /// Request/response limits.
    pub requests: crate::node::RequestConfig,
    /// Capacity of the application's event queue.
    pub event_queue: usize,
    /// Bytes all connections together may hold for messages still arriving; a
    /// message beyond is refused (its connection closed) rather than allocated.
    pub reassembly_budget: usize,
    /// Seed of the node's protocol randomness (jitter, sampling, ping nonces).
    pub seed: u64,
}

impl NodeConfig {
    /// Defaults for `network_id`, with no channels and no listen address.
    pub fn new(network_id: impl Into<String>) -> Self {
        NodeConfig {
            network_id: network_id.into(),
            listen: Vec::new(),
            announce: None,
            observed_addr_confirmations: 3,
            mux: MuxConfig::default(),
            ciphers: CipherSuite::default_preference(),
            max_frame_plaintext: crate::secure::frame::DEFAULT_MAX_PLAINTEXT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            limits: PeerLimits::default(),
            socket: SocketOptions::default(),
            persistent_peers: Vec::new(),
            unconditional_peers: Vec::new(),
            private_peers: Vec::new(),
            bootstrap: Vec::new(),
            kad: Some(KadConfig::default()),
            gossip: Some(GossipConfig::default()),
            fill_outbound: true,
            lookup_idle: Duration::from_secs(5),
            max_lookup_conns: 64,
            requests: crate::node::RequestConfig::default(),
            event_queue: DEFAULT_EVENT_QUEUE,
            reassembly_budget: DEFAULT_REASSEMBLY_BUDGET,
            seed: 42,
        }
    }

    /// The descriptor of channel `id`.
    pub fn channel(&self, id: u32) -> Option<&ChannelConfig> {
        self.mux.channel(id)
    }
}
