//! Dial-back: a peer's record enters the routing table only once one of its
//! addresses was reached.
//!
//! A record is signed by its owner, but what it says about where the owner listens
//! is the owner's word: a peer could name a victim's address (every node that
//! learns the record then dials the victim) or one nobody can reach (and fill
//! tables with dead entries). So a record new to the table, or with new addresses,
//! waits until the node reached the peer at one of them: an outbound connection we
//! dialed there already counts ([`Kademlia::on_reached`]); otherwise the node is
//! asked to dial back ([`KadOutput::DialBack`]) and answers with
//! [`Kademlia::handle_dial_back`]. Bounded: a few dial-backs at once, one per
//! peer, and a failed peer is not tried again for a while.
//!
//! The cheap check comes first: a record whose every address is on the IP the
//! peer's own connection comes from needs no dial-back. TCP already proved that IP
//! is the peer's, so such a record can point at no one else's host; what it cannot
//! prove (that the port listens) costs only the table slot, which the ping of a
//! full bucket takes back. Measured on the 200-node testnet, dialing back every
//! new record instead made joining about 40% slower (a handshake per record).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::collections::Map;
use crate::identity::PeerId;
use crate::kad::record::PeerRecord;
use crate::kad::table::Insert;
use crate::kad::{KadOutput, Kademlia};
use crate::wire;

/// Dial-backs waiting at once; a record beyond that waits for its next contact.
const MAX_PENDING: usize = 32;
/// A dial-back the node never answered is given up after this.
const PENDING_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer whose dial-back failed is not dialed back again before this.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Peers remembered as reached at an address, and as failed.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug)]
struct Waiting {
    record: PeerRecord,
    seen: Option<IpAddr>,
    since: Instant,
}

/// Records waiting for their dial-back, and what is known of reachability.
#[derive(Debug, Default)]
pub(crate) struct DialBacks {
    waiting: Map<PeerId, Waiting>,
    reached: Map<PeerId, SocketAddr>,
    failed: Map<PeerId, Instant>,
    /// Records dropped because too many dial-backs were waiting.
    pub(crate) dropped: u64,
}

fn remember<V>(map: &mut Map<PeerId, V>, peer: PeerId, value: V) {
    if map.len() >= MAX_REMEMBERED && !map.contains_key(&peer) {
        if let Some(victim) = map.keys().next().copied() {
            map.remove(&victim);
        }
    }
    map.insert(peer, value);
}

impl Kademlia {
    /// We dialed `addr` and the handshake proved `peer` is there: its records
    /// naming `addr` need no dial-back.
    pub fn on_reached(&mut self, peer: PeerId, addr: SocketAddr) {
        self.dial_backs.failed.remove(&peer);
        remember(&mut self.dial_backs.reached, peer, addr);
    }

    /// The dial-back of `peer` asked for by [`KadOutput::DialBack`] reached it
    /// (`true`) or not: its record enters the table, or is dropped.
    pub fn handle_dial_back(&mut self, peer: PeerId, reachable: bool, now: Instant) {
        let Some(w) = self.dial_backs.waiting.remove(&peer) else {
            return;
        };
        if reachable {
            self.insert_reached(w.record, w.seen, now);
        } else {
            log::debug!(
                "kad: peer {} unreachable at its record's addresses",
                peer.short()
            );
            remember(&mut self.dial_backs.failed, peer, now);
        }
    }

    /// Records waiting for a dial-back now, and those dropped for want of room.
    pub fn dial_backs(&self) -> (usize, u64) {
        (self.dial_backs.waiting.len(), self.dial_backs.dropped)
    }

    /// A verified record `peer` sent about itself: into the table if one of its
    /// addresses was reached (or it only refreshes what the table has), else a
    /// dial-back is asked for.
    pub(super) fn admit_record(&mut self, rec: PeerRecord, seen: Option<IpAddr>, now: Instant) {
        if !self.config.dial_back || self.already_reached(&rec, seen) {
            self.insert_reached(rec, seen, now);
            return;
        }
        let d = &mut self.dial_backs;
        if let Some(w) = d.waiting.get_mut(&rec.id) {
            if rec.seq > w.record.seq {
                w.record = rec;
            }
            return;
        }
        if d.failed
            .get(&rec.id)
            .is_some_and(|t| now < *t + RETRY_AFTER)
        {
            return;
        }
        d.waiting.retain(|_, w| now < w.since + PENDING_TIMEOUT);
        if d.waiting.len() >= MAX_PENDING {
            d.dropped += 1;
            return;
        }
        let (peer, addrs) = (rec.id, rec.addrs.clone());
        d.waiting.insert(
            peer,
            Waiting {
                record: rec,
                seen,
                since: now,
            },
        );
        self.outputs.push_back(KadOutput::DialBack { peer, addrs });
    }

    /// Whether `rec` names only the IP its owner's connection comes from (`seen`),
    /// or an address we reached its owner at, or the table holds it with these very
    /// addresses already.
    fn already_reached(&self, rec: &PeerRecord, seen: Option<IpAddr>) -> bool {
        let own_ip =
            seen.is_some_and(|ip| !rec.addrs.is_empty() && rec.addrs.iter().all(|a| a.ip() == ip));
        let reached = self
            .dial_backs
            .reached
            .get(&rec.id)
            .is_some_and(|a| rec.addrs.contains(a));
        own_ip
            || reached
            || self
                .table
                .get(&rec.id)
                .is_some_and(|t| t.addrs == rec.addrs)
    }

