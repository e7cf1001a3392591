//! Requests from application threads to the loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::identity::PeerId;
use crate::metrics::Metrics;
use crate::mux::{ChannelId, SendOptions};

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
    Shutdown(Sender<()>),
}
