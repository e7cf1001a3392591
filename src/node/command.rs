//! Requests from application threads to the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::gossip::TopicMetrics;
use crate::identity::PeerId;
use crate::kad::key::Key;
use crate::kad::record::PeerRecord;
use crate::kad::LookupResult;
use crate::metrics::Metrics;
use crate::mux::{ChannelId, SendOptions};
use crate::wire;

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
    Metrics(Sender<Metrics>),
    Subscribe(String),
    Unsubscribe(String),
    Publish(Box<wire::GossipMessage>),
    GossipMetrics(Sender<std::collections::HashMap<String, TopicMetrics>>),
    MeshPeers(String, Sender<Vec<PeerId>>),
    FindNode(Key, Option<Sender<LookupResult>>),
    FindProviders(Key, Option<Sender<LookupResult>>),
    Provide(Key),
    RoutingTable(Sender<Vec<PeerRecord>>),
    Shutdown(Sender<()>),
}
