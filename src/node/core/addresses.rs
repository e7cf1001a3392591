//! Our addresses: the observed address we tell each peer in the handshake, and the
//! one peers tell us, announced once peers in several subnets agree on it.

use super::*;
use crate::secure::node_info::MAX_LISTEN_ADDRS;

impl NodeCore {
    /// The handshake settings for a connection to or from `remote`: ours, telling
    /// the peer the address we see it on.
    pub(super) fn handshake_for(
        &self,
        lookup_only: bool,
        remote: SocketAddr,
    ) -> Arc<HandshakeConfig> {
        let base = if lookup_only {
            &self.lookup_handshake
        } else {
            &self.handshake
        };
        let mut hs = (**base).clone();
        hs.node_info.observed_addr = Some(remote);
        Arc::new(hs)
    }

    /// The peer on connection `id`, connected from `from`, says it sees us on
    /// `observed`: once peers in enough subnets agree on an IP we do not announce,
    /// we announce it (with our listen port) after our own addresses.
    pub(super) fn note_observed(&mut self, from: SocketAddr, observed: Option<SocketAddr>) {
        let Some(observed) = observed else { return };
        if self.config.announce.is_some() {
            return;
        }
        let addrs = &self.handshake.node_info.listen_addrs;
        let announced: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        // Peers on our own machine see a loopback address: worth nothing to anyone
        // else, unless loopback is all we are on.
        if observed.ip().is_loopback() && announced.iter().any(|ip| !ip.is_loopback()) {
            return;
        }
        let confirmations = self.config.observed_addr_confirmations;
        let Some(ip) = self
            .observed
            .record(from.ip(), observed.ip(), &announced, confirmations)
        else {
            return;
        };
        let Some(port) = addrs.first().map(|a| a.port()) else {
            return;
        };
        if addrs.len() >= MAX_LISTEN_ADDRS {
            return;
        }
        let addr = SocketAddr::new(ip, port);
        let mut addrs = addrs.clone();
        addrs.push(addr);
        log::info!("peers in {confirmations} subnets see us on {ip}: announcing {addr}");
        for hs in [&mut self.handshake, &mut self.lookup_handshake] {
            let mut h = (**hs).clone();
            h.node_info.listen_addrs = addrs.clone();
            *hs = Arc::new(h);
        }
        if let Some(kad) = &mut self.kad {
            let seq = kad.local_record().seq + 1;
            kad.set_record(PeerRecord::sign(&self.key, &addrs, seq));
        }
        self.metrics.addresses_adopted += 1;
        self.delivery_push(Event::AddressAdopted { addr }, None);
    }

    /// The addresses we announce now.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn announced_addrs(&self) -> &[SocketAddr] {
        &self.handshake.node_info.listen_addrs
    }

    /// Our signed DHT record, if the DHT runs.
    #[cfg(test)]
    pub(crate) fn local_record(&self) -> Option<&PeerRecord> {
        self.kad.as_ref().map(|k| k.local_record())
    }
}

/// Addresses of one record tried by a dial-back, at most.
const MAX_DIAL_BACK_ADDRS: usize = 3;

/// A dial-back under way: the addresses still to try (last first) and the
/// connection trying one now.
#[derive(Debug)]
pub(super) struct DialBack {
    remaining: Vec<SocketAddr>,
    conn: Option<ConnId>,
}

impl NodeCore {
    /// The DHT asks us to reach `peer` at `addrs` before its record enters the
    /// table: a connection we dialed to one of them proves it at once; otherwise a
    /// lookup-only connection tries them in order (it takes no slot and closes when
    /// idle, or serves the DHT meanwhile).
    pub(super) fn dial_back(&mut self, peer: PeerId, mut addrs: Vec<SocketAddr>, now: Instant) {
        let reached = self.conns.values().any(|e| {
            e.conn.direction() == Direction::Outbound
                && e.conn.is_established()
                && e.conn.remote() == Some(peer)
                && addrs.contains(&e.addr)
        });
        if reached {
            if let Some(kad) = &mut self.kad {
                kad.handle_dial_back(peer, true, now);
            }
            return;
        }
        if self.dial_backs.contains_key(&peer) {
            return;
        }
        addrs.truncate(MAX_DIAL_BACK_ADDRS);
        addrs.reverse();
        self.dial_backs.insert(
            peer,
            DialBack {
                remaining: addrs,
                conn: None,
            },
        );
        self.dial_back_next(peer, now);
    }

    /// Whether a dial-back of `peer` is under way (its dial may go to a peer we
    /// are connected to).
    pub(super) fn dialing_back(&self, peer: &PeerId) -> bool {
        self.dial_backs.contains_key(peer)
    }

    fn dial_back_next(&mut self, peer: PeerId, now: Instant) {
        loop {
            let next = self
                .dial_backs
                .get_mut(&peer)
                .and_then(|d| d.remaining.pop());
            let Some(addr) = next else {
                self.dial_backs.remove(&peer);
                if let Some(kad) = &mut self.kad {
                    kad.handle_dial_back(peer, false, now);
                }
                return;
            };
            if let Some(id) = self.dial_with(addr, Some(peer), false, true, now) {
                if let Some(d) = self.dial_backs.get_mut(&peer) {
                    d.conn = Some(id);
                }
                return;
            }
        }
    }

    /// Connection `id` reached `peer`: if it was a dial-back's, the record goes in.
    pub(super) fn dial_back_reached(&mut self, id: ConnId, peer: PeerId, now: Instant) {
        if self.dial_backs.get(&peer).and_then(|d| d.conn) == Some(id) {
            self.dial_backs.remove(&peer);
            if let Some(kad) = &mut self.kad {
                kad.handle_dial_back(peer, true, now);
            }
        }
    }

    /// Connection `id` to `peer` failed or closed before it was established: a
    /// dial-back's tries the next address.
    pub(super) fn dial_back_lost(&mut self, id: ConnId, peer: Option<PeerId>, now: Instant) {
        let Some(peer) = peer else { return };
        if self.dial_backs.get(&peer).and_then(|d| d.conn) == Some(id) {
            self.dial_back_next(peer, now);
            self.drain_kad(now);
        }
    }
}
