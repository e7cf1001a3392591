//! One router facing a hostile peer: each test is an attack from the hostile-peers
//! review, with the bound it must now respect.

use super::*;

pub(super) const T: &str = "t";

pub(super) fn key(i: u64) -> Arc<Keypair> {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i + 1000).to_le_bytes());
    Arc::new(Keypair::from_seed(seed))
}

pub(super) struct Harness {
    pub(super) r: Router,
    pub(super) now: Instant,
    pub(super) out: Vec<GossipOutput>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with(GossipConfig::default(), None)
    }

    /// A router with `config` and `validator`, subscribed to `T`.
    pub(super) fn with(config: GossipConfig, validator: Option<Validator>) -> Self {
        let now = Instant::now();
        let mut r = Router::new(config, Some(key(0)), validator, Rng::new(1), now);
        r.subscribe(T, now);
        let mut h = Harness {
            r,
            now,
            out: Vec::new(),
        };
        h.drain();
        h
    }

    /// Adds peer `i`, subscribed to `topics` (so in our mesh of those).
    pub(super) fn peer(&mut self, i: u64, topics: &[&str]) -> PeerId {
        let id = key(i).peer_id();
        self.r
            .add_peer(id, IpAddr::from([10, 0, i as u8, 1]), self.now);
        let rpc = wire::GossipRpc {
            subscribe: topics.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        self.rpc(id, &rpc);
        id
    }

    pub(super) fn rpc(&mut self, from: PeerId, rpc: &wire::GossipRpc) {
        self.raw(from, &rpc.encode_to_vec());
    }

    /// `from` asks for `id` with an IWANT.
    pub(super) fn iwant(&mut self, from: PeerId, id: &MessageId) {
        let rpc = wire::GossipRpc {
            iwant: vec![wire::IWant {
                ids: vec![id.to_vec()],
            }],
            ..Default::default()
        };
        self.rpc(from, &rpc);
    }

    /// `from` offers `ids` with an IHAVE.
    pub(super) fn ihave(&mut self, from: PeerId, ids: &[MessageId]) {
        let rpc = wire::GossipRpc {
            ihave: vec![wire::IHave {
                topic: T.into(),
                ids: ids.iter().map(|i| i.to_vec()).collect(),
            }],
            ..Default::default()
        };
        self.rpc(from, &rpc);
    }

    /// Whether `out` holds an IWANT for `id` to `peer`.
    pub(super) fn asked(out: &[GossipOutput], peer: PeerId, id: &MessageId) -> bool {
        Self::sent_to(out, peer).iter().any(|r| {
            r.iwant
                .iter()
                .any(|w| w.ids.iter().any(|x| x.as_slice() == id))
        })
    }

    pub(super) fn raw(&mut self, from: PeerId, bytes: &[u8]) {
        self.r.handle_rpc(from, bytes, self.now);
        self.drain();
    }

    pub(super) fn drain(&mut self) {
        while let Some(o) = self.r.poll_output() {
            self.out.push(o);
        }
    }

    pub(super) fn take(&mut self) -> Vec<GossipOutput> {
        std::mem::take(&mut self.out)
    }

    pub(super) fn sent_to(out: &[GossipOutput], peer: PeerId) -> Vec<wire::GossipRpc> {
        out.iter()
            .filter_map(|o| match o {
                GossipOutput::Send { peer: p, bytes, .. } if *p == peer => {
                    wire::GossipRpc::decode(bytes.as_slice()).ok()
                }
                _ => None,
            })
            .collect()
    }

    pub(super) fn penalties(out: &[GossipOutput], peer: PeerId) -> Vec<Penalty> {
        out.iter()
            .filter_map(|o| match o {
                GossipOutput::Penalize { peer: p, penalty } if *p == peer => Some(*penalty),
                _ => None,
            })
            .collect()
    }
}

fn signed(origin: u64, seqno: u64, topic: &str, len: usize) -> wire::GossipMessage {
    let mut m = message::build(Some(&key(origin)), topic, seqno, 0, vec![seqno as u8; len]);
    m.hops = 1;
    m
}

