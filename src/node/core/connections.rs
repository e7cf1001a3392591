//! Connections through their life: accepted or dialed, established (and the
//! duplicate rule: both sides keep the one dialed by the lower id), their events,
//! closed.

use super::*;

impl NodeCore {
    // ------------------------------------------------------------ driver inputs

    /// A TCP connection was accepted; `None` means refuse it (drop the socket).
    pub(crate) fn handle_accepted(&mut self, addr: SocketAddr, now: Instant) -> Option<ConnId> {
        if self.shutdown.is_some() {
            return None;
        }
        let slot = match self.manager.admit_inbound(addr.ip(), now) {
            Ok(slot) => slot,
            Err(refusal) => {
                log::debug!("refused inbound from {addr}: {refusal:?}");
                Metrics::count(&mut self.metrics.refused, refusal.label());
                return None;
            }
        };
        self.metrics.accepted += 1;
        let conn = Connection::inbound(
            self.handshake_for(false, addr),
            self.key.clone(),
            self.mux.clone(),
            now,
            self.rng.next_u64(),
        );
        let id = self.alloc();
        self.conns.insert(
            id,
            Entry {
                conn,
                addr,
                connecting: None,
                announced: false,
                persistent: false,
                slot,
                lookup_only: false,
                expected: None,
                last_active: now,
                bootstrap: false,
                reassembly: 0,
                retire_at: None,
                channels: Vec::new(),
                version: String::new(),
                connected_at: None,
                observed: None,
                bytes_read: 0,
                bytes_written: 0,
            },
        );
        Some(id)
    }

