//! Request/response over the channels: the book of requests in flight both ways,
//! with the limits that keep a peer from pinning more than its share. Pure state:
//! the core feeds it and carries out what it answers.
//!
//! A request travels as a channel message tagged `REQUEST` under an id the requester
//! chose; the answer comes back on the same channel tagged `RESPONSE` (or `REFUSAL`)
//! under the same id (`wire/packet.proto`). Ids are this node's own counter, shared by
//! all peers, so an answer is matched by id and checked against the peer and
//! channel it was sent to: no other peer can answer in its place.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::collections::Map;
use crate::identity::PeerId;
use crate::mux::{ChannelId, RefuseReason};
use crate::node::command::RequestId;

/// Names a request this node received: pass it to
/// [`NodeHandle::respond`](crate::NodeHandle::respond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundRequestId(pub(crate) u64);

/// Names a request this node sent with
/// [`NodeHandle::request_async`](crate::NodeHandle::request_async); its
/// [`Event::Response`](crate::Event::Response) carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundRequestId(pub(crate) u64);

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// No answer came within the timeout.
    TimedOut,
    /// The peer refused it before its application saw it.
    Refused(RefuseReason),
    /// The connection to the peer ended before the answer came.
    Disconnected,
    /// The peer could not be reached: no connection, no address known or found in
    /// the DHT, or the dial failed.
    Unreachable,
    /// Too many of our requests to this peer wait for answers already
    /// ([`RequestConfig::max_outbound_per_peer`]).
    TooManyPending,
    /// No such application channel here, or the peer does not serve it.
    UnknownChannel(ChannelId),
    /// The request exceeds the channel's maximum message size.
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The channel's send queue to the peer is full.
    Full,
    /// The node is shutting down (or its command queue is full).
    Closed,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::TimedOut => f.write_str("request timed out"),
            RequestError::Refused(why) => write!(f, "request refused: {why}"),
            RequestError::Disconnected => f.write_str("peer disconnected before answering"),
            RequestError::Unreachable => f.write_str("peer unreachable"),
            RequestError::TooManyPending => f.write_str("too many requests pending to that peer"),
            RequestError::UnknownChannel(c) => write!(f, "unknown channel {c}"),
            RequestError::TooLarge { size, max } => {
                write!(
                    f,
                    "request of {size} bytes exceeds the channel limit of {max}"
                )
            }
            RequestError::Full => f.write_str("send queue full"),
            RequestError::Closed => f.write_str("node closed"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Limits of request/response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestConfig {
    /// Our requests to one peer waiting for answers, at most (more fail at once
    /// with [`RequestError::TooManyPending`]).
    pub max_outbound_per_peer: usize,
    /// One peer's requests waiting for our application's answers, at most; more
    /// are refused `Busy` without reaching the application.
    pub max_inbound_per_peer: usize,
    /// All peers' requests on one channel waiting for answers, at most (more are
    /// refused `Busy`).
    pub max_inbound_per_channel: usize,
    /// A received request the application has not answered within this long is
    /// forgotten (its place freed; a late answer is counted and dropped).
    pub inbound_timeout: Duration,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            max_outbound_per_peer: 32,
            max_inbound_per_peer: 32,
            max_inbound_per_channel: 256,
            inbound_timeout: Duration::from_secs(60),
        }
    }
}

/// Who waits for a request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A blocking call, through the reply channel.
    Reply(RequestId),
    /// An event under this id.
    Event(OutboundRequestId),
}

struct Outbound {
    peer: PeerId,
    channel: ChannelId,
    /// When it was booked (for the round trip of its answer).
    started: Instant,
    deadline: Instant,
    answer: Answer,
    /// The request, while it waits for a connection to the peer.
    unsent: Option<Arc<Vec<u8>>>,
}

/// A received request the application holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inbound {
    pub(crate) peer: PeerId,
    pub(crate) channel: ChannelId,
    /// The requester's id, for the answer.
    pub(crate) wire_id: u64,
    deadline: Instant,
}

/// Requests in flight, both ways.
pub(crate) struct RequestBook {
    config: RequestConfig,
    next_wire: u64,
    outbound: Map<u64, Outbound>,
    out_per_peer: Map<PeerId, usize>,
    inbound: Map<u64, Inbound>,
    in_per_peer: Map<PeerId, usize>,
    in_per_channel: Map<ChannelId, usize>,
    next_inbound: u64,
    /// Every deadline, both ways: `(when, outbound?, id)`.
    deadlines: BTreeSet<(Instant, bool, u64)>,
}

impl RequestBook {
    pub(crate) fn new(config: RequestConfig) -> Self {
        RequestBook {
            config,
            next_wire: 1,
            outbound: Map::default(),
            out_per_peer: Map::default(),
            inbound: Map::default(),
            in_per_peer: Map::default(),
            in_per_channel: Map::default(),
            next_inbound: 1,
            deadlines: BTreeSet::new(),
        }
    }

