//! Kademlia over a simulated network of in-memory nodes, on virtual time.

use std::collections::{HashMap, HashSet, VecDeque};

use super::key::distance;
use super::*;

pub(crate) struct SimNet {
    pub nodes: Vec<Kademlia>,
    pub keys: Vec<Keypair>,
    pub index: HashMap<PeerId, usize>,
    pub now: Instant,
    pub dead: HashSet<usize>,
    pub misbehaved: Vec<(usize, PeerId, KadViolation)>,
    dirty: Vec<usize>,
}

/// A deterministic key seed for simulated node `i`.
pub(crate) fn seed_bytes(i: u64) -> [u8; 32] {
    let mut rng = Rng::new(i ^ 0x6b61_6473_696d);
    let mut s = [0u8; 32];
    for c in s.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    s
}

pub(crate) fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i / 250) as u8, (i % 250) as u8, 1], 4000))
}

impl SimNet {
    pub fn new(n: usize, config: KadConfig) -> Self {
        let now = Instant::now();
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed(seed_bytes(i as u64)))
            .collect();
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Kademlia::new(k, &[addr_of(i)], config.clone(), Rng::new(i as u64), now))
            .collect();
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.peer_id(), i))
            .collect();
        SimNet {
            nodes,
            keys,
            index,
            now,
            dead: HashSet::new(),
            misbehaved: vec![],
            dirty: vec![],
        }
    }

    pub fn id(&self, i: usize) -> PeerId {
        self.keys[i].peer_id()
    }

    /// Node `i` joins through node `j`.
    pub fn join(&mut self, i: usize, j: usize) {
        let (id, now) = (self.id(j), self.now);
        self.nodes[i].on_connected(id, vec![addr_of(j)], now);
        self.dirty.push(i);
        self.pump();
    }

    pub fn touch(&mut self, i: usize) {
        self.dirty.push(i);
    }

    /// Delivers messages until the network is quiet (firing request timeouts for
    /// messages to dead nodes); returns the finished lookups by node.
    pub fn pump(&mut self) -> Vec<(usize, LookupResult)> {
        let mut results = Vec::new();
        let mut queue: VecDeque<(usize, usize, Vec<u8>)> = VecDeque::new();
        loop {
            while let Some(i) = self.dirty.pop() {
                while let Some(out) = self.nodes[i].poll_output() {
                    match out {
                        KadOutput::Send { peer, bytes, .. } => {
                            if let Some(&to) = self.index.get(&peer) {
                                queue.push_back((i, to, bytes));
                            }
                        }
                        KadOutput::Misbehaved { peer, reason, .. } => {
                            self.misbehaved.push((i, peer, reason))
                        }
                        KadOutput::DialBack { peer, addrs } => {
                            // Reached if a live node listens at the first address.
                            let live = self.index.get(&peer).is_some_and(|&to| {
                                !self.dead.contains(&to) && addrs.first() == Some(&addr_of(to))
                            });
                            let now = self.now;
                            self.nodes[i].handle_dial_back(peer, live, now);
                        }
                    }
                }
                while let Some(r) = self.nodes[i].poll_result() {
                    results.push((i, r));
                }
            }
            if let Some((from, to, bytes)) = queue.pop_front() {
                self.now += Duration::from_micros(50);
                if !self.dead.contains(&to) {
                    let from_id = self.id(from);
                    self.nodes[to].handle_message(from_id, None, &bytes, self.now);
                    self.dirty.push(to);
                }
                continue;
            }
            // Quiet: let time run to the next deadline, if a request is waiting on a dead node.
            let waiting = self.nodes.iter().any(|n| !n.pending.is_empty());
            if !waiting {
                return results;
            }
            self.now += Duration::from_secs(3);
            let now = self.now;
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if !n.pending.is_empty() {
                    n.handle_timeout(now);
                    self.dirty.push(i);
                }
            }
        }
    }

    /// The true k closest live nodes to `key`, other than `except`.
    pub fn true_closest(&self, key: &Key, k: usize, except: usize) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = (0..self.nodes.len())
            .filter(|i| *i != except && !self.dead.contains(i))
            .map(|i| self.id(i))
            .collect();
        ids.sort_by_key(|id| distance(id.as_bytes(), key));
        ids.truncate(k);
        ids
    }
}

