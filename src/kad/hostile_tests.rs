//! One Kademlia node facing peers that lie or stall: each test is a hole from the
//! hostile-peers review.

use super::tests::{addr_of, seed_bytes};
use super::*;

struct One {
    kad: Kademlia,
    peers: Vec<Keypair>,
    now: Instant,
}

fn one(peers: usize, config: KadConfig) -> One {
    let now = Instant::now();
    let me = Keypair::from_seed(seed_bytes(10_000));
    let mut o = One {
        kad: Kademlia::new(&me, &[addr_of(9999)], config, Rng::new(5), now),
        peers: (0..peers)
            .map(|i| Keypair::from_seed(seed_bytes(i as u64)))
            .collect(),
        now,
    };
    // Each peer pings us, so its record (seen from its own address, and dialed
    // back there) is in our table.
    for i in 0..peers {
        let ping = o.request(i, wire::kad_request::Body::Ping(wire::KadPing {}));
        let (id, ip) = (o.peers[i].peer_id(), addr_of(i).ip());
        o.kad.handle_message(id, Some(ip), &ping, o.now);
    }
    while let Some(out) = o.kad.poll_output() {
        if let KadOutput::DialBack { peer, .. } = out {
            o.kad.handle_dial_back(peer, true, o.now);
        }
    }
    o
}

impl One {
    fn record(&self, i: usize) -> wire::PeerRecord {
        PeerRecord::sign(&self.peers[i], &[addr_of(i)], 7).to_wire()
    }

    fn request(&self, i: usize, body: wire::kad_request::Body) -> Vec<u8> {
        wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Request(wire::KadRequest {
                id: 1,
                sender: Some(self.record(i)),
                body: Some(body),
            })),
        }
        .encode_to_vec()
    }

    /// Requests we sent: (peer index, request id).
    fn sent(&mut self) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        while let Some(o) = self.kad.poll_output() {
            if let KadOutput::Send { peer, bytes, .. } = o {
                let i = self.peers.iter().position(|k| k.peer_id() == peer);
                let msg = wire::KadMessage::decode(bytes.as_slice()).unwrap();
                if let (Some(i), Some(wire::kad_message::Msg::Request(r))) = (i, msg.msg) {
                    out.push((i, r.id));
                }
            }
        }
        out
    }

    fn answer(&mut self, i: usize, id: u64, closer: Vec<wire::PeerRecord>) {
        let resp = wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Response(wire::KadResponse {
                id,
                sender: Some(self.record(i)),
                closer,
                providers: vec![],
            })),
        }
        .encode_to_vec();
        let peer = self.peers[i].peer_id();
        self.kad
            .handle_message(peer, Some(addr_of(i).ip()), &resp, self.now);
    }
}

#[test]
fn a_dropped_answer_fails_its_candidate_and_the_lookup_ends() {
    let mut o = one(3, KadConfig::default());
    let lookup = o.kad.find_node([0x42; 32], o.now).unwrap();
    let sent = o.sent();
    assert_eq!(sent.len(), 3);
    // One answer is oversized (dropped); the others answer with nothing new.
    let junk: Vec<_> = (0..21).map(|_| o.record(0)).collect();
    for &(i, id) in &sent {
        let closer = if i == 0 { junk.clone() } else { vec![] };
        o.answer(i, id, closer);
    }
    let result = std::iter::from_fn(|| o.kad.poll_result())
        .find(|r| r.id == lookup)
        .expect("finished without waiting for a timeout");
    assert_eq!(result.closest.len(), 2, "the liar is not among the results");
}

#[test]
fn a_lookup_ends_at_its_overall_deadline_whatever_the_peers_do() {
    let config = KadConfig {
        request_timeout: Duration::from_secs(3600),
        ..KadConfig::default()
    };
    let timeout = config.lookup_timeout;
    let mut o = one(3, config);
    let id = o.kad.find_node([0x42; 32], o.now).unwrap();
    assert_eq!(o.sent().len(), 3);
    // Nobody answers, and their requests would not time out for an hour.
    assert!(o.kad.poll_timeout().unwrap() <= o.now + timeout);
    o.kad.handle_timeout(o.now + timeout);
    let finished: Vec<_> = std::iter::from_fn(|| o.kad.poll_result()).collect();
    assert!(finished.iter().any(|r| r.id == id));
}

#[test]
fn diversity_counts_the_address_a_peer_is_seen_on_not_the_one_it_claims() {
    let now = Instant::now();
    let me = Keypair::from_seed(seed_bytes(10_000));
    let mut t = RoutingTable::new(me.peer_id(), TableConfig::default());
    // Thirty peers claiming thirty /24s, all connecting from one.
    let seen = "10.77.0.5".parse().unwrap();
    let mut added = 0;
    for i in 0..30 {
        let k = Keypair::from_seed(seed_bytes(100 + i));
        let r = PeerRecord::sign(&k, &[addr_of(i as usize)], 1);
        if t.insert(r, Some(seen), now) == table::Insert::Added {
            added += 1;
        }
    }
    assert!(added <= 10, "{added} entries from one seen /24");
    // A peer that shows up again from a full subnet loses its place.
    let k = Keypair::from_seed(seed_bytes(500));
    let r = PeerRecord::sign(&k, &[addr_of(500)], 1);
    assert_eq!(t.insert(r.clone(), None, now), table::Insert::Added);
    assert_eq!(t.insert(r, Some(seen), now), table::Insert::Refused);
    assert!(t.get(&k.peer_id()).is_none());
}

#[test]
fn a_provider_announcement_must_be_the_provider_own_and_small() {
    let mut o = one(3, KadConfig::default());
    let key = [0x42u8; 32];
    let misbehaved = |o: &mut One| {
        let mut n = 0;
        while let Some(out) = o.kad.poll_output() {
            n += usize::from(matches!(out, KadOutput::Misbehaved { .. }));
        }
        n
    };
    let announce = |o: &One, i: usize, metadata: &[u8], signer: usize| {
        let signature = crate::kad::provider::sign(&o.peers[signer], &key, metadata);
        o.request(
            i,
            wire::kad_request::Body::AddProvider(wire::AddProvider {
                key: key.to_vec(),
                ttl_secs: 60,
                metadata: metadata.to_vec(),
                signature,
            }),
        )
    };
    let peer = |o: &One, i: usize| o.peers[i].peer_id();
    // Peer 0 sends an announcement that peer 1's key signed: no one can make another
    // node a provider (or change what it says). Refused and reported.
    let forged = announce(&o, 0, b"x", 1);
    o.kad
        .handle_message(peer(&o, 0), Some(addr_of(0).ip()), &forged, o.now);
    assert_eq!(misbehaved(&mut o), 1);
    // Oversized metadata: refused before any signature check.
    let big = announce(&o, 1, &[0u8; 300], 1);
    o.kad
        .handle_message(peer(&o, 1), Some(addr_of(1).ip()), &big, o.now);
    assert_eq!(misbehaved(&mut o), 1);
    assert_eq!(o.kad.provider_records(), 0);
    // Its own, small: stored with its metadata.
    let good = announce(&o, 2, b"shard=2", 2);
    o.kad
        .handle_message(peer(&o, 2), Some(addr_of(2).ip()), &good, o.now);
    assert_eq!(misbehaved(&mut o), 0);
    let held = o.kad.providers.get(&key, o.now);
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].id(), held[0].metadata.as_slice()),
        (peer(&o, 2), &b"shard=2"[..])
    );
}