    /// Books a request to `peer` at `now`; `unsent` holds it until a connection is
    /// up. Returns its wire id, or `TooManyPending`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        now: Instant,
        deadline: Instant,
        answer: Answer,
        unsent: Option<Arc<Vec<u8>>>,
    ) -> Result<u64, RequestError> {
        let n = self.out_per_peer.entry(peer).or_default();
        if *n >= self.config.max_outbound_per_peer {
            return Err(RequestError::TooManyPending);
        }
        *n += 1;
        let wire = self.next_wire;
        self.next_wire += 1;
        self.deadlines.insert((deadline, true, wire));
        self.outbound.insert(
            wire,
            Outbound {
                peer,
                channel,
                started: now,
                deadline,
                answer,
                unsent,
            },
        );
        Ok(wire)
    }

    /// The answer to `wire` arrived from `peer` on `channel`: who waits for it and
    /// when it was asked, if that is the peer and channel it was sent to (else
    /// `None`: late or forged).
    pub(crate) fn answered(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        wire: u64,
    ) -> Option<(Answer, Instant)> {
        let o = self.outbound.get(&wire)?;
        if o.peer != peer || o.channel != channel || o.unsent.is_some() {
            return None;
        }
        let started = o.started;
        self.finish_outbound(wire).map(|(_, a)| (a, started))
    }

    fn finish_outbound(&mut self, wire: u64) -> Option<(PeerId, Answer)> {
        let o = self.outbound.remove(&wire)?;
        self.deadlines.remove(&(o.deadline, true, wire));
        if let Some(n) = self.out_per_peer.get_mut(&o.peer) {
            *n -= 1;
            if *n == 0 {
                self.out_per_peer.remove(&o.peer);
            }
        }
        Some((o.peer, o.answer))
    }

    /// Fails one request (its send failed): who waited.
    pub(crate) fn fail(&mut self, wire: u64) -> Option<Answer> {
        self.finish_outbound(wire).map(|(_, a)| a)
    }

    /// The requests to `peer` waiting for a connection, taken for sending:
    /// `(wire id, channel, bytes)`.
    pub(crate) fn take_unsent(&mut self, peer: PeerId) -> Vec<(u64, ChannelId, Arc<Vec<u8>>)> {
        let mut out: Vec<_> = self
            .outbound
            .iter_mut()
            .filter(|(_, o)| o.peer == peer)
            .filter_map(|(w, o)| o.unsent.take().map(|d| (*w, o.channel, d)))
            .collect();
        out.sort_unstable_by_key(|(w, _, _)| *w);
        out
    }

    /// Whether requests to `peer` wait for a connection.
    pub(crate) fn has_unsent(&self, peer: PeerId) -> bool {
        self.outbound
            .values()
            .any(|o| o.peer == peer && o.unsent.is_some())
    }

    /// `peer` cannot be reached (or is gone): every request to it fails, and its
    /// requests to us are forgotten. Returns who waited, in wire order.
    pub(crate) fn peer_gone(&mut self, peer: PeerId) -> Vec<Answer> {
        let mut wires: Vec<u64> = self
            .outbound
            .iter()
            .filter(|(_, o)| o.peer == peer)
            .map(|(w, _)| *w)
            .collect();
        wires.sort_unstable();
        let answers = wires
            .into_iter()
            .filter_map(|w| self.finish_outbound(w).map(|(_, a)| a))
            .collect();
        let mut theirs: Vec<u64> = self
            .inbound
            .iter()
            .filter(|(_, i)| i.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        theirs.sort_unstable();
        for id in theirs {
            self.take_inbound(InboundRequestId(id));
        }
        answers
    }

    /// Whether requests wait on `peer` either way (its connection must stay open).
    pub(crate) fn busy_with(&self, peer: PeerId) -> bool {
        self.out_per_peer.contains_key(&peer) || self.in_per_peer.contains_key(&peer)
    }

    /// A request arrived: booked for the application, or refused `Busy` at a limit.
    pub(crate) fn admit(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        wire_id: u64,
        now: Instant,
    ) -> Result<InboundRequestId, RefuseReason> {
        let per_peer = self.in_per_peer.get(&peer).copied().unwrap_or(0);
        let per_channel = self.in_per_channel.get(&channel).copied().unwrap_or(0);
        if per_peer >= self.config.max_inbound_per_peer
            || per_channel >= self.config.max_inbound_per_channel
        {
            return Err(RefuseReason::Busy);
        }
        *self.in_per_peer.entry(peer).or_default() += 1;
        *self.in_per_channel.entry(channel).or_default() += 1;
        let id = self.next_inbound;
        self.next_inbound += 1;
        let deadline = now + self.config.inbound_timeout;
        self.deadlines.insert((deadline, false, id));
        self.inbound.insert(
            id,
            Inbound {
                peer,
                channel,
                wire_id,
                deadline,
            },
        );
        Ok(InboundRequestId(id))
    }

    /// The application answers `id`: what it answers, if still held.
    pub(crate) fn take_inbound(&mut self, id: InboundRequestId) -> Option<Inbound> {
        let i = self.inbound.remove(&id.0)?;
        self.deadlines.remove(&(i.deadline, false, id.0));
        if let Some(n) = self.in_per_peer.get_mut(&i.peer) {
            *n -= 1;
            if *n == 0 {
                self.in_per_peer.remove(&i.peer);
            }
        }
        if let Some(n) = self.in_per_channel.get_mut(&i.channel) {
            *n -= 1;
            if *n == 0 {
                self.in_per_channel.remove(&i.channel);
            }
        }
        Some(i)
    }

    /// The earliest deadline.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _, _)| *t)
    }

    /// Deadlines due at `now`: the timed-out requests' `(peer, answer)`, and the
    /// number of received requests forgotten unanswered.
    pub(crate) fn expire(&mut self, now: Instant) -> (Vec<(PeerId, Answer)>, usize) {
        let mut timed_out = Vec::new();
        let mut forgotten = 0;
        while let Some(&(at, outbound, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if outbound {
                timed_out.extend(self.finish_outbound(id));
            } else if self.take_inbound(InboundRequestId(id)).is_some() {
                forgotten += 1;
            }
        }
        (timed_out, forgotten)
    }

    /// Requests in flight: `(ours, theirs)`.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> (usize, usize) {
        (self.outbound.len(), self.inbound.len())
    }
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
