//! What a node knows about one connected peer, as [`crate::NodeHandle::peer_info`]
//! reports it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::conn::Direction;
use crate::identity::PeerId;
use crate::mux::{ChannelCounters, ChannelId};
use crate::peer_score::PeerScore;

/// A connected peer in detail: its connection, its score and its traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerDetails {
    /// Its id.
    pub id: PeerId,
    /// Its address on this connection.
    pub addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// The software and version it announced (e.g. `meshwire/0.1.0`).
    pub version: String,
    /// Channels it serves.
    pub channels: Vec<ChannelId>,
    /// Its score and the parts the transport, DHT, gossip and application add.
    pub score: PeerScore,
    /// Smoothed round-trip time of keepalive pings (`None` before the first pong,
    /// about one ping interval after connecting).
    pub rtt: Option<Duration>,
    /// A persistent peer: redialed whenever it is lost.
    pub persistent: bool,
    /// An unconditional peer: exempt from the inbound and outbound limits.
    pub unconditional: bool,
    /// When this connection was announced.
    pub connected_since: Instant,
    /// Messages and bytes per channel, both ways, on this connection.
    pub traffic: Vec<(ChannelId, ChannelCounters)>,
    /// The address the peer says it sees us on (from its handshake).
    pub observed_addr: Option<SocketAddr>,
    /// Bytes read from this connection's socket (frames, headers and all).
    pub bytes_read: u64,
    /// Bytes written to it.
    pub bytes_written: u64,
}
