//! Request/response in the node: requests go out on the peer's connection, or on a
//! lookup-only connection dialed for them (found through the DHT if need be), which
//! takes no slot, joins no mesh and closes when idle; received requests go to the
//! application within the limits of the [`RequestBook`].

use super::*;
use crate::mux::{RefuseReason, Tag};
use crate::node::requests::{Answer, InboundRequestId};
use crate::node::RequestError;

/// Peers whose answers' round trip is remembered, at most.
const MAX_REQUEST_RTTS: usize = 4096;

impl NodeCore {
    /// The connection requests to `peer` use: its full one, else a lookup-only one
    /// (not one that is closing).
    fn request_conn(&self, peer: &PeerId) -> Option<ConnId> {
        [self.peers.get(peer), self.kad_conns.get(peer)]
            .into_iter()
            .flatten()
            .copied()
            .find(|id| self.conns.get(id).is_some_and(|e| !e.conn.is_closing()))
    }

    pub(super) fn start_request(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        timeout: Duration,
        answer: Answer,
        now: Instant,
    ) {
        if self.shutdown.is_some() {
            return self.answer(answer, peer, Err(RequestError::Closed));
        }
        if peer == self.local_id() {
            return self.answer(answer, peer, Err(RequestError::Unreachable));
        }
        let deadline = now + timeout;
        let conn = self.request_conn(&peer);
        let ready = conn.and_then(|id| self.conns.get(&id)).map(|e| {
            let known = !e.channels.is_empty();
            (e.conn.is_established(), known && !e.serves(channel))
        });
        match (conn, ready) {
            (Some(id), Some((true, false))) => {
                match self
                    .requests
                    .start(peer, channel, now, deadline, answer, None)
                {
                    Ok(wire) => self.send_request(id, peer, wire, channel, data, now),
                    Err(e) => self.answer(answer, peer, Err(e)),
                }
            }
            (Some(_), Some((true, true))) => {
                self.answer(answer, peer, Err(RequestError::UnknownChannel(channel)))
            }
            (Some(_), _) => {
                // Still handshaking: it goes out once the connection is up.
                if let Err(e) =
                    self.requests
                        .start(peer, channel, now, deadline, answer, Some(data))
                {
                    self.answer(answer, peer, Err(e));
                }
            }
            (None, _) => {
                if let Err(e) =
                    self.requests
                        .start(peer, channel, now, deadline, answer, Some(data))
                {
                    return self.answer(answer, peer, Err(e));
                }
                self.connect_for_requests(peer, now);
            }
        }
    }

    /// Opens a lookup-only connection to `peer` for the requests waiting for it: at
    /// the address in the DHT table, else at one a lookup of its id finds.
    fn connect_for_requests(&mut self, peer: PeerId, now: Instant) {
        if self.request_lookups.values().any(|p| *p == peer) {
            return;
        }
        let Some(kad) = &mut self.kad else {
            return self.requests_unreachable(peer);
        };
        let known = kad
            .table()
            .records()
            .find(|r| r.id == peer)
            .and_then(|r| r.addrs.first().copied());
        log::debug!(
            "requests to {}: dialing, address {}",
            peer.short(),
            if known.is_some() {
                "in the table"
            } else {
                "to be looked up"
            }
        );
        match known {
            Some(addr) => self.dial_for_requests(peer, addr, now),
            None => {
                let key = crate::kad::key::key_of(&peer);
                match kad.find_node(key, now) {
                    Some(lookup) => {
                        self.request_lookups.insert(lookup, peer);
                    }
                    None => self.requests_unreachable(peer),
                }
                self.drain_kad(now);
            }
        }
    }

    fn dial_for_requests(&mut self, peer: PeerId, addr: SocketAddr, now: Instant) {
        let room =
            self.kad_conns.len() < self.config.max_lookup_conns || self.evict_lookup_conn(now);
        let dialed = if room && self.shutdown.is_none() {
            self.dial_with(addr, Some(peer), false, true, now)
        } else {
            None
        };
        match dialed {
            Some(id) => {
                self.kad_conns.insert(peer, id);
            }
            None => self.requests_unreachable(peer),
        }
    }

