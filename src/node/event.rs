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
    /// Peers in several subnets see us on an address we did not announce (we are
    /// behind NAT, say): it is announced from now on, after our own addresses.
    AddressAdopted {
        /// The address: the IP the peers saw, our listen port.
        addr: std::net::SocketAddr,
    },
    /// A request arrived: answer it with
    /// [`NodeHandle::respond`](crate::NodeHandle::respond) under `id`. Requests
    /// always come through [`NodeHandle::events`](crate::NodeHandle::events), whoever
    /// takes the channel's plain messages.
    Request {
        /// Names it for the answer.
        id: crate::node::InboundRequestId,
        /// From whom (possibly a peer on a lookup-only connection, not a full peer).
        peer: PeerId,
        /// On which channel.
        channel: ChannelId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The answer to a request sent with
    /// [`NodeHandle::request_async`](crate::NodeHandle::request_async).
    Response {
        /// The id `request_async` returned.
        id: crate::node::OutboundRequestId,
        /// The peer asked.
        peer: PeerId,
        /// Its answer, or why there is none.
        result: Result<Vec<u8>, crate::node::RequestError>,
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
