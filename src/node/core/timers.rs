//! The node's own deadlines: delivery retries, redials, DHT and gossip timers,
//! idle lookup connections, outbound filling.

use super::*;

impl NodeCore {
    // ------------------------------------------------------------ timers

    /// When [`NodeCore::handle_timeout`] must run.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.config.lookup_idle;
        [
            self.manager.next_dial(),
            self.kad.as_ref().and_then(|k| k.poll_timeout()),
            self.router.as_ref().map(Router::poll_timeout),
            self.requests.poll_timeout(),
            self.kad
                .as_ref()
                .filter(|_| self.config.fill_outbound)
                .map(|_| self.next_fill),
            self.kad
                .as_ref()
                .filter(|k| k.table().is_empty() && !self.config.bootstrap.is_empty())
                .map(|_| self.next_bootstrap),
            self.conns
                .values()
                .filter(|e| e.lookup_only && e.conn.is_established() && !e.conn.is_closing())
                .map(|e| e.last_active + idle)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The wall clock reads `wall` at `now` (the core reads no clock): gossip
    /// takes one-way delays against it. Given at start and now and then after.
    pub(crate) fn handle_wall_clock(&mut self, now: Instant, wall: std::time::SystemTime) {
        if let Some(r) = &mut self.router {
            r.handle_wall_clock(now, wall);
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        for PersistentPeer { addr, id } in self.manager.due_dials(now) {
            self.dial(addr, id, true, now);
        }
        if let Some(kad) = &mut self.kad {
            kad.handle_timeout(now);
        }
        if let Some(r) = &mut self.router {
            if now >= r.poll_timeout() {
                // Peer exchange offers a few records from the DHT table, sampled
                // afresh now and then (not every heartbeat: cloning records is the
                // heartbeat's biggest cost otherwise).
                if let Some(kad) = self.kad.as_ref().filter(|_| now >= self.next_px) {
                    self.next_px = now + PX_REFRESH;
                    let mut px: Vec<&PeerRecord> = kad.table().records().take(64).collect();
                    self.rng.shuffle(&mut px);
                    r.set_peer_exchange(px.into_iter().take(16).cloned().collect());
                }
                r.heartbeat(now);
            }
        }
        self.drain_gossip(now, None);
        self.expire_requests(now);
        self.close_idle_lookup_conns(now);
        let table_empty = self.kad.as_ref().is_some_and(|k| k.table().is_empty());
        if table_empty && !self.config.bootstrap.is_empty() && now >= self.next_bootstrap {
            self.dial_bootstrap(now);
        }
        if self.config.fill_outbound && now >= self.next_fill {
            self.next_fill = now + FILL_EVERY;
            self.fill_outbound(now);
        }
        self.drain_kad(now);
    }
}
