//! The router over a simulated network of in-memory nodes.

use std::collections::{HashSet, VecDeque};

use super::*;

/// A frame in flight: from, to, bytes, and the message a chunk belongs to.
type Queued = (usize, usize, Arc<Vec<u8>>, Option<MessageId>);

struct Net {
    routers: Vec<Router>,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, usize>,
    now: Instant,
    delivered: Vec<Vec<GossipEvent>>,
    penalties: Vec<(usize, PeerId, Penalty)>,
    links: HashSet<(usize, usize)>,
    down: HashSet<usize>,
    /// Chunk sends withdrawn before they left.
    withdrawn: usize,
}

pub(super) fn key(i: usize) -> Arc<Keypair> {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Arc::new(Keypair::from_seed(seed))
}

impl Net {
    fn new(n: usize, degree: usize, config: GossipConfig, validator: Option<Validator>) -> Net {
        let now = Instant::now();
        let keys: Vec<_> = (0..n).map(key).collect();
        let ids: Vec<PeerId> = keys.iter().map(|k| k.peer_id()).collect();
        let routers = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Router::new(
                    config.clone(),
                    Some(k.clone()),
                    validator.clone(),
                    Rng::new(i as u64),
                    now,
                )
            })
            .collect();
        let mut net = Net {
            routers,
            index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            ids,
            now,
            delivered: vec![Vec::new(); n],
            penalties: Vec::new(),
            links: HashSet::new(),
            down: HashSet::new(),
            withdrawn: 0,
        };
        let mut rng = Rng::new(99);
        for i in 0..n {
            let mut added = 0;
            while added < degree {
                let j = rng.below(n as u64) as usize;
                if j != i && net.links.insert((i.min(j), i.max(j))) {
                    added += 1;
                }
            }
        }
        for &(a, b) in &net.links.clone() {
            net.connect(a, b);
        }
        net
    }

    fn connect(&mut self, a: usize, b: usize) {
        let now = self.now;
        let ip = |i: usize| IpAddr::from([10, (i / 250) as u8, (i % 250) as u8, 1]);
        self.routers[a].add_peer(self.ids[b], ip(b), now);
        self.routers[b].add_peer(self.ids[a], ip(a), now);
    }

    fn run(&mut self) {
        // What each router sent, in order; a withdrawn chunk leaves it as it would
        // leave a connection's send queue.
        let mut queue: VecDeque<Queued> = VecDeque::new();
        loop {
            for i in 0..self.routers.len() {
                while let Some(out) = self.routers[i].poll_output() {
                    match out {
                        GossipOutput::Send {
                            peer,
                            bytes,
                            chunk_of,
                            ..
                        } => {
                            let j = self.index[&peer];
                            if !self.down.contains(&j) && !self.down.contains(&i) {
                                queue.push_back((i, j, bytes, chunk_of));
                            }
                        }
                        GossipOutput::Withdraw { peer, id } => {
                            let j = self.index[&peer];
                            let before = queue.len();
                            queue.retain(|(f, t, _, c)| !(*f == i && *t == j && *c == Some(id)));
                            self.withdrawn += before - queue.len();
                        }
                        GossipOutput::Deliver(ev) => self.delivered[i].push(ev),
                        GossipOutput::Penalize { peer, penalty } => {
                            self.penalties.push((i, peer, penalty))
                        }
                        GossipOutput::Connect { .. } => {}
                    }
                }
            }
            let Some((from, to, bytes, _)) = queue.pop_front() else {
                return;
            };
            let id = self.ids[from];
            self.routers[to].handle_rpc(id, &bytes, self.now);
        }
    }

    fn heartbeats(&mut self, n: usize) {
        for _ in 0..n {
            self.now += Duration::from_millis(200);
            for i in 0..self.routers.len() {
                if !self.down.contains(&i) {
                    self.routers[i].heartbeat(self.now);
                }
            }
            self.run();
        }
    }

    fn subscribe_all(&mut self, topic: &str) {
        for i in 0..self.routers.len() {
            self.routers[i].subscribe(topic, self.now);
        }
        self.run();
        self.heartbeats(5);
    }
}