    /// A lookup started for requests finished: dial what it found, or give up.
    pub(super) fn request_lookup_done(&mut self, lookup: u64, result: &LookupResult, now: Instant) {
        let Some(peer) = self.request_lookups.remove(&lookup) else {
            return;
        };
        if !self.requests.has_unsent(peer) || self.request_conn(&peer).is_some() {
            return;
        }
        let addr = result
            .closest
            .iter()
            .find(|r| r.id == peer)
            .and_then(|r| r.addrs.first().copied());
        log::debug!(
            "requests to {}: lookup found {} of {} closest",
            peer.short(),
            if addr.is_some() { "it among" } else { "none" },
            result.closest.len()
        );
        match addr {
            Some(addr) => self.dial_for_requests(peer, addr, now),
            None => self.requests_unreachable(peer),
        }
    }

    fn requests_unreachable(&mut self, peer: PeerId) {
        log::debug!("requests to {}: unreachable", peer.short());
        for a in self.requests.peer_gone(peer) {
            self.answer(a, peer, Err(RequestError::Unreachable));
        }
    }

    /// `peer`'s connection `id` is up: the requests waiting for it go out.
    pub(super) fn flush_requests(&mut self, id: ConnId, peer: PeerId, now: Instant) {
        for (wire, channel, data) in self.requests.take_unsent(peer) {
            let serves = self.conns.get(&id).is_some_and(|e| e.serves(channel));
            if serves {
                self.send_request(id, peer, wire, channel, data, now);
            } else if let Some(a) = self.requests.fail(wire) {
                self.answer(a, peer, Err(RequestError::UnknownChannel(channel)));
            }
        }
    }

