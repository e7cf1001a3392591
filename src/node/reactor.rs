//! Reactors: the way a consensus engine's parts (consensus, mempool, evidence, block
//! sync) each take their own channels, as CometBFT's reactors do. A reactor sees
//! every peer arrive and leave, and its channels' messages in between, in order and
//! from its own queue; lifecycle events are never dropped.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::error::{DisconnectReason, SendError};
use crate::identity::PeerId;
use crate::mux::ChannelId;
use crate::node::{NodeHandle, PeerInfo};

/// What a reactor hears, per peer always in this order: `PeerAdded`, then messages
/// on the reactor's channels, then `PeerRemoved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReactorEvent {
    /// A peer is connected (or was when the reactor was created).
    PeerAdded(PeerInfo),
    /// A message on one of the reactor's channels, from a peer it was told about.
    Message {
        /// From whom.
        peer: PeerId,
        /// On which of the reactor's channels.
        channel: ChannelId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The peer's connection ended; nothing more comes from it until a new
    /// `PeerAdded`.
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Why a reactor could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReactorError {
    /// The node has no such channel.
    UnknownChannel(ChannelId),
    /// Another reactor, or a dedicated queue, already takes the channel's messages.
    ChannelTaken(ChannelId),
    /// Another queue already takes the gossip topic's messages.
    TopicTaken(String),
    /// The node is shutting down.
    Closed,
}

impl fmt::Display for ReactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReactorError::UnknownChannel(c) => write!(f, "unknown channel {c}"),
            ReactorError::ChannelTaken(c) => write!(f, "channel {c} already has a reader"),
            ReactorError::TopicTaken(t) => write!(f, "topic {t:?} already has a queue"),
            ReactorError::Closed => f.write_str("node closed"),
        }
    }
}

impl std::error::Error for ReactorError {}

/// One part of the application with its own channels and its own ordered stream of
/// peers and messages. Created with [`NodeHandle::reactor`]; dropping it gives its
/// channels back to [`NodeHandle::events`].
///
/// Backpressure is per reactor: a message's receive credit goes back to its sender
/// only when it enters the reactor's queue, so a slow reactor throttles the peers
/// sending on its channels, and no other reactor.
#[derive(Debug)]
pub struct Reactor {
    pub(crate) node: NodeHandle,
    pub(crate) channels: Vec<ChannelId>,
    pub(crate) events: Receiver<ReactorEvent>,
    pub(crate) alive: Arc<AtomicBool>,
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

impl Reactor {
    /// The channels whose messages this reactor takes.
    pub fn channels(&self) -> &[ChannelId] {
        &self.channels
    }

    /// Waits for the next event.
    pub fn recv(&self) -> Result<ReactorEvent, SendError> {
        self.events.recv().map_err(|_| SendError::Closed)
    }

    /// Waits up to `timeout` for the next event ([`SendError::TimedOut`] if none).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ReactorEvent, SendError> {
        self.events.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => SendError::TimedOut,
            RecvTimeoutError::Disconnected => SendError::Closed,
        })
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<ReactorEvent> {
        self.events.try_recv().ok()
    }

    /// The queue itself, for `select!` over several reactors.
    pub fn receiver(&self) -> &Receiver<ReactorEvent> {
        &self.events
    }

    /// Queues `data` to `peer` on `channel` (as [`NodeHandle::send`]).
    pub fn send(&self, peer: PeerId, channel: ChannelId, data: Vec<u8>) -> Result<(), SendError> {
        self.node.send(peer, channel, data)
    }

    /// The node this reactor belongs to.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }
}