#[test]
fn every_subscriber_gets_every_message_exactly_once_and_meshes_stay_in_bounds() {
    let mut net = Net::new(64, 5, GossipConfig::default(), None);
    net.subscribe_all("blocks");
    // Meshes settle within one prune backoff: a node trimmed below d_lo by a full
    // neighbour grafts others at once, or that neighbour again after the backoff.
    let c = GossipConfig::default();
    net.heartbeats((c.prune_backoff.as_millis() / c.heartbeat.as_millis()) as usize + 1);
    // Between heartbeats a mesh may take grafts past d_hi, never past d_max.
    for i in 0..64 {
        let m = net.routers[i].mesh("blocks").len();
        assert!(
            (c.d_lo..=c.d_max).contains(&m) || m == net.routers[i].peers.len(),
            "node {i} mesh {m}"
        );
    }
    for k in 0..50u32 {
        let origin = (k as usize * 7) % 64;
        let now = net.now;
        net.routers[origin]
            .publish("blocks", k.to_le_bytes().to_vec(), now)
            .unwrap();
        net.run();
        if k % 5 == 0 {
            net.heartbeats(1);
        }
    }
    net.heartbeats(3);
    for (i, got) in net.delivered.iter().enumerate() {
        let mut ids: Vec<MessageId> = got.iter().map(|e| e.id).collect();
        let published_here = (0..50).filter(|k| (k * 7) % 64 == i).count();
        assert_eq!(ids.len(), 50 - published_here, "node {i} deliveries");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50 - published_here, "node {i} got a duplicate");
    }
    assert!(net.penalties.is_empty(), "{:?}", net.penalties.first());
}

/// Duplicates received over 160 messages, and deliveries, on one topology.
fn duplicates_with(config: GossipConfig) -> (u64, usize) {
    let mut net = Net::new(64, 5, config, None);
    net.subscribe_all("votes");
    for k in 0..160u32 {
        let origin = (k as usize * 13) % 64;
        let now = net.now;
        net.routers[origin]
            .publish("votes", k.to_le_bytes().to_vec(), now)
            .unwrap();
        net.run();
        net.heartbeats(1);
    }
    net.heartbeats(5);
    let dups = net
        .routers
        .iter()
        .map(|r| r.metrics()["votes"].duplicates)
        .sum();
    let delivered = net.delivered.iter().map(|d| d.len()).sum();
    (dups, delivered)
}

#[test]
fn choking_cuts_duplicates_without_losing_messages() {
    let eager_only = GossipConfig {
        d_eager_min: usize::MAX,
        ..GossipConfig::default()
    };
    let (eager_dups, eager_delivered) = duplicates_with(eager_only);
    let (dups, delivered) = duplicates_with(GossipConfig::default());
    assert_eq!(
        (eager_delivered, delivered),
        (160 * 63, 160 * 63),
        "a message was lost"
    );
    assert!(
        dups * 2 < eager_dups,
        "choking: {dups} duplicates, eager push: {eager_dups}"
    );
}