#[test]
fn millions_of_empty_grafts_cost_a_scan_and_a_penalty_not_millions_of_prunes() {
    let mut h = Harness::new();
    let m = h.peer(1, &[]);
    h.take();
    let mut bytes = Vec::with_capacity(4 << 20);
    while bytes.len() + 2 <= (4 << 20) {
        bytes.extend_from_slice(&[6 << 3 | 2, 0]);
    }
    h.raw(m, &bytes);
    let out = h.take();
    assert_eq!(
        Harness::penalties(&out, m),
        vec![Penalty::OverLimits(rpc::RpcShapeError::TooManyEntries)]
    );
    assert!(Harness::sent_to(&out, m).is_empty(), "no PRUNE answers");
    // Within the limit, GRAFTs for topics we do not serve get one PRUNE each, and
    // those go out packed within the limits.
    let grafts = wire::GossipRpc {
        graft: (0..64)
            .map(|i| wire::Graft {
                topic: format!("x{i}"),
            })
            .collect(),
        ..Default::default()
    };
    h.rpc(m, &grafts);
    let out = h.take();
    let prunes: usize = Harness::sent_to(&out, m)
        .iter()
        .map(|r| r.prune.len())
        .sum();
    assert_eq!(prunes, 64);
}

#[test]
fn forged_publishes_cost_one_signature_check_per_rpc() {
    let mut h = Harness::new();
    let m = h.peer(1, &[T]);
    h.take();
    let mut forged: Vec<wire::GossipMessage> = (0..500)
        .map(|i| {
            let mut msg = signed(7, i + 1, T, 16);
            msg.data[0] ^= 0xff; // the signature no longer matches
            msg
        })
        .collect();
    let genuine = signed(7, 10_000, T, 16);
    forged.push(genuine.clone());
    h.rpc(
        m,
        &wire::GossipRpc {
            publish: forged,
            ..Default::default()
        },
    );
    let out = h.take();
    assert_eq!(
        h.r.signature_checks(),
        1,
        "the first bad signature ends the RPC"
    );
    assert_eq!(Harness::penalties(&out, m), vec![Penalty::BadSignature]);
    assert!(
        !out.iter().any(|o| matches!(o, GossipOutput::Deliver(_))),
        "nothing after the lie is believed"
    );
    // Messages on a topic we do not subscribe to cost no check at all.
    let other: Vec<_> = (0..500).map(|i| signed(7, i + 1, "other", 16)).collect();
    h.rpc(
        m,
        &wire::GossipRpc {
            publish: other,
            ..Default::default()
        },
    );
    assert_eq!(h.r.signature_checks(), 1);
}

#[test]
fn signature_checks_per_peer_are_budgeted() {
    let mut h = Harness::new();
    let m = h.peer(1, &[T]);
    h.take();
    let burst = GossipConfig::default().verify_burst as u64;
    for batch in 0..10u64 {
        let msgs: Vec<_> = (0..500)
            .map(|i| signed(7, batch * 500 + i + 1, T, 8))
            .collect();
        h.rpc(
            m,
            &wire::GossipRpc {
                publish: msgs,
                ..Default::default()
            },
        );
    }
    assert_eq!(
        h.r.signature_checks(),
        burst,
        "5000 offered, the burst checked"
    );
    assert_eq!(h.r.metrics()[T].over_budget, 5000 - burst);
    // The budget refills with time.
    h.now += Duration::from_secs(1);
    h.rpc(
        m,
        &wire::GossipRpc {
            publish: vec![signed(7, 99_999, T, 8)],
            ..Default::default()
        },
    );
    assert_eq!(h.r.signature_checks(), burst + 1);
}