/// Every node joins through one random earlier node.
pub(crate) fn build(n: usize, config: KadConfig, seed: u64) -> SimNet {
    let mut net = SimNet::new(n, config);
    let mut rng = Rng::new(seed);
    for i in 1..n {
        let j = rng.below(i as u64) as usize;
        net.join(i, j);
    }
    net
}

fn random_key(rng: &mut Rng) -> Key {
    let mut k = [0u8; 32];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    k
}

fn check_lookups(net: &mut SimNet, lookups: usize, seed: u64) -> (usize, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let mut exact = 0;
    let mut hops = Vec::new();
    for _ in 0..lookups {
        let origin = rng.below(net.nodes.len() as u64) as usize;
        let key = random_key(&mut rng);
        let now = net.now;
        let id = net.nodes[origin].find_node(key, now).unwrap();
        net.touch(origin);
        let results = net.pump();
        let (_, r) = results
            .into_iter()
            .find(|(i, r)| *i == origin && r.id == id)
            .expect("lookup finished");
        let got: Vec<PeerId> = r.closest.iter().map(|p| p.id).collect();
        if got == net.true_closest(&key, 20, origin) {
            exact += 1;
        }
        hops.push(r.hops);
    }
    (exact, hops)
}

#[test]
fn lookups_over_1000_nodes_return_the_true_k_closest() {
    let mut net = build(1000, KadConfig::default(), 7);
    let (exact, hops) = check_lookups(&mut net, 100, 99);
    assert!(exact >= 99, "{exact}/100 lookups exact");
    let mut sorted = hops.clone();
    sorted.sort_unstable();
    assert!(sorted[98] <= 6, "hops p99 {}", sorted[98]);
    assert!(net.misbehaved.is_empty(), "{:?}", &net.misbehaved[..1]);
}

#[test]
fn disjoint_path_lookups_are_exact_too() {
    let config = KadConfig {
        disjoint_paths: 2,
        ..KadConfig::default()
    };
    let mut net = build(200, config, 3);
    let (exact, _) = check_lookups(&mut net, 40, 5);
    assert!(exact >= 39, "{exact}/40 lookups exact");
}

#[test]
fn lookups_route_around_dead_nodes() {
    // A fifth of the nodes die at once. One refresh round later (the periodic bucket
    // refresh, whose requests to the dead fail and evict them), lookups still return
    // k live nodes, nearly all of them the true closest.
    let mut net = build(200, KadConfig::default(), 11);
    for i in (0..200).step_by(5) {
        net.dead.insert(i);
    }
    net.now += KadConfig::default().refresh_every;
    let now = net.now;
    for i in 0..200 {
        if !net.dead.contains(&i) {
            net.nodes[i].handle_timeout(now);
            net.touch(i);
        }
    }
    net.pump();
    let mut rng = Rng::new(13);
    let (mut overlap, mut total) = (0, 0);
    for _ in 0..20 {
        let origin = loop {
            let o = rng.below(200) as usize;
            if !net.dead.contains(&o) {
                break o;
            }
        };
        let key = random_key(&mut rng);
        let now = net.now;
        let id = net.nodes[origin].find_node(key, now).unwrap();
        net.touch(origin);
        let results = net.pump();
        let (_, r) = results
            .into_iter()
            .find(|(i, r)| *i == origin && r.id == id)
            .unwrap();
        assert_eq!(r.closest.len(), 20, "a full answer despite the dead");
        assert!(
            r.closest
                .iter()
                .all(|p| !net.dead.contains(&net.index[&p.id])),
            "dead node returned"
        );
        let truth = net.true_closest(&key, 20, origin);
        overlap += r.closest.iter().filter(|p| truth.contains(&p.id)).count();
        total += 20;
    }
    assert!(
        overlap * 100 >= total * 95,
        "{overlap}/{total} of the true closest found"
    );
}

