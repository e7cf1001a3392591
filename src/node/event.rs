//! What a node tells the application.

use std::net::SocketAddr;

use crate::conn::Direction;
use crate::error::DisconnectReason;
use crate::gossip::GossipEvent;
use crate::identity::PeerId;
use crate::kad::LookupResult;
use crate::mux::ChannelId;

/// An event of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer completed the handshake and is ready for messages.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its address on this connection.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
    },
    /// A peer's connection ended.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A dial failed before a peer was connected.
    DialFailed {
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        reason: DisconnectReason,
    },
    /// A DHT lookup asked for with `find_node`, `find_providers` or `provide` finished.
    Lookup(LookupResult),
    /// A gossip message arrived on a subscribed topic (once per message).
    Gossip(GossipEvent),
    /// A message handed to `publish` reached no peer (the publish returned `Ok`
    /// because publishing is asynchronous; this is its report).
    PublishFailed {
        /// Its topic.
        topic: String,
        /// Its id.
        id: crate::gossip::MessageId,
        /// Why.
        reason: crate::gossip::PublishError,
    },
    /// A message arrived.
    Message {
        /// From whom.
        peer: PeerId,
        /// On which channel.
        channel: ChannelId,
        /// Its bytes.
        data: Vec<u8>,
    },
}
