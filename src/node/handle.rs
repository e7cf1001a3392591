//! The handle applications hold: sends, gossip, DHT lookups and questions to the
//! node's loop, from any thread.

use super::*;
use crate::node::delivery::NewQueue;
use crate::peer_score::Misbehavior;

/// A connected peer, as [`NodeHandle::peers`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// Its address on this connection.
    pub addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// Channels it serves.
    pub channels: Vec<ChannelId>,
}

pub(super) struct HandleInner {
    pub(super) shared: Arc<NodeShared>,
    pub(super) runtime: Arc<RuntimeShared>,
    pub(super) index: usize,
    pub(super) id: PeerId,
    pub(super) listen_addrs: Vec<SocketAddr>,
    pub(super) events: Receiver<Event>,
    pub(super) channel_events: HashMap<ChannelId, Receiver<Event>>,
    pub(super) key: Arc<Keypair>,
    pub(super) seqno: std::sync::atomic::AtomicU64,
    pub(super) sign: bool,
}

/// A handle to a running node: cheap to clone, usable from any thread. Every call
/// returns at once.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) inner: Arc<HandleInner>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeHandle({})", self.inner.id.short())
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.id
    }

    /// The addresses it listens on.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.inner.listen_addrs
    }

    /// Events: connections, dial failures, lookups, gossip, and the messages of
    /// channels that no reactor or dedicated queue takes. Every call returns the
    /// same queue, so two consumers split it between them: a part of the
    /// application that needs to see every peer takes a [`NodeHandle::reactor`].
    pub fn events(&self) -> Receiver<Event> {
        self.inner.events.clone()
    }

    /// A reactor taking the messages of `channels`, with a queue of `capacity`
    /// events: it hears first of every peer connected now, then, per peer in order,
    /// `PeerAdded`, its messages on these channels, `PeerRemoved`. Any number of
    /// reactors per node; a channel belongs to one reactor at most (and not to one
    /// with a dedicated queue). Their messages no longer reach [`NodeHandle::events`],
    /// which keeps the other channels' messages and every other event.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// use meshwire::ReactorEvent;
    /// const VOTES: u32 = 1;
    /// const PARTS: u32 = 2;
    /// let consensus = node.reactor(&[VOTES, PARTS], 1024)?;
    /// std::thread::spawn(move || {
    ///     while let Ok(ev) = consensus.recv() {
    ///         match ev {
    ///             ReactorEvent::PeerAdded(info) => println!("+ {}", info.id),
    ///             ReactorEvent::Message { peer, channel, data } => {
    ///                 let _ = (peer, channel, data); // a vote or a block part
    ///             }
    ///             ReactorEvent::PeerRemoved { peer, reason } => println!("- {peer}: {reason}"),
    ///         }
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn reactor(
        &self,
        channels: &[ChannelId],
        capacity: usize,
    ) -> Result<Reactor, ReactorError> {
        for c in channels {
            if self.inner.shared.channel_index(*c).is_none() {
                return Err(ReactorError::UnknownChannel(*c));
            }
        }
        let (tx, events) = crossbeam_channel::bounded(capacity.max(1));
        let mut channels = channels.to_vec();
        channels.sort_unstable();
        channels.dedup();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        self.add_queue(NewQueue::Reactor {
            channels: channels.clone(),
            tx,
            alive: alive.clone(),
        })?;
        Ok(Reactor {
            node: self.clone(),
            channels,
            events,
            alive,
        })
    }

    /// A queue of its own, holding up to `capacity` events, for the gossip
    /// messages of `topic` (which then no longer reach [`NodeHandle::events`]). As
    /// with channels, a message's credit goes back to its sender only when it enters
    /// the queue: a mempool that falls behind slows its transaction senders, and the
    /// other topics flow on. Once the receiver is dropped, the topic's messages go
    /// to [`NodeHandle::events`] again (the one that found it dropped is lost with it).
    pub fn gossip_queue(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<Receiver<Event>, ReactorError> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let topic = topic.to_string();
        self.add_queue(NewQueue::Topic { topic, tx })?;
        Ok(rx)
    }

    /// Registers `queue` with the node's loop and waits for the outcome.
    fn add_queue(&self, queue: NewQueue) -> Result<(), ReactorError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(ReactorError::Closed);
        }
        let (ready, outcome) = crossbeam_channel::bounded(1);
        let cmd = LoopCommand::AddQueue {
            index: self.inner.index,
            queue,
            ready,
        };
        if !self.inner.runtime.submit_blocking(cmd) {
            return Err(ReactorError::Closed);
        }
        outcome.recv().map_err(|_| ReactorError::Closed)?
    }

    /// The messages of a channel that has a dedicated queue.
    pub fn channel_events(&self, channel: ChannelId) -> Option<Receiver<Event>> {
        self.inner.channel_events.get(&channel).cloned()
    }

    pub(super) fn submit(&self, cmd: Command) -> Result<(), SendError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        self.inner
            .runtime
            .submit(LoopCommand::Node(self.inner.index, cmd))
            .map_err(|_| SendError::Full)
    }

    /// Dials `addr`; with `expected`, any other peer there is refused. The outcome
    /// arrives as [`Event::PeerConnected`] or [`Event::DialFailed`].
    pub fn dial(&self, addr: SocketAddr, expected: Option<PeerId>) -> Result<(), SendError> {
        self.submit(Command::Dial { addr, expected })
    }

    /// Queues `data` to `peer` on `channel`.
    pub fn send(&self, peer: PeerId, channel: ChannelId, data: Vec<u8>) -> Result<(), SendError> {
        self.send_with(peer, channel, data, SendOptions::default())
    }

    /// [`NodeHandle::send`] with a deadline or replace key.
    pub fn send_with(
        &self,
        peer: PeerId,
        channel: ChannelId,
        data: Vec<u8>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        let (index, queued) = self.send_target(peer, channel, data.len())?;
        self.reserve(&queued[index], channel)?;
        let data = Arc::new(data);
        self.submit(Command::Send {
            peer,
            channel,
            data,
            opts,
        })
        .inspect_err(|_| {
            queued[index].fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// [`NodeHandle::send_with`] that waits up to `timeout` for room in the peer's
    /// queue instead of answering [`SendError::Full`]: [`SendError::TimedOut`] if
    /// none came. Any other refusal (unknown peer or channel, too large, closed)
    /// comes at once, and a peer that leaves while we wait is
    /// [`SendError::UnknownPeer`]. Not for the node's own loop thread (a gossip
    /// validator), which is what makes room.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle, peer: meshwire::PeerId) -> Result<(), meshwire::SendError> {
    /// use std::time::Duration;
    /// use meshwire::mux::SendOptions;
    /// node.send_timeout(peer, 1, b"block part".to_vec(), SendOptions::default(), Duration::from_secs(1))?;
    /// # Ok(()) }
    /// ```
    pub fn send_timeout(
        &self,
        peer: PeerId,
        channel: ChannelId,
        data: Vec<u8>,
        opts: SendOptions,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let deadline = Instant::now() + timeout;
        let room = self.inner.shared.room.enter();
        let (index, queued) = loop {
            let seen = room.generation();
            let (index, queued) = self.send_target(peer, channel, data.len())?;
            match self.reserve(&queued[index], channel) {
                Ok(()) => break (index, queued),
                Err(SendError::Full) => {
                    if self.inner.shared.closed.load(Ordering::Acquire) {
                        return Err(SendError::Closed);
                    }
                    if !room.wait(seen, deadline) {
                        return Err(SendError::TimedOut);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        drop(room);
        let cmd = LoopCommand::Node(
            self.inner.index,
            Command::Send {
                peer,
                channel,
                data: Arc::new(data),
                opts,
            },
        );
        self.inner
            .runtime
            .submit_until(cmd, deadline)
            .inspect_err(|_| {
                queued[index].fetch_sub(1, Ordering::SeqCst);
            })
    }

    /// The channel's index and the peer's queue counts, if a message of `len` bytes
    /// may go to `peer` on `channel` at all.
    fn send_target(
        &self,
        peer: PeerId,
        channel: ChannelId,
        len: usize,
    ) -> Result<(usize, Arc<[std::sync::atomic::AtomicUsize]>), SendError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let index = self.check_channel(channel, len)?;
        let peers = self.inner.shared.peers.read();
        let p = peers.get(&peer).ok_or(SendError::UnknownPeer)?;
        if !p.channels.contains(&channel) {
            return Err(SendError::UnknownChannel(channel));
        }
        Ok((index, p.queued.clone()))
    }

    /// Queues `data` on `channel` to every connected peer serving it whose queue has
    /// room; returns to how many.
    pub fn broadcast(&self, channel: ChannelId, data: Vec<u8>) -> Result<usize, SendError> {
        let index = self.check_channel(channel, data.len())?;
        let mut targets = Vec::new();
        for (id, p) in self.inner.shared.peers.read().iter() {
            if p.channels.contains(&channel) && self.reserve(&p.queued[index], channel).is_ok() {
                targets.push((*id, p.queued.clone()));
            }
        }
        let count = targets.len();
        if count == 0 {
            return Ok(0);
        }
        let peers = targets.iter().map(|(id, _)| *id).collect();
        let data = Arc::new(data);
        self.submit(Command::Broadcast {
            peers,
            channel,
            data,
        })
        .inspect_err(|_| {
            for (_, q) in &targets {
                q[index].fetch_sub(1, Ordering::SeqCst);
            }
        })?;
        Ok(count)
    }

    fn check_channel(&self, channel: ChannelId, len: usize) -> Result<usize, SendError> {
        let shared = &self.inner.shared;
        let index = shared
            .channel_index(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        let max = shared
            .config
            .channel(channel)
            .map_or(0, |c| c.max_message_size);
        if len > max {
            return Err(SendError::TooLarge { size: len, max });
        }
        Ok(index)
    }

    fn reserve(
        &self,
        queued: &std::sync::atomic::AtomicUsize,
        channel: ChannelId,
    ) -> Result<(), SendError> {
        let cap = self
            .inner
            .shared
            .config
            .channel(channel)
            .map_or(0, |c| c.send_queue_capacity);
        queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < cap).then_some(q + 1)
            })
            .map(drop)
            .map_err(|_| SendError::Full)
    }

    /// The connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner
            .shared
            .peers
            .read()
            .iter()
            .map(|(id, p)| PeerInfo {
                id: *id,
                addr: p.addr,
                direction: p.direction,
                channels: p.channels.clone(),
            })
            .collect()
    }

    /// Closes the connection to `peer` after sending what is queued.
    pub fn disconnect(&self, peer: PeerId) -> Result<(), SendError> {
        self.submit(Command::Disconnect(peer))
    }

    /// Bans `peer` for `duration`, disconnecting it now.
    pub fn ban(&self, peer: PeerId, duration: Duration) -> Result<(), SendError> {
        self.submit(Command::Ban(peer, duration))
    }

    /// The verdict on a gossip message delivered with `needs_verdict` (with
    /// [`crate::gossip::GossipConfig::deferred_validation`]): `Accept` forwards it,
    /// `Reject` drops it and costs its sender, `Ignore` drops it. Call from any
    /// thread, so validation (a mempool's CheckTx) runs off the loop thread. A
    /// verdict after the timeout, or on an unknown id, is counted in the metrics'
    /// drops as `verdict_unknown_id`.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle, ev: meshwire::gossip::GossipEvent) -> Result<(), meshwire::SendError> {
    /// use meshwire::gossip::Validation;
    /// let ok = !ev.data.is_empty(); // the application's CheckTx
    /// node.report_validation(ev.id, if ok { Validation::Accept } else { Validation::Reject })?;
    /// # Ok(()) }
    /// ```
    pub fn report_validation(
        &self,
        id: crate::gossip::MessageId,
        verdict: crate::gossip::Validation,
    ) -> Result<(), SendError> {
        self.submit(Command::ReportValidation(id, verdict))
    }

    /// Reports that `peer` misbehaved at the application's level (a bad vote, an
    /// invalid block part): its score drops by what `what` costs, the same score
    /// the transport, DHT and gossip feed, and it is banned (and disconnected) when
    /// the score says so. `reason` goes to the log.
    ///
    /// ```no_run
    /// # fn f(node: &meshwire::NodeHandle, peer: meshwire::PeerId) -> Result<(), meshwire::SendError> {
    /// use meshwire::Misbehavior;
    /// node.report(peer, Misbehavior::Invalid, "vote signature does not verify")?;
    /// node.report(peer, Misbehavior::Malicious, "two votes for one height and round")?; // banned
    /// # Ok(()) }
    /// ```
    pub fn report(&self, peer: PeerId, what: Misbehavior, reason: &str) -> Result<(), SendError> {
        let reason: String = reason.chars().take(200).collect();
        self.submit(Command::Report(peer, what, reason))
    }

    /// The peer was useful (a valid block part, a vote we needed): a small credit
    /// to its score, capped so that marks cannot buy more than one violation's
    /// worth of slack.
    pub fn mark_good(&self, peer: PeerId) -> Result<(), SendError> {
        self.submit(Command::MarkGood(peer))
    }

    /// What the node knows of a connected peer: score and its parts, keepalive RTT,
    /// version, direction, flags, connected-since and traffic per channel. `None`
    /// if it is not connected.
    pub fn peer_info(&self, peer: PeerId) -> Result<Option<PeerDetails>, SendError> {
        self.ask(
            |r| Command::PeerInfo(peer, r),
            |r| match r {
                Reply::PeerInfo(d) => Some(d.map(|d| *d)),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// Adds a persistent peer at runtime (see [`NodeBuilder::persistent_peer`]).
    pub fn add_persistent_peer(
        &self,
        addr: SocketAddr,
        id: Option<PeerId>,
    ) -> Result<(), SendError> {
        self.submit(Command::AddPersistent(addr, id))
    }

    /// Stops redialing the persistent peer at `addr`; a connection to it stays.
    pub fn remove_persistent_peer(&self, addr: SocketAddr) -> Result<(), SendError> {
        self.submit(Command::RemovePersistent(addr))
    }

    /// Makes `peer` exempt from the connection limits, or not (see
    /// [`NodeBuilder::unconditional_peer`]).
    pub fn set_unconditional(&self, peer: PeerId, yes: bool) -> Result<(), SendError> {
        self.submit(Command::SetUnconditional(peer, yes))
    }

    /// Makes `peer` private, or not (see [`NodeBuilder::private_peer`]).
    pub fn set_private(&self, peer: PeerId, yes: bool) -> Result<(), SendError> {
        self.submit(Command::SetPrivate(peer, yes))
    }

    /// Sends the command `make` builds and waits up to `timeout` for its reply.
    pub(super) fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(RequestId) -> Command,
        pick: fn(Reply) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, SendError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let (cmd, rx) = self.with_reply(make, pick);
        self.inner
            .runtime
            .submit(cmd)
            .map_err(|_| SendError::Full)?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => SendError::TimedOut,
            crossbeam_channel::RecvTimeoutError::Disconnected => SendError::Closed,
        })
    }

    /// The loop command for the request `make` builds, and where its reply (what
    /// `pick` takes of it) will arrive.
    pub(super) fn with_reply<T: Send + 'static>(
        &self,
        make: impl FnOnce(RequestId) -> Command,
        pick: fn(Reply) -> Option<T>,
    ) -> (LoopCommand, Receiver<T>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let reply: Replier = Box::new(move |r| {
            if let Some(v) = pick(r) {
                let _ = tx.try_send(v);
            }
        });
        let cmd = LoopCommand::Request {
            index: self.inner.index,
            request,
            cmd: make(request),
            reply,
        };
        (cmd, rx)
    }

    /// A snapshot of the node's counters.
    pub fn metrics(&self) -> Result<Metrics, SendError> {
        self.ask(
            Command::Metrics,
            |r| match r {
                Reply::Metrics(m) => Some(*m),
                _ => None,
            },
            Duration::from_secs(5),
        )
    }

    /// Closes every connection after flushing what was accepted, and stops the node.
    /// Waits until done (at most the linger time plus a margin).
    pub fn shutdown(&self) {
        let (cmd, rx) = self.with_reply(Command::Shutdown, |_| Some(()));
        let submitted = self.inner.runtime.submit_blocking(cmd);
        self.inner.shared.closed.store(true, Ordering::Release);
        self.inner.shared.room.ring();
        if submitted {
            let _ = rx.recv_timeout(crate::conn::LINGER + Duration::from_secs(3));
        }
    }
}

/// Request ids of every node in the process (unique is all they need to be).
pub(super) static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
