//! Peer management: connection limits, scores, bans and redial schedules. Sans-IO.

use crate::collections::Map;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{PeerLimits, PersistentPeer};
use crate::conn::Direction;
use crate::identity::PeerId;
use crate::peer_score::{Misbehavior, PeerScore, ScoreBook, ScoreSource};
use crate::rate::RateTable;
use crate::rng::Rng;

/// Most bans remembered; the earliest to expire go first.
const MAX_BANS: usize = 4096;
/// Most subnets whose handshake rate is tracked; the fullest buckets go first.
const MAX_RATE_SUBNETS: usize = 4096;

/// What a connection holds in the peer manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Inbound, still handshaking.
    Pending,
    /// An established inbound peer.
    Inbound,
    /// An outbound peer (dialing or established).
    Outbound,
    /// A persistent or unconditional peer: counted against no limit (their number
    /// is what the operator configured), only against its IP.
    Reserved,
    /// No slot, but counted against its IP (lookup-only, or refused and closing).
    IpOnly,
    /// Nothing (our own lookup-only dials).
    None,
}

/// Why an inbound connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The inbound limit is reached.
    TooManyInbound,
    /// Too many inbound connections are handshaking.
    TooManyPending,
    /// The outbound limit is reached.
    TooManyOutbound,
    /// The per-IP limit is reached.
    TooManyFromIp,
    /// The address is banned.
    BannedIp,
    /// Too many new handshakes from the address's subnet lately.
    HandshakeRate,
}

impl Refusal {
    /// A label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooManyInbound => "max_inbound",
            Refusal::TooManyPending => "max_pending",
            Refusal::TooManyOutbound => "max_outbound",
            Refusal::TooManyFromIp => "per_ip",
            Refusal::BannedIp => "banned_ip",
            Refusal::HandshakeRate => "handshake_rate",
        }
    }
}

#[derive(Debug, Clone)]
struct Persistent {
    peer: PersistentPeer,
    failures: u32,
    next_dial: Option<Instant>,
    connected: bool,
    dialing: bool,
}

/// Limits, scores, bans and persistent-peer redials of one node.
#[derive(Debug)]
pub struct PeerManager {
    limits: PeerLimits,
    inbound: usize,
    pending_inbound: usize,
    outbound: usize,
    per_ip: Map<IpAddr, usize>,
    scores: ScoreBook,
    bans: Map<PeerId, Instant>,
    ip_bans: Map<IpAddr, Instant>,
    /// New inbound handshakes per subnet.
    handshake_rate: Option<RateTable<[u8; 8]>>,
    persistent: Vec<Persistent>,
    unconditional: crate::collections::Set<PeerId>,
    rng: Rng,
}

impl PeerManager {
    /// A manager with these limits and persistent peers, dialing the latter at `now`.
    pub fn new(
        limits: PeerLimits,
        persistent: Vec<PersistentPeer>,
        now: Instant,
        rng: Rng,
    ) -> Self {
        let rate = limits
            .handshake_rate
            .map(|r| RateTable::new(r.per_sec, r.burst, MAX_RATE_SUBNETS));
        // Good marks may make up for one violation, no more.
        let scores = ScoreBook::new(limits.score_half_life, limits.violation_penalty);
        PeerManager {
            limits,
            inbound: 0,
            pending_inbound: 0,
            outbound: 0,
            per_ip: Map::default(),
            scores,
            bans: Map::default(),
            ip_bans: Map::default(),
            handshake_rate: rate,
            persistent: persistent
                .into_iter()
                .map(|peer| Persistent {
                    peer,
                    failures: 0,
                    next_dial: Some(now),
                    connected: false,
                    dialing: false,
                })
                .collect(),
            unconditional: Default::default(),
            rng,
        }
    }

    /// Admits an accepted connection before any handshake work: refuses banned
    /// addresses and subnets (/24, /64) over their handshake rate, then takes a
    /// pending slot as [`PeerManager::admit`] does.
    pub fn admit_inbound(&mut self, ip: IpAddr, now: Instant) -> Result<Slot, Refusal> {
        match self.ip_bans.get(&ip) {
            Some(&until) if until > now => return Err(Refusal::BannedIp),
            Some(_) => {
                self.ip_bans.remove(&ip);
            }
            None => {}
        }
        if let Some(rate) = &mut self.handshake_rate {
            if !rate.try_take(rate_subnet(ip), now) {
                return Err(Refusal::HandshakeRate);
            }
        }
        self.admit(Direction::Inbound, ip)
    }

    /// Refuses inbound connections from `ip` until `now + duration`.
    pub fn ban_ip(&mut self, ip: IpAddr, duration: Duration, now: Instant) {
        if self.ip_bans.len() >= MAX_BANS && !self.ip_bans.contains_key(&ip) {
            self.ip_bans.retain(|_, until| *until > now);
            if self.ip_bans.len() >= MAX_BANS {
                return;
            }
        }
        self.ip_bans.insert(ip, now + duration);
    }

