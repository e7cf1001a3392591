//! State the node's loop shares with application threads: the peer table the handle
//! reads, and per-peer, per-channel counts of queued messages that make
//! `send` answer `Full` at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::config::NodeConfig;
use crate::conn::Direction;
use crate::identity::PeerId;
use crate::mux::ChannelId;

/// What the handle knows of a connected peer.
#[derive(Debug)]
pub(crate) struct SharedPeer {
    pub(crate) addr: SocketAddr,
    pub(crate) direction: Direction,
    /// Channels the peer said it serves.
    pub(crate) channels: Vec<ChannelId>,
    /// Messages queued to this peer, per channel index of our config.
    pub(crate) queued: Arc<[AtomicUsize]>,
}

/// Shared between a node's loop and its handles.
#[derive(Debug)]
pub(crate) struct NodeShared {
    pub(crate) config: Arc<NodeConfig>,
    /// Our channel ids, sorted; a channel's index here indexes `queued`.
    pub(crate) channel_ids: Vec<ChannelId>,
    pub(crate) peers: RwLock<HashMap<PeerId, SharedPeer>>,
    pub(crate) closed: AtomicBool,
}

impl NodeShared {
    pub(crate) fn new(config: Arc<NodeConfig>) -> Self {
        let mut channel_ids: Vec<ChannelId> = config.mux.channels.iter().map(|c| c.id).collect();
        channel_ids.sort_unstable();
        channel_ids.dedup();
        NodeShared {
            config,
            channel_ids,
            peers: RwLock::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn channel_index(&self, id: ChannelId) -> Option<usize> {
        self.channel_ids.binary_search(&id).ok()
    }

    pub(crate) fn new_queue_counts(&self) -> Arc<[AtomicUsize]> {
        self.channel_ids
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect()
    }

    /// Messages left `peer`'s queue on `channel` (sent, expired, replaced or dropped).
    pub(crate) fn dequeued(&self, queued: &[AtomicUsize], channel: ChannelId, n: usize) {
        if let Some(i) = self.channel_index(channel) {
            // Saturating: never wrap below zero whatever the interleaving.
            let _ = queued[i].fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
        }
    }
}