    fn send_request(
        &mut self,
        id: ConnId,
        peer: PeerId,
        wire: u64,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        now: Instant,
    ) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        e.last_active = now;
        let sent = e
            .conn
            .send_tagged(channel, data, SendOptions::default(), Tag::Request(wire));
        self.touched.push(id);
        match sent {
            Ok(()) => self.metrics.requests_sent += 1,
            Err(err) => {
                let err = match err {
                    SendError::Full => RequestError::Full,
                    SendError::TooLarge { size, max } => RequestError::TooLarge { size, max },
                    SendError::UnknownChannel(c) => RequestError::UnknownChannel(c),
                    SendError::UnknownPeer | SendError::Closed | SendError::TimedOut => {
                        RequestError::Disconnected
                    }
                };
                if let Some(a) = self.requests.fail(wire) {
                    self.answer(a, peer, Err(err));
                }
            }
        }
    }

    /// A request, response or refusal arrived from `peer` on `id`.
    pub(super) fn on_tagged(
        &mut self,
        id: ConnId,
        peer: PeerId,
        channel: ChannelId,
        tag: Tag,
        data: Vec<u8>,
        now: Instant,
    ) {
        let len = data.len();
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        e.last_active = now;
        match tag {
            Tag::Plain => {}
            Tag::Request(wire) => {
                let admitted = if self.shutdown.is_some() {
                    Err(RefuseReason::ShuttingDown)
                } else {
                    self.requests.admit(peer, channel, wire, now)
                };
                match admitted {
                    Ok(request) => {
                        self.metrics.requests_received += 1;
                        let event = Event::Request {
                            id: request,
                            peer,
                            channel,
                            data,
                        };
                        // Its credit goes back as the application takes it.
                        self.delivery_push(event, Some((id, channel, len)));
                        return;
                    }
                    Err(why) => {
                        Metrics::count(&mut self.metrics.requests_refused, refuse_label(why));
                        let _ = e.conn.send_tagged(
                            channel,
                            Arc::new(Vec::new()),
                            SendOptions::default(),
                            Tag::Refusal(wire, why),
                        );
                    }
                }
            }
            Tag::Response(wire) | Tag::Refusal(wire, _) => {
                let result = match tag {
                    Tag::Refusal(_, why) => Err(RequestError::Refused(why)),
                    _ => Ok(data),
                };
                match self.requests.answered(peer, channel, wire) {
                    Some((a, started)) => {
                        self.observe_request_rtt(peer, now.saturating_duration_since(started));
                        self.answer(a, peer, result)
                    }
                    // Late (after its timeout) or never asked: bounded work, dropped.
                    None => Metrics::count(&mut self.metrics.drops, "response_unexpected"),
                }
            }
        }
        if let Some(e) = self.conns.get_mut(&id) {
            e.conn.release(channel, len);
        }
        self.touched.push(id);
    }

    /// The application answers the request `request`.
    pub(super) fn respond(&mut self, request: InboundRequestId, data: Arc<Vec<u8>>, now: Instant) {
        let Some(held) = self.requests.take_inbound(request) else {
            return Metrics::count(&mut self.metrics.drops, "response_unknown_request");
        };
        let Some(id) = self.request_conn(&held.peer) else {
            return Metrics::count(&mut self.metrics.drops, "response_peer_gone");
        };
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        e.last_active = now;
        let sent = e.conn.send_tagged(
            held.channel,
            data,
            SendOptions::default(),
            Tag::Response(held.wire_id),
        );
        match sent {
            Ok(()) => self.metrics.responses_sent += 1,
            Err(_) => Metrics::count(&mut self.metrics.drops, "response_not_queued"),
        }
        self.touched.push(id);
    }

    /// Deadlines of requests both ways.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        let (timed_out, forgotten) = self.requests.expire(now);
        for (peer, a) in timed_out {
            self.metrics.requests_timed_out += 1;
            self.answer(a, peer, Err(RequestError::TimedOut));
        }
        if forgotten > 0 {
            *self.metrics.drops.entry("request_unanswered").or_default() += forgotten as u64;
        }
    }

    /// `peer` has no connection left: requests to it fail, its requests are forgotten.
    pub(super) fn requests_peer_gone(&mut self, peer: PeerId) {
        if self.request_conn(&peer).is_some() {
            return;
        }
        for a in self.requests.peer_gone(peer) {
            self.answer(a, peer, Err(RequestError::Disconnected));
        }
    }

    /// Keeps a smoothed round trip of `peer`'s answers (7/8 old, as TCP's SRTT), so
    /// providers met only over lookup-only connections can be ranked too. Bounded:
    /// when full, an arbitrary entry makes room.
    fn observe_request_rtt(&mut self, peer: PeerId, sample: Duration) {
        if !self.request_rtt.contains_key(&peer) && self.request_rtt.len() >= MAX_REQUEST_RTTS {
            if let Some(victim) = self.request_rtt.keys().next().copied() {
                self.request_rtt.remove(&victim);
            }
        }
        let rtt = self.request_rtt.entry(peer).or_insert(sample);
        *rtt = (*rtt * 7 + sample) / 8;
    }

    /// `peers` best first: by score, then by round-trip time (the connection's
    /// keepalive, else the answers' own), those never timed last; ties keep their
    /// order. Banned peers are left out.
    pub(super) fn rank_peers(&mut self, peers: Vec<PeerId>, now: Instant) -> Vec<PeerId> {
        let mut ranked: Vec<(PeerId, f64, Duration)> = Vec::with_capacity(peers.len());
        for p in peers {
            if self.manager.is_banned(&p, now) {
                continue;
            }
            let score = self.manager.score(&p, now).total;
            let conn_rtt = self
                .request_conn(&p)
                .and_then(|id| self.conns.get(&id))
                .and_then(|e| e.conn.rtt());
            let rtt = conn_rtt
                .or_else(|| self.request_rtt.get(&p).copied())
                .unwrap_or(Duration::MAX);
            ranked.push((p, score, rtt));
        }
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
        ranked.into_iter().map(|(p, _, _)| p).collect()
    }

    fn answer(&mut self, answer: Answer, peer: PeerId, result: Result<Vec<u8>, RequestError>) {
        if let Err(
            RequestError::TimedOut | RequestError::Disconnected | RequestError::Unreachable,
        ) = &result
        {
            // A peer that failed us is not ranked by an old round trip any more.
            self.request_rtt.remove(&peer);
        }
        match answer {
            Answer::Reply(request) => self.reply(request, Reply::Response(result)),
            Answer::Event(id) => self.delivery_push(Event::Response { id, peer, result }, None),
        }
    }
}

fn refuse_label(why: RefuseReason) -> &'static str {
    match why {
        RefuseReason::Busy => "busy",
        RefuseReason::Unsupported => "unsupported",
        RefuseReason::ShuttingDown => "shutting_down",
        RefuseReason::Other(_) => "other",
    }
}