#[test]
fn invalid_messages_are_not_forwarded_and_their_sender_is_penalized() {
    let validator: Validator = Arc::new(|_, data| {
        if data.starts_with(b"bad") {
            Validation::Reject
        } else {
            Validation::Accept
        }
    });
    let mut net = Net::new(20, 4, GossipConfig::default(), Some(validator));
    net.subscribe_all("tx");
    let now = net.now;
    net.routers[3]
        .publish("tx", b"bad tx".to_vec(), now)
        .unwrap();
    net.run();
    // Nobody delivered it, and only the origin's direct peers saw it.
    assert!(net.delivered.iter().all(|d| d.is_empty()));
    let origin = net.ids[3];
    let penalized: HashSet<usize> = net
        .penalties
        .iter()
        .filter(|(_, p, _)| *p == origin)
        .map(|(i, _, _)| *i)
        .collect();
    let neighbours: HashSet<usize> = net
        .links
        .iter()
        .filter_map(|&(a, b)| {
            if a == 3 {
                Some(b)
            } else if b == 3 {
                Some(a)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(penalized, neighbours);
    for i in &neighbours {
        assert!(net.routers[*i].score(&origin) < 0.0);
    }
    // A good message still flows.
    let now = net.now;
    net.routers[5]
        .publish("tx", b"good tx".to_vec(), now)
        .unwrap();
    net.run();
    assert_eq!(net.delivered.iter().map(|d| d.len()).sum::<usize>(), 19);
}

#[test]
fn forged_signatures_are_dropped_without_poisoning_the_id() {
    let mut net = Net::new(10, 3, GossipConfig::default(), None);
    net.subscribe_all("t");
    let genuine = message::build(Some(&key(4)), "t", 1, 0, b"real".to_vec());
    let mut forged = genuine.clone();
    forged.data = b"fake".to_vec();
    forged.hops = 1;
    let rpc = wire::GossipRpc {
        publish: vec![forged],
        ..Default::default()
    }
    .encode_to_vec();
    let liar = net.ids[1];
    let now = net.now;
    net.routers[0].handle_rpc(liar, &rpc, now);
    net.run();
    assert!(net.delivered[0].is_empty());
    assert!(net
        .penalties
        .iter()
        .any(|(i, p, r)| *i == 0 && *p == liar && *r == Penalty::BadSignature));
    // The genuine message with the same id still gets through.
    let rpc = wire::GossipRpc {
        publish: vec![genuine],
        ..Default::default()
    }
    .encode_to_vec();
    let from = net.ids[2];
    net.routers[0].handle_rpc(from, &rpc, now);
    assert_eq!(
        net.delivered[0].len(),
        0,
        "0 is not connected to 2 unless linked"
    );
}

#[test]
fn messages_reach_every_live_node_after_a_quarter_dies() {
    let mut net = Net::new(64, 5, GossipConfig::default(), None);
    net.subscribe_all("blocks");
    for i in (0..64).step_by(4) {
        net.down.insert(i);
        for j in 0..64 {
            let id = net.ids[i];
            net.routers[j].remove_peer(&id);
        }
    }
    net.heartbeats(3);
    for k in 0..20u32 {
        let origin = 1 + (k as usize * 4) % 60;
        let now = net.now;
        net.routers[origin]
            .publish("blocks", k.to_le_bytes().to_vec(), now)
            .unwrap();
        net.run();
        net.heartbeats(1);
    }
    net.heartbeats(5);
    for i in (0..64).filter(|i| !net.down.contains(i)) {
        let from_others = (0..20).filter(|k| 1 + (k * 4) % 60 != i).count();
        let got: HashSet<MessageId> = net.delivered[i].iter().map(|e| e.id).collect();
        assert_eq!(got.len(), from_others, "node {i}");
    }
}

#[test]
fn large_messages_stream_through_the_net_intact_and_leave_nothing_assembling() {
    let mut net = Net::new(40, 5, GossipConfig::default(), None);
    net.subscribe_all("blocks");
    let mut sent = Vec::new();
    for k in 0..6usize {
        let data: Vec<u8> = (0..300_000 + k * 1000)
            .map(|i| (i * 31 + k) as u8)
            .collect();
        let now = net.now;
        let origin = k * 7 % 40;
        net.routers[origin]
            .publish("blocks", data.clone(), now)
            .unwrap();
        sent.push((origin, data));
        net.run();
    }
    net.heartbeats(3);
    for (i, got) in net.delivered.iter().enumerate() {
        let want: Vec<&Vec<u8>> = sent
            .iter()
            .filter(|(o, _)| *o != i)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(got.len(), want.len(), "node {i} deliveries");
        for d in want {
            assert!(
                got.iter().any(|e| &e.data == d),
                "node {i} got every payload intact"
            );
        }
        assert_eq!(net.routers[i].assembling.bytes(), 0, "node {i} assembling");
    }
    assert!(net.penalties.is_empty(), "{:?}", net.penalties.first());
}

/// Every delivery so far that waits for a verdict gets `verdict`; returns how many.
fn decide(
    net: &mut Net,
    verdict: impl Fn(&[u8]) -> Validation,
    done: &mut HashSet<(usize, MessageId)>,
) -> usize {
    let mut n = 0;
    for i in 0..net.routers.len() {
        let waiting: Vec<(MessageId, Validation)> = net.delivered[i]
            .iter()
            .filter(|e| e.needs_verdict && !done.contains(&(i, e.id)))
            .map(|e| (e.id, verdict(&e.data)))
            .collect();
        for (id, v) in waiting {
            done.insert((i, id));
            let now = net.now;
            assert!(net.routers[i].report_validation(id, v, now));
            n += 1;
        }
    }
    net.run();
    n
}

#[test]
fn deferred_messages_wait_for_the_verdict_before_going_on() {
    let config = GossipConfig {
        deferred_validation: true,
        ..GossipConfig::default()
    };
    let mut net = Net::new(20, 4, config.clone(), None);
    net.subscribe_all("tx");
    let now = net.now;
    net.routers[3].publish("tx", b"tx 1".to_vec(), now).unwrap();
    net.run();
    // Delivered (for a verdict) by the origin's peers only: nothing went further.
    let first: HashSet<usize> = (0..20).filter(|i| !net.delivered[*i].is_empty()).collect();
    let neighbours: HashSet<usize> = net
        .links
        .iter()
        .filter_map(|&(a, b)| (a == 3).then_some(b).or((b == 3).then_some(a)))
        .collect();
    assert!(
        first.is_subset(&neighbours) && !first.is_empty(),
        "{first:?}"
    );
    assert!(net.delivered.iter().flatten().all(|e| e.needs_verdict));
    let mut done = HashSet::new();
    while decide(&mut net, |_| Validation::Accept, &mut done) > 0 {}
    for i in (0..20).filter(|i| *i != 3) {
        assert_eq!(net.delivered[i].len(), 1, "node {i}: exactly once");
    }
    // Rejected: not forwarded, its sender pays.
    let now = net.now;
    net.routers[5].publish("tx", b"bad".to_vec(), now).unwrap();
    net.run();
    while decide(&mut net, |_| Validation::Reject, &mut done) > 0 {}
    let bad: Vec<&GossipEvent> = net
        .delivered
        .iter()
        .flatten()
        .filter(|e| e.data == b"bad")
        .collect();
    assert!(
        bad.iter().all(|e| e.from == net.ids[5]),
        "forwarded before its verdict"
    );
    assert!(net
        .penalties
        .iter()
        .any(|(_, p, why)| *p == net.ids[5] && *why == Penalty::InvalidMessage));
    // No verdict: dropped at the timeout, and a late one changes nothing.
    let now = net.now;
    let late = net.routers[7].publish("tx", b"tx 2".to_vec(), now).unwrap();
    net.run();
    let waiting: Vec<usize> = (0..20)
        .filter(|i| net.routers[*i].awaiting_verdict() > 0)
        .collect();
    assert!(!waiting.is_empty());
    net.heartbeats((config.deferred_timeout.as_millis() / 200) as usize + 6);
    for &i in &waiting {
        let r = &mut net.routers[i];
        assert_eq!(r.awaiting_verdict(), 0);
        assert_eq!(r.metrics()["tx"].verdicts_timed_out, 1);
        let now = net.now;
        assert!(!r.report_validation(late, Validation::Accept, now));
    }
}

#[test]
fn deferred_messages_beyond_the_bound_are_dropped_unseen() {
    let config = GossipConfig {
        deferred_validation: true,
        max_deferred: 1,
        ..GossipConfig::default()
    };
    let mut net = Net::new(2, 0, config, None);
    net.links.insert((0, 1));
    net.connect(0, 1);
    net.subscribe_all("tx");
    let now = net.now;
    net.routers[0].publish("tx", b"a".to_vec(), now).unwrap();
    let second = net.routers[0].publish("tx", b"b".to_vec(), now).unwrap();
    net.run();
    assert_eq!(net.delivered[1].len(), 1);
    assert_eq!(net.routers[1].metrics()["tx"].verdicts_no_room, 1);
    // Not marked seen, so a later copy may still get in once there is room.
    let first = net.delivered[1][0].id;
    let now = net.now;
    assert!(net.routers[1].report_validation(first, Validation::Accept, now));
    assert!(!net.routers[1].seen.contains(&second));
}