    /// The TCP connect of `id` completed.
    pub(crate) fn handle_connected(&mut self, id: ConnId) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.connecting = None;
        }
    }

    /// The TCP connect of `id` failed; its entry is gone.
    pub(crate) fn handle_dial_failed(
        &mut self,
        id: ConnId,
        kind: std::io::ErrorKind,
        now: Instant,
    ) {
        if let Some(e) = self.conns.remove(&id) {
            self.manager.release(e.slot, e.addr.ip());
            self.metrics.dial_failures += 1;
            log::debug!("dial {} failed: {kind}", e.addr);
            if e.lookup_only {
                self.lookup_conn_gone(id, e.expected, now);
                return;
            }
            let reason = DisconnectReason::Io(kind);
            self.delivery_push(
                Event::DialFailed {
                    addr: e.addr,
                    reason,
                },
                None,
            );
            if e.persistent {
                self.manager.persistent_lost(e.addr, None, now);
            }
        }
    }

    /// Reads what `io` has for `id` (at most `io_budget.read` bytes), handles it, and
    /// writes what `id` has to send, as far as `io` takes it and at most about
    /// `io_budget.write` bytes. If the connection is over, its entry is gone and the
    /// outcome says so: drop the pipe.
    pub(crate) fn handle_io(
        &mut self,
        id: ConnId,
        io: &mut dyn Io,
        io_budget: IoBudget,
        now: Instant,
    ) -> IoOutcome {
        let mut outcome = IoOutcome::default();
        let budget = self.config.reassembly_budget;
        let Some(e) = self.conns.get_mut(&id) else {
            outcome.finished = true;
            return outcome;
        };
        // What it may hold for reassembly is its own share plus what the node budget
        // has left, so no read can take more than the budget.
        let others = self.reassembly_used - e.reassembly;
        e.conn.set_reassembly_limit(budget.saturating_sub(others));
        let conn = &mut e.conn;
        while conn.read_allowed(now) {
            if outcome.read >= io_budget.read {
                outcome.more_input = true;
                break;
            }
            let buf = conn.read_buf();
            if buf.is_empty() {
                break;
            }
            match io.read(buf) {
                Ok(0) => {
                    conn.handle_eof(now);
                    break;
                }
                Ok(n) => {
                    outcome.read += n;
                    conn.handle_read(n, now, &self.secure_rng);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    conn.handle_io_error(e.kind());
                    break;
                }
            }
        }
        self.process(id, now);
        if let Some(e) = self.conns.get_mut(&id) {
            let conn = &mut e.conn;
            loop {
                let out = conn.poll_transmit(now);
                if out.is_empty() {
                    break;
                }
                if outcome.written >= io_budget.write {
                    outcome.more_output = true;
                    break;
                }
                match io.write(out) {
                    Ok(0) => {
                        conn.handle_io_error(std::io::ErrorKind::WriteZero);
                        break;
                    }
                    Ok(n) => {
                        outcome.written += n;
                        conn.advance_transmit(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        conn.handle_io_error(e.kind());
                        break;
                    }
                }
            }
            outcome.finished = conn.is_finished();
            e.bytes_read += outcome.read as u64;
            e.bytes_written += outcome.written as u64;
        }
        self.sync_dequeued(id);
        self.metrics.bytes_read += outcome.read as u64;
        self.metrics.bytes_written += outcome.written as u64;
        if outcome.finished {
            self.on_closed(id, now);
        }
        outcome
    }

    /// Handles what `id` produced in its last input.
    fn process(&mut self, id: ConnId, now: Instant) {
        loop {
            let Some(entry) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(event) = entry.conn.poll_event() else {
                break;
            };
            // Gossip and application data count only from a peer that was announced
            // (lookup-only connections are restricted to the DHT channel anyway).
            let peer = entry.conn.remote().filter(|p| self.peers.contains_key(p));
            match event {
                ConnEvent::Established { remote, info } => {
                    self.on_established(id, remote, info, now)
                }
                ConnEvent::FirstFragment {
                    channel: GOSSIP_CHANNEL,
                    data,
                } => {
                    if let (Some(peer), Some(r)) = (peer, &mut self.router) {
                        r.handle_first_fragment(peer, &data, now);
                        self.drain_gossip(now, None);
                    }
                }
                ConnEvent::FirstFragment { .. } => {}
                ConnEvent::Tagged { channel, tag, data } => match entry.conn.remote() {
                    Some(remote) => self.on_tagged(id, remote, channel, tag, data, now),
                    None => {
                        entry.conn.release(channel, data.len());
                        self.touched.push(id);
                    }
                },
                ConnEvent::Message {
                    channel: GOSSIP_CHANNEL,
                    data,
                } => {
                    // The RPC's credit goes back as the application takes the messages
                    // it delivered (the rest at once): a slow application throttles
                    // its gossip senders instead of queueing without bound.
                    let len = data.len();
                    if let (Some(peer), Some(r)) = (peer, &mut self.router) {
                        r.handle_rpc(peer, &data, now);
                    }
                    self.drain_gossip(now, Some((id, len)));
                }
                ConnEvent::Message {
                    channel: KAD_CHANNEL,
                    data,
                } => {
                    entry.last_active = now;
                    let peer = entry.conn.remote();
                    let seen = entry.addr.ip();
                    entry.conn.release(KAD_CHANNEL, data.len());
                    if let (Some(peer), Some(kad)) = (peer, &mut self.kad) {
                        kad.handle_message(peer, Some(seen), &data, now);
                    }
                    self.touched.push(id);
                    self.drain_kad(now);
                }
                ConnEvent::Message { channel, data } => {
                    let Some(peer) = peer else {
                        // Not an announced peer's (a lookup-only connection carries
                        // requests, not messages): nothing to deliver; free its credit.
                        entry.conn.release(channel, data.len());
                        Metrics::count(&mut self.metrics.drops, "message_from_non_peer");
                        self.touched.push(id);
                        continue;
                    };
                    let len = data.len();
                    let event = Event::Message {
                        peer,
                        channel,
                        data,
                    };
                    self.outputs.push_back(Output::Event {
                        event,
                        release: Some((id, channel, len)),
                    });
                }
            }
        }
        if let Some(e) = self.conns.get_mut(&id) {
            let held = e.conn.reassembly_bytes();
            self.reassembly_used = self.reassembly_used - e.reassembly + held;
            e.reassembly = held;
        }
    }

    pub(super) fn on_established(
        &mut self,
        id: ConnId,
        remote: PeerId,
        info: crate::secure::NodeInfo,
        now: Instant,
    ) {
        self.metrics.handshakes_ok += 1;
        if self.manager.is_banned(&remote, now) || self.shutdown.is_some() {
            let why = if self.shutdown.is_some() {
                LocalClose::Shutdown
            } else {
                LocalClose::Banned
            };
            self.close_conn(id, why, false, now);
            return;
        }
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        entry.observed = info.observed_addr;
        let from = entry.addr;
        if entry.conn.direction() == Direction::Outbound {
            if let Some(kad) = &mut self.kad {
                kad.on_reached(remote, from);
            }
        }
        self.note_observed(from, info.observed_addr);
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        if entry.lookup_only || info.lookup_only {
            // DHT traffic only: no slot, no announcement, no other channel.
            entry.slot = self.manager.unslot(entry.slot);
            entry.lookup_only = true;
            entry.expected = Some(remote);
            entry.conn.restrict_to(&self.light_channels);
            entry.channels = info.channels.clone();
            let inbound = entry.conn.direction() == Direction::Inbound;
            let max = self.config.max_lookup_conns;
            let inbound_lookups = self
                .conns
                .values()
                .filter(|e| {
                    e.lookup_only
                        && e.conn.direction() == Direction::Inbound
                        && e.conn.is_established()
                })
                .count();
            // At the cap, a newcomer takes the place of one that has been quiet a
            // while (a joiner served and gone silent), so a seed node serves joiners
            // at the rate it answers them, not one per idle timeout.
            let full =
                inbound && inbound_lookups > max && !self.evict_quiet_inbound_lookup(id, now);
            if self.kad.is_none() || full {
                Metrics::count(&mut self.metrics.refused, "max_lookup_conns");
                self.close_conn(id, LocalClose::TooManyPeers, false, now);
                return;
            }
            let Some(entry) = self.conns.get_mut(&id) else {
                return;
            };
            let introduce = entry.bootstrap;
            for bytes in self.kad_waiting.remove(&remote).unwrap_or_default() {
                let _ = entry
                    .conn
                    .send(KAD_CHANNEL, Arc::new(bytes), SendOptions::default());
            }
            self.kad_conns.insert(remote, id);
            self.dial_back_reached(id, remote, now);
            self.flush_requests(id, remote, now);
            if introduce {
                if let Some(kad) = &mut self.kad {
                    kad.on_connected(remote, info.listen_addrs, now);
                }
            }
            self.touched.push(id);
            self.drain_kad(now);
            return;
        }
        // A full peer: an inbound one now needs one of the inbound slots.
        let reserved = self.manager.is_unconditional(&remote)
            || self.manager.is_persistent(entry.addr, Some(remote))
            || entry.persistent;
        match self.manager.establish(entry.slot, reserved) {
            Ok(slot) => entry.slot = slot,
            Err(slot) => {
                entry.slot = slot;
                Metrics::count(&mut self.metrics.refused, Refusal::TooManyInbound.label());
                log::debug!("peer {}: inbound slots full", remote.short());
                self.close_conn(id, LocalClose::TooManyPeers, false, now);
                return;
            }
        }
        let channels = info.channels;
        entry.channels = channels.clone();
        entry.version = info.version;
        let Some(&existing) = self.peers.get(&remote) else {
            self.announce(id, remote, channels, now);
            if let (Some(kad), true) = (&mut self.kad, self.conns[&id].serves(KAD_CHANNEL)) {
                kad.on_connected(remote, info.listen_addrs, now);
            }
            self.drain_kad(now);
            return;
        };
        // Two connections to one peer: both sides keep the one dialed by the lower id.
        let dialer = |core: &Self, c: ConnId| match core.conns[&c].conn.direction() {
            Direction::Outbound => core.local_id(),
            Direction::Inbound => remote,
        };
        let (old_dialer, new_dialer) = (dialer(self, existing), dialer(self, id));
        if new_dialer < old_dialer {
            log::debug!("peer {}: new connection wins the duplicate", remote.short());
            let unsent = self
                .conns
                .get_mut(&existing)
                .map(|e| e.conn.take_unsent())
                .unwrap_or_default();
            if let Some(e) = self.conns.get_mut(&existing) {
                e.announced = false;
            }
            self.retire_duplicate(existing, now);
            self.peers.insert(remote, id);
            let entry = self.conns.get_mut(&id).expect("established conn exists");
            entry.announced = true;
            entry.connected_at = Some(now);
            let addr = entry.addr;
            let direction = entry.conn.direction();
            for u in unsent {
                // The new connection's queues start empty, so these fit.
                if entry
                    .conn
                    .send_tagged(u.channel, u.data, u.opts, u.tag)
                    .is_err()
                {
                    Metrics::count(&mut self.metrics.drops, "migration");
                }
            }
            self.outputs.push_back(Output::PeerUp {
                peer: remote,
                addr,
                direction,
                channels,
            });
            self.touched.push(id);
            self.flush_requests(id, remote, now);
        } else {
            log::debug!("peer {}: keeping the existing connection", remote.short());
            self.retire_duplicate(id, now);
        }
    }

    /// A connection lost the duplicate rule. Its dialer closes it (gracefully, after
    /// what it still holds); the other side waits for that Close, since the dialer
    /// may still be sending on it, not yet knowing of the winner. If it never comes,
    /// the connection is closed after a grace period.
    fn retire_duplicate(&mut self, id: ConnId, now: Instant) {
        let Some(e) = self.conns.get_mut(&id) else {
            return;
        };
        match e.conn.direction() {
            Direction::Outbound => self.close_conn(id, LocalClose::Duplicate, true, now),
            Direction::Inbound => e.retire_at = Some(now + DUPLICATE_GRACE),
        }
    }

    pub(super) fn announce(
        &mut self,
        id: ConnId,
        remote: PeerId,
        channels: Vec<ChannelId>,
        now: Instant,
    ) {
        let entry = self.conns.get_mut(&id).expect("established conn exists");
        entry.announced = true;
        entry.connected_at = Some(now);
        let (addr, direction) = (entry.addr, entry.conn.direction());
        if entry.persistent || self.manager.is_persistent(addr, Some(remote)) {
            self.manager.persistent_connected(addr, remote);
        }
        let gossips = entry.serves(GOSSIP_CHANNEL);
        self.peers.insert(remote, id);
        if let (Some(r), true) = (&mut self.router, gossips) {
            r.add_peer(remote, addr.ip(), now);
        }
        self.outputs.push_back(Output::PeerUp {
            peer: remote,
            addr,
            direction,
            channels,
        });
        log::debug!("peer {} connected ({direction:?}, {addr})", remote.short());
        self.flush_requests(id, remote, now);
        self.delivery_push(
            Event::PeerConnected {
                peer: remote,
                addr,
                direction,
            },
            None,
        );
    }

    /// `id` is finished: its entry goes, and what depended on it hears.
    fn on_closed(&mut self, id: ConnId, now: Instant) {
        let Some(mut entry) = self.conns.remove(&id) else {
            return;
        };
        let reason = entry
            .conn
            .disconnect_reason()
            .cloned()
            .unwrap_or(DisconnectReason::Eof);
        self.manager.release(entry.slot, entry.addr.ip());
        self.reassembly_used -= entry.reassembly;
        if entry.lookup_only {
            self.lookup_conn_gone(id, entry.expected.or(entry.conn.remote()), now);
            if reason.is_violation() {
                if let Some(peer) = entry.conn.remote() {
                    self.violation(peer, entry.addr, now);
                }
            }
            self.check_shutdown_done();
            return;
        }
        if let Some(mux) = entry.conn.mux() {
            for (channel, c) in mux.counters() {
                self.metrics.add_channel(channel, &c);
            }
        }
        let remote = entry.conn.remote();
        match (remote, &reason) {
            (None, DisconnectReason::Handshake(e)) => {
                Metrics::count(&mut self.metrics.handshakes_failed, handshake_label(e));
                log::debug!("handshake with {} failed: {e}", entry.addr);
                if entry.conn.direction() == Direction::Outbound {
                    self.delivery_push(
                        Event::DialFailed {
                            addr: entry.addr,
                            reason: reason.clone(),
                        },
                        None,
                    );
                }
            }
            (None, _) => {}
            (Some(peer), _) => {
                if reason.is_violation() {
                    log::info!("peer {} violated the protocol: {reason}", peer.short());
                    self.violation(peer, entry.addr, now);
                }
            }
        }
        if let (Some(peer), true) = (remote, entry.announced) {
            Metrics::count(&mut self.metrics.disconnects, reason.label());
            // Messages still queued are lost with the peer: counted, and their
            // counts freed.
            let unsent = entry.conn.take_unsent();
            if !unsent.is_empty() {
                *self.metrics.drops.entry("peer_gone").or_default() += unsent.len() as u64;
            }
            self.peers.remove(&peer);
            if let Some(r) = &mut self.router {
                r.remove_peer(&peer);
            }
            self.outputs.push_back(Output::PeerDown {
                peer,
                unsent: unsent
                    .iter()
                    .filter(|u| u.tag == crate::mux::Tag::Plain)
                    .map(|u| u.channel)
                    .collect(),
            });
            log::debug!("peer {} disconnected: {reason}", peer.short());
            self.delivery_push(Event::PeerDisconnected { peer, reason }, None);
            self.requests_peer_gone(peer);
        }
        let persistent = entry.persistent || self.manager.is_persistent(entry.addr, remote);
        if persistent && remote.is_none_or(|p| !self.peers.contains_key(&p)) {
            self.manager.persistent_lost(entry.addr, remote, now);
        }
        self.check_shutdown_done();
    }

    /// When the driver must call [`NodeCore::handle_conn_timeout`] for `id`.
    #[must_use]
    pub(crate) fn poll_conn_timeout(&self, id: ConnId) -> Option<Instant> {
        let e = self.conns.get(&id)?;
        [e.connecting, e.retire_at, e.conn.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs `id`'s deadlines; `true` if the dial timed out (the entry is gone: drop
    /// the pipe). Otherwise call `handle_io` for it next.
    pub(crate) fn handle_conn_timeout(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(e) = self.conns.get_mut(&id) else {
            return false;
        };
        if e.connecting.is_some_and(|d| now >= d) {
            self.handle_dial_failed(id, std::io::ErrorKind::TimedOut, now);
            return true;
        }
        if e.retire_at.is_some_and(|d| now >= d) {
            e.retire_at = None;
            self.close_conn(id, LocalClose::Duplicate, true, now);
            return false;
        }
        e.conn.handle_timeout(now);
        false
    }
}

fn handshake_label(e: &crate::error::HandshakeError) -> &'static str {
    use crate::error::HandshakeError as H;
    match e {
        H::MessageTooLarge { .. } | H::Malformed(_) => "malformed",
        H::VersionMismatch { .. } => "version",
        H::NetworkMismatch { .. } => "network",
        H::Rejected { .. } => "rejected",
        H::NoCommonCipher => "cipher",
        H::BadEphemeralKey | H::DecryptFailed | H::BadPublicKey | H::BadSignature => "auth",
        H::UnexpectedPeer { .. } => "unexpected_peer",
        H::SelfConnection => "self",
        H::BadNodeInfo(_) => "node_info",
        H::Timeout => "timeout",
        H::Closed | H::Poisoned => "closed",
        H::Rng => "rng",
    }
}