#[test]
fn providers_are_found_and_expire_at_their_ttl() {
    let config = KadConfig {
        provider_ttl: Duration::from_secs(60),
        refresh_every: Duration::from_secs(30),
        ..KadConfig::default()
    };
    let mut net = build(100, config, 21);
    let service = [0xabu8; 32];
    let now = net.now;
    let sig = crate::kad::provider::sign(&net.keys[7], &service, b"v=2");
    net.nodes[7].provide(service, b"v=2".to_vec(), sig, now);
    net.touch(7);
    net.pump();
    net.nodes[7].stop_providing(&service);
    let now = net.now;
    let id = net.nodes[50].find_providers(service, now).unwrap();
    net.touch(50);
    let results = net.pump();
    let r = &results
        .iter()
        .find(|(i, r)| *i == 50 && r.id == id)
        .unwrap()
        .1;
    assert_eq!(
        r.providers.iter().map(|p| p.id()).collect::<Vec<_>>(),
        vec![net.id(7)]
    );
    assert_eq!(
        r.providers[0].metadata, b"v=2",
        "the signed metadata came along"
    );

    // Past the TTL, with no republishing, the records are gone everywhere.
    net.now += Duration::from_secs(61);
    let now = net.now;
    for (i, n) in net.nodes.iter_mut().enumerate() {
        n.providers.expire(now);
        assert!(n.providers.is_empty(), "node {i} kept an expired provider");
    }
    let id = net.nodes[50].find_providers(service, now).unwrap();
    net.touch(50);
    let results = net.pump();
    let r = &results
        .iter()
        .find(|(i, r)| *i == 50 && r.id == id)
        .unwrap()
        .1;
    assert!(r.providers.is_empty());
}

#[test]
fn forged_and_replayed_records_are_rejected_and_reported() {
    let mut net = build(30, KadConfig::default(), 31);
    let now = net.now;
    let (victim, asker) = (net.id(1), 3usize);
    // The asker looks the victim up without knowing it; the first peer it asks lies,
    // answering with a forged record of the victim. Records in answers are verified
    // when the lookup is about to use them: the victim is the closest candidate, so
    // the forgery is checked at once, refused and blamed on the liar.
    net.nodes[asker].table.remove(&victim);
    net.nodes[asker].find_node(*victim.as_bytes(), now).unwrap();
    let (liar_id, req_id) = std::iter::from_fn(|| net.nodes[asker].poll_output())
        .find_map(|out| match out {
            KadOutput::Send { peer, bytes, .. } => match wire::KadMessage::decode(&bytes[..]) {
                Ok(wire::KadMessage {
                    msg: Some(wire::kad_message::Msg::Request(r)),
                }) => Some((peer, r.id)),
                _ => None,
            },
            _ => None,
        })
        .unwrap();
    let liar = (0..30).find(|&i| net.id(i) == liar_id).unwrap();
    let mut forged = net.nodes[1].local_record().to_wire();
    forged.addrs = vec!["6.6.6.6:666".into()];
    let resp = wire::KadResponse {
        id: req_id,
        sender: Some(net.nodes[liar].local_record().to_wire()),
        closer: vec![forged],
        providers: vec![],
    };
    let bytes = wire::KadMessage {
        msg: Some(wire::kad_message::Msg::Response(resp)),
    }
    .encode_to_vec();
    net.nodes[asker].handle_message(liar_id, None, &bytes, now);
    assert!(
        std::iter::from_fn(|| net.nodes[asker].poll_output()).any(|out| matches!(
            out,
            KadOutput::Misbehaved { peer, reason: KadViolation::ForgedRecord, .. } if peer == liar_id
        )),
        "the forged record was not reported"
    );
    net.touch(asker);
    net.pump();
    if let Some(rec) = net.nodes[asker].table().get(&victim) {
        assert_ne!(
            rec.addrs,
            vec!["6.6.6.6:666".parse::<SocketAddr>().unwrap()]
        );
    }

    // Replaying someone else's valid record as one's own sender record is refused.
    let replay = wire::KadRequest {
        id: 1,
        sender: Some(net.nodes[1].local_record().to_wire()),
        body: Some(wire::kad_request::Body::Ping(wire::KadPing {})),
    };
    let bytes = wire::KadMessage {
        msg: Some(wire::kad_message::Msg::Request(replay)),
    }
    .encode_to_vec();
    net.nodes[asker].handle_message(liar_id, None, &bytes, now);
    net.touch(asker);
    net.pump();
    assert!(net.misbehaved.iter().any(|(i, p, r)| *i == asker
        && *p == liar_id
        && *r == KadViolation::SenderRecordOfAnother));
}

