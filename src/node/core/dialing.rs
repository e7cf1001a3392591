//! Dialing and slots: bootstrap and persistent dials, keeping the outbound slots
//! filled from the DHT table with subnet diversity, and penalties that end in bans.

use super::*;

impl NodeCore {
    /// Joining needs only the bootstrap peers' DHT, not a slot with them: the dials are
    /// lookup-only, and the outbound slots are then filled from the table.
    pub(super) fn dial_bootstrap(&mut self, now: Instant) {
        self.next_bootstrap = now + BOOTSTRAP_RETRY;
        for PersistentPeer { addr, id: expected } in self.config.bootstrap.clone() {
            let dialing = self.conns.values().any(|e| e.bootstrap && e.addr == addr);
            if dialing || self.kad.is_none() {
                continue;
            }
            if let Some(id) = self.dial_with(addr, expected, false, true, now) {
                if let Some(e) = self.conns.get_mut(&id) {
                    e.bootstrap = true;
                }
            }
        }
    }

    /// Starts a dial; the driver gets an [`Output::Dial`].
    pub(crate) fn dial(
        &mut self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        persistent: bool,
        now: Instant,
    ) {
        self.dial_with(addr, expected, persistent, false, now);
    }

    pub(super) fn dial_with(
        &mut self,
        addr: SocketAddr,
        expected: Option<PeerId>,
        persistent: bool,
        lookup_only: bool,
        now: Instant,
    ) -> Option<ConnId> {
        let fail = |core: &mut Self, reason: DisconnectReason| {
            core.metrics.dial_failures += 1;
            if !lookup_only {
                core.delivery_push(Event::DialFailed { addr, reason }, None);
            }
            if persistent {
                core.manager.persistent_lost(addr, expected, now);
            }
            None
        };
        if self.shutdown.is_some() {
            return None;
        }
        if let Some(peer) = expected {
            if self.peers.contains_key(&peer) && !(lookup_only && self.dialing_back(&peer)) {
                return None;
            }
            if self.manager.is_banned(&peer, now) {
                return fail(self, DisconnectReason::Local(LocalClose::Banned));
            }
        }
        let reserved = persistent
            || self.manager.is_persistent(addr, expected)
            || expected.is_some_and(|p| self.manager.is_unconditional(&p));
        let slot = if lookup_only {
            Slot::None
        } else if reserved {
            // Persistent and unconditional peers never compete for the outbound
            // slots that filling from the DHT takes.
            self.manager.admit_reserved(addr.ip())
        } else {
            match self.manager.admit(Direction::Outbound, addr.ip()) {
                Ok(slot) => slot,
                Err(_) => return fail(self, DisconnectReason::Local(LocalClose::TooManyPeers)),
            }
        };
        let conn = match Connection::outbound(
            self.handshake_for(lookup_only, addr),
            self.key.clone(),
            expected,
            self.mux.clone(),
            now,
            &self.secure_rng,
            self.rng.next_u64(),
        ) {
            Ok(conn) => conn,
            Err(reason) => {
                self.manager.release(slot, addr.ip());
                return fail(self, reason);
            }
        };
        let id = self.alloc();
        self.metrics.dials += 1;
        let connecting = Some(now + self.config.dial_timeout);
        self.conns.insert(
            id,
            Entry {
                conn,
                addr,
                connecting,
                announced: false,
                persistent,
                slot,
                lookup_only,
                expected,
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
        self.outputs.push_back(Output::Dial {
            conn: id,
            addr,
            local: self.local_ip,
        });
        Some(id)
    }

    /// Dials peers from the DHT table while outbound slots are free, at most two per
    /// /24 among outbound peers.
    pub(super) fn fill_outbound(&mut self, now: Instant) {
        let Some(kad) = &self.kad else { return };
        let (_, outbound) = self.manager.slots();
        let mut free = self.config.limits.max_outbound.saturating_sub(outbound);
        if free == 0 {
            return;
        }
        let mut per_subnet = self.outbound_subnets();
        let mut busy: Set<PeerId> = self.peers.keys().copied().collect();
        for e in self.conns.values().filter(|e| e.slot == Slot::Outbound) {
            busy.extend(e.expected);
        }
        let mut candidates: Vec<(PeerId, SocketAddr)> = kad
            .table()
            .records()
            .filter(|r| !busy.contains(&r.id))
            .filter_map(|r| r.addrs.first().map(|a| (r.id, *a)))
            .collect();
        self.rng.shuffle(&mut candidates);
        for (peer, addr) in candidates {
            if free == 0 {
                break;
            }
            let n = per_subnet.entry(subnet(addr.ip())).or_default();
            if *n >= MAX_OUTBOUND_PER_SUBNET || self.manager.is_banned(&peer, now) {
                continue;
            }
            *n += 1;
            free -= 1;
            self.dial(addr, Some(peer), false, now);
        }
    }

    /// Outbound peers per subnet (dialing ones included).
    pub(super) fn outbound_subnets(&self) -> Map<[u8; 6], usize> {
        let mut per_subnet: Map<[u8; 6], usize> = Map::default();
        for e in self.conns.values().filter(|e| e.slot == Slot::Outbound) {
            if e.conn.direction() == Direction::Outbound {
                *per_subnet.entry(subnet(e.addr.ip())).or_default() += 1;
            }
        }
        per_subnet
    }

    /// Lowers `peer`'s score; past the ban threshold it is banned, with the address
    /// it is seen on, and disconnected.
    pub(super) fn punish(&mut self, peer: PeerId, source: ScoreSource, delta: f64, now: Instant) {
        if !self.manager.adjust(peer, source, delta, now) {
            return;
        }
        let conn = self
            .peers
            .get(&peer)
            .or_else(|| self.kad_conns.get(&peer))
            .copied();
        let addr = conn.and_then(|id| self.conns.get(&id)).map(|e| e.addr);
        self.banned(peer, addr, now);
        if let Some(id) = conn {
            self.close_conn(id, LocalClose::Banned, false, now);
        }
    }

    /// A protocol violation by `peer`, seen at `addr`.
    pub(super) fn violation(&mut self, peer: PeerId, addr: SocketAddr, now: Instant) {
        if self.manager.violation(peer, now) {
            self.banned(peer, Some(addr), now);
        }
    }

    pub(super) fn banned(&mut self, peer: PeerId, addr: Option<SocketAddr>, now: Instant) {
        self.metrics.bans += 1;
        log::info!("peer {} banned", peer.short());
        if let Some(addr) = addr {
            let d = self.manager.ban_duration();
            self.manager.ban_ip(addr.ip(), d, now);
        }
    }
}