    fn insert_reached(&mut self, rec: PeerRecord, seen: Option<IpAddr>, now: Instant) {
        if let Insert::PingLeastRecent(lrs) = self.table.insert(rec, seen, now) {
            if let Some(addrs) = self.table.get(&lrs).map(|r| r.addrs.clone()) {
                self.request(
                    lrs,
                    addrs,
                    wire::kad_request::Body::Ping(wire::KadPing {}),
                    None,
                    true,
                    now,
                );
            }
        }
        self.bootstrap_on_first_contact(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::kad::tests::{addr_of, seed_bytes};
    use crate::kad::KadConfig;
    use crate::rng::Rng;
    use prost::Message;

    fn node(now: Instant) -> Kademlia {
        let me = Keypair::from_seed(seed_bytes(20_000));
        Kademlia::new(
            &me,
            &[addr_of(9999)],
            KadConfig::default(),
            Rng::new(1),
            now,
        )
    }

    /// Peer `i` pings `kad` from 192.0.2.1, its record naming `addr`; returns the
    /// dial-backs asked.
    fn ping(kad: &mut Kademlia, i: u64, addr: SocketAddr, now: Instant) -> Vec<PeerId> {
        ping_from(kad, i, addr, IpAddr::from([192, 0, 2, 1]), now)
    }

    fn ping_from(
        kad: &mut Kademlia,
        i: u64,
        addr: SocketAddr,
        from: IpAddr,
        now: Instant,
    ) -> Vec<PeerId> {
        let key = Keypair::from_seed(seed_bytes(i));
        let msg = wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Request(wire::KadRequest {
                id: i,
                sender: Some(PeerRecord::sign(&key, &[addr], 3).to_wire()),
                body: Some(wire::kad_request::Body::Ping(wire::KadPing {})),
            })),
        }
        .encode_to_vec();
        kad.handle_message(key.peer_id(), Some(from), &msg, now);
        std::iter::from_fn(|| kad.poll_output())
            .filter_map(|o| match o {
                KadOutput::DialBack { peer, addrs } => {
                    assert_eq!(addrs, vec![addr]);
                    Some(peer)
                }
                _ => None,
            })
            .collect()
    }

    fn id(i: u64) -> PeerId {
        Keypair::from_seed(seed_bytes(i)).peer_id()
    }

    #[test]
    fn a_record_enters_the_table_only_once_its_address_was_reached() {
        let now = Instant::now();
        let mut kad = node(now);
        // Unknown: a dial-back is asked, once however often the peer writes.
        assert_eq!(ping(&mut kad, 1, addr_of(1), now), vec![id(1)]);
        assert!(
            ping(&mut kad, 1, addr_of(1), now).is_empty(),
            "one at a time"
        );
        assert!(kad.table().get(&id(1)).is_none());
        kad.handle_dial_back(id(1), true, now);
        assert!(kad.table().get(&id(1)).is_some());
        assert!(
            ping(&mut kad, 1, addr_of(1), now).is_empty(),
            "a refresh needs none"
        );
        // A new address is checked again.
        assert_eq!(ping(&mut kad, 1, addr_of(77), now), vec![id(1)]);
        // Unreachable: dropped, and not dialed back again for a while.
        assert_eq!(ping(&mut kad, 2, addr_of(2), now), vec![id(2)]);
        kad.handle_dial_back(id(2), false, now);
        assert!(kad.table().get(&id(2)).is_none());
        assert!(ping(&mut kad, 2, addr_of(2), now + Duration::from_secs(10)).is_empty());
        let later = now + RETRY_AFTER;
        assert_eq!(ping(&mut kad, 2, addr_of(2), later), vec![id(2)]);
        // A peer we dialed at its address needs no dial-back.
        kad.on_reached(id(3), addr_of(3));
        assert!(ping(&mut kad, 3, addr_of(3), later).is_empty());
        assert!(kad.table().get(&id(3)).is_some());
        // Nor one whose record names only the IP its connection comes from.
        let own = addr_of(4);
        assert!(ping_from(&mut kad, 4, own, own.ip(), later).is_empty());
        assert!(kad.table().get(&id(4)).is_some());
    }

    #[test]
    fn dial_backs_waiting_at_once_are_bounded() {
        let now = Instant::now();
        let mut kad = node(now);
        let mut asked = 0;
        for i in 100..200 {
            asked += ping(&mut kad, i, addr_of(i as usize), now).len();
        }
        assert_eq!(asked, MAX_PENDING);
        assert_eq!(kad.dial_backs(), (MAX_PENDING, 100 - MAX_PENDING as u64));
        // Unanswered ones expire and make room.
        let later = now + PENDING_TIMEOUT;
        assert_eq!(ping(&mut kad, 300, addr_of(300), later), vec![id(300)]);
        assert_eq!(kad.dial_backs().0, 1);
    }
}