#[test]
fn peer_exchange_is_read_only_from_a_mesh_peer_and_forgery_costs() {
    let mut h = Harness::new();
    let outsider = h.peer(1, &[]);
    let mesh = h.peer(2, &[T]);
    h.take();
    let real = PeerRecord::sign(&key(50), &["10.5.0.1:1".parse().unwrap()], 3).to_wire();
    let mut forged = real.clone();
    forged.seq = 4; // no longer what was signed
    let prune = |peers: Vec<wire::PeerRecord>| wire::GossipRpc {
        prune: (0..8)
            .map(|_| wire::Prune {
                topic: T.into(),
                peers: peers.clone(),
                backoff_secs: 10,
            })
            .collect(),
        ..Default::default()
    };
    // Not in our mesh: nothing is verified.
    h.rpc(outsider, &prune(vec![real.clone(); 8]));
    assert_eq!(h.r.signature_checks(), 0);
    // A mesh peer's forgery: one check, a penalty, no dial.
    h.rpc(mesh, &prune(vec![forged; 8]));
    let out = h.take();
    assert_eq!(h.r.signature_checks(), 1);
    assert_eq!(
        Harness::penalties(&out, mesh),
        vec![Penalty::ForgedPeerExchange]
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, GossipOutput::Connect { .. })));
}

fn first_fragment(msg: &wire::GossipMessage) -> Vec<u8> {
    let rpc = wire::GossipRpc {
        publish: vec![msg.clone()],
        ..Default::default()
    }
    .encode_to_vec();
    rpc[..256].to_vec()
}

pub(super) fn idontwants(out: &[GossipOutput], to: PeerId) -> usize {
    Harness::sent_to(out, to)
        .iter()
        .map(|r| r.idontwant.iter().map(|d| d.ids.len()).sum::<usize>())
        .sum()
}

#[test]
fn a_first_fragment_censors_nothing() {
    let mut h = Harness::new();
    let outsider = h.peer(1, &[]);
    let announcer = h.peer(2, &[T]);
    let honest = h.peer(3, &[T]);
    h.take();
    let victim = signed(9, 1, T, 100_000);
    // Someone outside our mesh cannot make us hush the mesh.
    h.r.handle_first_fragment(outsider, &first_fragment(&victim), h.now);
    h.drain();
    assert_eq!(idontwants(&h.take(), honest), 0);
    // A mesh peer can, for a bounded number of messages ...
    for seq in 1..=20 {
        let m = signed(9, seq, T, 100_000);
        h.r.handle_first_fragment(announcer, &first_fragment(&m), h.now);
    }
    h.drain();
    let max = GossipConfig::default().max_announced_per_peer;
    assert_eq!(idontwants(&h.take(), honest), max);
    // ... and only until the deadline: then the message is fetched from another mesh
    // peer, and the announcer pays.
    h.now += GossipConfig::default().announce_timeout + Duration::from_millis(1);
    h.r.heartbeat(h.now);
    h.drain();
    let out = h.take();
    let wanted: usize = Harness::sent_to(&out, honest)
        .iter()
        .map(|r| r.iwant.iter().map(|w| w.ids.len()).sum::<usize>())
        .sum();
    assert_eq!(wanted, max);
    assert_eq!(
        Harness::penalties(&out, announcer),
        vec![Penalty::BrokenAnnouncement; max]
    );
    // The honest copy then arrives from the other peer and is delivered.
    h.rpc(
        honest,
        &wire::GossipRpc {
            publish: vec![victim],
            ..Default::default()
        },
    );
    assert!(h
        .take()
        .iter()
        .any(|o| matches!(o, GossipOutput::Deliver(ev) if ev.from == honest)));
}

#[test]
fn an_iwant_for_many_large_messages_is_answered_in_rpcs_that_fit() {
    let mut h = Harness::new();
    let asker = h.peer(1, &[T]);
    let limit = GossipConfig::default().rpc_limits.max_bytes;
    let mut ids = Vec::new();
    for seq in 1..=3 {
        let id =
            h.r.publish_message(signed(0, seq, T, 3 << 20), h.now)
                .unwrap();
        ids.push(id.to_vec());
    }
    h.drain();
    h.take();
    h.rpc(
        asker,
        &wire::GossipRpc {
            iwant: vec![wire::IWant { ids }],
            ..Default::default()
        },
    );
    let out = h.take();
    let rpcs: Vec<usize> = out
        .iter()
        .filter_map(|o| match o {
            GossipOutput::Send { peer, bytes, .. } if *peer == asker => Some(bytes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(rpcs.len(), 3, "one RPC per 3 MiB message");
    assert!(rpcs.iter().all(|&n| n <= limit));
}