#[test]
fn garbage_and_request_floods_are_reported() {
    let mut net = SimNet::new(2, KadConfig::default());
    let now = net.now;
    let from = net.id(1);
    net.nodes[0].handle_message(from, None, b"\xff\xff\xff garbage", now);
    assert!(matches!(
        net.nodes[0].poll_output(),
        Some(KadOutput::Misbehaved {
            reason: KadViolation::Undecodable,
            ..
        })
    ));
    let ping = wire::KadRequest {
        id: 1,
        sender: Some(net.nodes[1].local_record().to_wire()),
        body: Some(wire::kad_request::Body::Ping(wire::KadPing {})),
    };
    let bytes = wire::KadMessage {
        msg: Some(wire::kad_message::Msg::Request(ping)),
    }
    .encode_to_vec();
    let mut floods = 0;
    for _ in 0..300 {
        net.nodes[0].handle_message(from, None, &bytes, now);
        while let Some(out) = net.nodes[0].poll_output() {
            if matches!(
                out,
                KadOutput::Misbehaved {
                    reason: KadViolation::RequestRate,
                    ..
                }
            ) {
                floods += 1;
            }
        }
    }
    assert_eq!(floods, 100, "burst of 200 allowed, the rest reported");
}

/// 31 nodes; node 30 joins through node 0 and provides a key. Node 0 holds node 30
/// private when `private`.
fn sentry_net(private: bool) -> SimNet {
    let mut net = SimNet::new(31, KadConfig::default());
    if private {
        let p = net.id(30);
        net.nodes[0].set_private(p, true);
    }
    let mut rng = Rng::new(3);
    for i in 1..30 {
        let j = rng.below(i as u64) as usize;
        net.join(i, j);
    }
    // It talks to its sentry (node 0) and, through the lookups it runs, to others.
    net.join(30, 0);
    let now = net.now;
    let sig = crate::kad::provider::sign(&net.keys[30], &SERVICE, b"");
    net.nodes[30].provide(SERVICE, Vec::new(), sig, now);
    net.touch(30);
    net.pump();
    net
}

const SERVICE: [u8; 32] = [0x5a; 32];

#[test]
fn a_private_peer_stays_out_of_the_table_and_the_provider_store() {
    // Without the flag, node 0 holds both (so the check below can fail).
    let open = sentry_net(false);
    let p = open.id(30);
    assert!(open.nodes[0].table().get(&p).is_some());
    assert!(!open.nodes[0].providers.get(&SERVICE, open.now).is_empty());
    let mut net = sentry_net(true);
    assert!(net.nodes[0].table().get(&p).is_none());
    assert!(net.nodes[0].providers.get(&SERVICE, net.now).is_empty());
    // Others it reached on its own do know it: private is the sentry's promise.
    assert!((1..30).any(|i| net.nodes[i].table().get(&p).is_some()));
    // Made private later, a peer leaves the table at once.
    let other = net.nodes[0].table().records().next().unwrap().id;
    net.nodes[0].set_private(other, true);
    assert!(net.nodes[0].table().get(&other).is_none());
}