    /// How long a ban lasts.
    pub fn ban_duration(&self) -> Duration {
        self.limits.ban_duration
    }

    /// Admits a connection: an inbound one at accept takes a pending slot (it may
    /// turn out to be lookup-only), an outbound one at dial takes an outbound slot.
    /// Either counts against the per-IP limit until released.
    pub fn admit(&mut self, direction: Direction, ip: IpAddr) -> Result<Slot, Refusal> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        let slot = match direction {
            Direction::Inbound if self.pending_inbound >= self.limits.max_pending_inbound => {
                return Err(Refusal::TooManyPending)
            }
            Direction::Outbound if self.outbound >= self.limits.max_outbound => {
                return Err(Refusal::TooManyOutbound)
            }
            Direction::Inbound => {
                self.pending_inbound += 1;
                Slot::Pending
            }
            Direction::Outbound => {
                self.outbound += 1;
                Slot::Outbound
            }
        };
        *self.per_ip.entry(ip).or_default() += 1;
        Ok(slot)
    }

    /// Admits a dial to a persistent or unconditional peer: a reserved slot, which
    /// no limit refuses (the IP is still counted, for the others from there).
    pub fn admit_reserved(&mut self, ip: IpAddr) -> Slot {
        *self.per_ip.entry(ip).or_default() += 1;
        Slot::Reserved
    }

    /// A pending inbound connection finished its handshake as a full peer: it takes
    /// an inbound slot, or is refused (and then holds only its IP count until closed).
    /// A `reserved` peer (persistent or unconditional) takes a reserved slot instead,
    /// whatever the limits; so does an outbound connection that turned out to be one.
    pub fn establish(&mut self, slot: Slot, reserved: bool) -> Result<Slot, Slot> {
        if reserved && matches!(slot, Slot::Pending | Slot::Outbound) {
            self.unslot(slot);
            return Ok(Slot::Reserved);
        }
        if slot != Slot::Pending {
            return Ok(slot);
        }
        self.pending_inbound = self.pending_inbound.saturating_sub(1);
        if self.inbound >= self.limits.max_inbound {
            return Err(Slot::IpOnly);
        }
        self.inbound += 1;
        Ok(Slot::Inbound)
    }

    /// The connection turned out lookup-only: it gives up its slot, keeping its IP count.
    pub fn unslot(&mut self, slot: Slot) -> Slot {
        match slot {
            Slot::Pending => self.pending_inbound = self.pending_inbound.saturating_sub(1),
            Slot::Inbound => self.inbound = self.inbound.saturating_sub(1),
            Slot::Outbound => self.outbound = self.outbound.saturating_sub(1),
            Slot::Reserved => {}
            Slot::IpOnly | Slot::None => return slot,
        }
        Slot::IpOnly
    }

    /// Frees what [`PeerManager::admit`] took.
    pub fn release(&mut self, slot: Slot, ip: IpAddr) {
        if self.unslot(slot) == Slot::None {
            return;
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Slots in use: (inbound, outbound).
    pub fn slots(&self) -> (usize, usize) {
        (self.inbound, self.outbound)
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&mut self, peer: &PeerId, now: Instant) -> bool {
        match self.bans.get(peer) {
            Some(&until) if until > now => true,
            Some(_) => {
                self.bans.remove(peer);
                false
            }
            None => false,
        }
    }

    /// Bans `peer` until `now + duration`.
    pub fn ban(&mut self, peer: PeerId, duration: Duration, now: Instant) {
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(&peer) {
            self.bans.retain(|_, until| *until > now);
            if self.bans.len() >= MAX_BANS {
                if let Some(first) = self.bans.iter().min_by_key(|(_, u)| **u).map(|(p, _)| *p) {
                    self.bans.remove(&first);
                }
            }
        }
        self.bans.insert(peer, now + duration);
    }

    /// The current score of `peer` and its parts (0 when unknown), decayed to `now`.
    pub fn score(&mut self, peer: &PeerId, now: Instant) -> PeerScore {
        self.scores.get(peer, now)
    }

    /// Adds `delta` to `source`'s part of `peer`'s score; returns `true` if the
    /// total fell below the ban threshold, in which case the peer is now banned.
    pub fn adjust(&mut self, peer: PeerId, source: ScoreSource, delta: f64, now: Instant) -> bool {
        let total = self.scores.adjust(peer, source, delta, now);
        if total < self.limits.ban_threshold {
            self.ban(peer, self.limits.ban_duration, now);
            self.scores.forget(&peer);
            return true;
        }
        false
    }

    /// Records a protocol violation; `true` if the peer is now banned.
    pub fn violation(&mut self, peer: PeerId, now: Instant) -> bool {
        self.adjust(
            peer,
            ScoreSource::Transport,
            -self.limits.violation_penalty,
            now,
        )
    }

    /// What the application's report of `what` costs: a tenth of a violation, one
    /// violation, or enough to cross the ban threshold from the best possible score.
    pub fn report_penalty(&self, what: Misbehavior) -> f64 {
        let v = self.limits.violation_penalty;
        match what {
            Misbehavior::Minor => -v / 10.0,
            Misbehavior::Invalid => -v,
            Misbehavior::Malicious => self.limits.ban_threshold - 2.0 * v - 1.0,
        }
    }

    /// What a good mark from the application adds (capped in total at one
    /// violation's worth).
    pub fn good_mark(&self) -> f64 {
        self.limits.violation_penalty / 10.0
    }

    /// Persistent peers due for a dial at `now`; each is marked as dialing.
    pub fn due_dials(&mut self, now: Instant) -> Vec<PersistentPeer> {
        let mut due = Vec::new();
        for p in &mut self.persistent {
            if !p.connected && !p.dialing && p.next_dial.is_some_and(|t| t <= now) {
                p.dialing = true;
                p.next_dial = None;
                due.push(p.peer.clone());
            }
        }
        due
    }

    /// The next time a persistent peer is due.
    pub fn next_dial(&self) -> Option<Instant> {
        self.persistent.iter().filter_map(|p| p.next_dial).min()
    }

    fn persistent_mut(&mut self, addr: SocketAddr, id: Option<PeerId>) -> Option<&mut Persistent> {
        self.persistent
            .iter_mut()
            .find(|p| p.peer.addr == addr || (id.is_some() && p.peer.id == id))
    }

    /// A persistent peer connected.
    pub fn persistent_connected(&mut self, addr: SocketAddr, id: PeerId) {
        if let Some(p) = self.persistent_mut(addr, Some(id)) {
            p.connected = true;
            p.dialing = false;
            p.failures = 0;
        }
    }

    /// A persistent peer's dial failed or its connection ended: schedule a redial
    /// with exponential backoff and jitter.
    pub fn persistent_lost(&mut self, addr: SocketAddr, id: Option<PeerId>, now: Instant) {
        let (base, max) = (self.limits.redial_base, self.limits.redial_max);
        let jitter = self.rng.unit();
        if let Some(p) = self.persistent_mut(addr, id) {
            p.connected = false;
            p.dialing = false;
            let backoff = base.saturating_mul(1u32 << p.failures.min(16)).min(max);
            // Up to half again, so a restarted network does not redial in lockstep.
            let delay = backoff.mul_f64(1.0 + 0.5 * jitter);
            p.failures = p.failures.saturating_add(1);
            p.next_dial = Some(now + delay);
        }
    }

    /// Adds a persistent peer at runtime, dialed at `now`; `false` if it was one.
    pub fn add_persistent(&mut self, peer: PersistentPeer, now: Instant) -> bool {
        if self.is_persistent(peer.addr, peer.id) {
            return false;
        }
        self.persistent.push(Persistent {
            peer,
            failures: 0,
            next_dial: Some(now),
            connected: false,
            dialing: false,
        });
        true
    }

    /// Stops redialing the persistent peer at `addr` (or with `id`); its connection,
    /// if any, stays as an ordinary one from its next connection on.
    pub fn remove_persistent(&mut self, addr: Option<SocketAddr>, id: Option<PeerId>) {
        self.persistent.retain(|p| {
            !(addr.is_some_and(|a| a == p.peer.addr) || (id.is_some() && p.peer.id == id))
        });
    }

    /// Makes `peer` exempt from the connection limits, or not.
    pub fn set_unconditional(&mut self, peer: PeerId, yes: bool) {
        if yes {
            self.unconditional.insert(peer);
        } else {
            self.unconditional.remove(&peer);
        }
    }

    /// Whether `peer` is exempt from the connection limits.
    pub fn is_unconditional(&self, peer: &PeerId) -> bool {
        self.unconditional.contains(peer)
    }

    /// Whether `addr` or `id` is a persistent peer.
    pub fn is_persistent(&self, addr: SocketAddr, id: Option<PeerId>) -> bool {
        self.persistent
            .iter()
            .any(|p| p.peer.addr == addr || (id.is_some() && p.peer.id == id))
    }
}

/// The subnet a handshake rate applies to: the /24 of an IPv4 address, the /64 of an
/// IPv6 one (one site's addresses).
fn rate_subnet(ip: IpAddr) -> [u8; 8] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], o[2], 0, 0, 0, 0]
        }
        IpAddr::V6(v6) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v6.octets()[..8]);
            b
        }
    }
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
