//! State the node's loop shares with application threads: the peer table the handle
//! reads, and per-peer, per-channel counts of queued messages that make
//! `send` answer `Full` at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use std::time::Instant;

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
    /// Wakes senders that wait for room in a queue.
    pub(crate) room: Room,
}

/// Where `send_timeout` waits for a queue to free a place. The loop thread rings it
/// when messages leave a queue, a peer goes or the node closes; it costs nothing
/// while no one waits.
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// Bumped at every ring, so a waiter that looked before it sees it happened.
    generation: Mutex<u64>,
    rung: Condvar,
    waiters: AtomicUsize,
}

impl Room {
    /// Marks a waiter until the guard drops; rings between `enter` and the wait are
    /// not missed (the waiter compares generations).
    pub(crate) fn enter(&self) -> RoomGuard<'_> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        RoomGuard(self)
    }

    pub(crate) fn ring(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            *self.generation.lock() += 1;
            self.rung.notify_all();
        }
    }
}

/// A sender waiting in a [`Room`].
pub(crate) struct RoomGuard<'a>(&'a Room);

impl RoomGuard<'_> {
    /// The generation now: take it before trying, wait on it after failing.
    pub(crate) fn generation(&self) -> u64 {
        *self.0.generation.lock()
    }

    /// Waits until a ring after `seen` or `deadline`; `false` at the deadline.
    pub(crate) fn wait(&self, seen: u64, deadline: Instant) -> bool {
        let mut g = self.0.generation.lock();
        while *g == seen {
            if self.0.rung.wait_until(&mut g, deadline).timed_out() {
                return *g != seen;
            }
        }
        true
    }
}

impl Drop for RoomGuard<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
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
            room: Room::default(),
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
            let _ = queued[i].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                Some(q.saturating_sub(n))
            });
        }
        self.room.ring();
    }
}
