//! Requests from application threads to the node core, and the core's replies.
//! A request that wants an answer carries a [`RequestId`]; the core answers with
//! [`Reply`] under the same id, and the driver hands it to whoever waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::gossip::TopicMetrics;
use crate::identity::PeerId;
use crate::kad::key::Key;
use crate::kad::record::PeerRecord;
use crate::kad::LookupResult;
use crate::metrics::Metrics;
use crate::mux::{ChannelId, SendOptions};
use crate::node::PeerDetails;
use crate::peer_score::Misbehavior;

pub(crate) enum Command {
    Dial {
        addr: SocketAddr,
        expected: Option<PeerId>,
    },
    Send {
        peer: PeerId,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
    },
    Broadcast {
        peers: Vec<PeerId>,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
    },
    Disconnect(PeerId),
    Ban(PeerId, Duration),
    Report(PeerId, Misbehavior, String),
    MarkGood(PeerId),
    PeerInfo(PeerId, RequestId),
    AddPersistent(SocketAddr, Option<PeerId>),
    RemovePersistent(SocketAddr),
    SetUnconditional(PeerId, bool),
    SetPrivate(PeerId, bool),
    ReportValidation(crate::gossip::MessageId, crate::gossip::Validation),
    Metrics(RequestId),
    Subscribe(String),
    Unsubscribe(String),
    Publish(Box<crate::gossip::Outgoing>),
    GossipMetrics(RequestId),
    MeshPeers(String, RequestId),
    /// With a request id the result is a [`Reply::Lookup`], else an event.
    FindNode(Key, Option<RequestId>),
    FindProviders(Key, Option<RequestId>),
    /// A key and the metadata to announce with it (checked for size).
    Provide(Key, Vec<u8>),
    StopProviding(Key),
    RoutingTable(RequestId),
    /// A request to `peer`: answered as `answer` says.
    Request {
        peer: PeerId,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        timeout: Duration,
        answer: crate::node::requests::Answer,
    },
    /// Orders peers for routing (see `rank_peers`).
    RankPeers(Vec<PeerId>, RequestId),
    /// The application's answer to a request it received.
    Respond(crate::node::InboundRequestId, Arc<Vec<u8>>),
    /// Answered with [`Reply::ShutDown`] once every connection is gone.
    Shutdown(RequestId),
}

/// Names a request so its reply finds the one waiting for it.
pub(crate) type RequestId = u64;

/// The core's answer to a request.
#[derive(Debug)]
pub(crate) enum Reply {
    Metrics(Box<Metrics>),
    GossipMetrics(std::collections::HashMap<String, TopicMetrics>),
    MeshPeers(Vec<PeerId>),
    Lookup(LookupResult),
    RoutingTable(Vec<PeerRecord>),
    PeerInfo(Option<Box<PeerDetails>>),
    Response(Result<Vec<u8>, crate::node::RequestError>),
    Ranked(Vec<PeerId>),
    ShutDown,
}
