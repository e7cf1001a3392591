//! Topic-based gossip broadcast in the GossipSub class. Sans-IO.
//!
//! Each subscribed topic keeps a mesh of about D peers, maintained by GRAFT/PRUNE at
//! every heartbeat. New messages are pushed in full along the mesh; a mesh link that
//! only ever brings duplicates is *choked* (Plumtree-style): its sender then offers
//! IHAVE instead of the full message, and the link is unchoked as soon as it proves
//! faster (its IHAVE is the first news of a message). IHAVE/IWANT gossip to peers
//! outside the mesh repairs what pushes missed; IDONTWANT (as soon as the first
//! fragment of a large message arrives) stops copies already in flight. Messages are
//! signed by their origin and checked once per id, then by the application's
//! validator; invalid ones are never forwarded and cost their sender score.

mod announce;
pub mod cache;
pub mod config;
pub mod message;
pub mod penalty;
pub mod rpc;
pub mod score;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use crate::identity::{Keypair, PeerId};
use crate::kad::record::PeerRecord;
use crate::kad::table::subnet;
use crate::rate::TokenBucket;
use crate::rng::Rng;
use crate::wire;
use announce::Announcements;
use cache::{MessageCache, SeenCache};
pub use config::GossipConfig;
pub use message::{MessageId, Validation};
pub use penalty::Penalty;
pub use rpc::RpcLimits;
use score::{PeerScore, ScoreWeights};

/// The channel gossip RPCs ride on.
pub const GOSSIP_CHANNEL: u32 = 0xffff_0002;
/// Longest topic name a peer may subscribe to.
pub const MAX_TOPIC_LEN: usize = 256;
/// Ids remembered per peer from its IDONTWANTs.
const MAX_DONTWANT: usize = 1024;
/// Heartbeats an IWANT may take before the promise counts as broken.
const PROMISE_HEARTBEATS: u32 = 3;

/// The application's verdict on a message: `(topic, data) -> Validation`.
pub type Validator = Arc<dyn Fn(&str, &[u8]) -> Validation + Send + Sync>;

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipEvent {
    /// Its topic.
    pub topic: String,
    /// Its id.
    pub id: MessageId,
    /// Who published it (`None` in anonymous mode).
    pub origin: Option<PeerId>,
    /// The peer it came from.
    pub from: PeerId,
    /// Hops from the origin (1 = straight from the origin).
    pub hops: u32,
    /// The payload.
    pub data: Vec<u8>,
}

/// What the router asks the node to do.
#[derive(Debug, Clone)]
pub enum GossipOutput {
    /// Send an encoded `GossipRpc` on the gossip channel; drop it if not sent by `deadline`.
    Send {
        /// To whom.
        peer: PeerId,
        /// The bytes.
        bytes: Vec<u8>,
        /// Send-by time.
        deadline: Instant,
    },
    /// Hand a message to the application.
    Deliver(GossipEvent),
    /// A peer misbehaved.
    Penalize {
        /// Who.
        peer: PeerId,
        /// How.
        penalty: Penalty,
    },
    /// Peers offered in a PRUNE by `from` while our mesh is short: worth connecting
    /// to, instead of `from` if no slot is free.
    Connect {
        /// Who pruned us.
        from: PeerId,
        /// Whom it offered.
        records: Vec<PeerRecord>,
    },
}

/// Why a publish failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// Larger than the maximum message size.
    TooLarge,
    /// Nobody to send it to.
    NoPeers,
}

/// Counters of one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMetrics {
    /// Messages delivered to the application.
    pub deliveries: u64,
    /// Full copies received beyond the first.
    pub duplicates: u64,
    /// Deliveries by hop count (index 15 = 15 or more).
    pub hops: [u64; 16],
    /// Which peers delivered first, how often (at most 64 peers tracked).
    pub first_sources: HashMap<PeerId, u64>,
    /// Messages rejected by validation.
    pub rejected: u64,
    /// Messages published here.
    pub published: u64,
    /// Mesh size now.
    pub mesh: usize,
    /// Mesh links choked (lazy) now.
    pub choked: usize,
    /// New messages skipped because their sender's signature-check budget was spent
    /// (they can still arrive from another peer, or by IWANT).
    pub over_budget: u64,
}

#[derive(Debug, Default)]
struct Link {
    /// The peer asked us to send IHAVE instead of full messages.
    choked_by_peer: bool,
    /// We asked the peer to.
    we_choked: bool,
    first: u32,
    dups: u32,
    /// We told the peer IDONTWANT in this window: its silence is our doing.
    hushed: bool,
}

#[derive(Debug, Default)]
struct Topic {
    subscribed: bool,
    mesh: HashMap<PeerId, Link>,
    backoff: HashMap<PeerId, Instant>,
    metrics: TopicMetrics,
}

#[derive(Debug)]
struct Peer {
    topics: HashSet<String>,
    score: PeerScore,
    subnet: [u8; 6],
    dontwant: HashSet<MessageId>,
    dontwant_order: VecDeque<MessageId>,
    ihaves: usize,
    /// Signature checks this peer may still cause.
    verify_budget: TokenBucket,
}

/// The gossip state of one node.
pub struct Router {
    config: GossipConfig,
    weights: ScoreWeights,
    key: Option<Arc<Keypair>>,
    validator: Option<Validator>,
    topics: HashMap<String, Topic>,
    peers: HashMap<PeerId, Peer>,
    seen: SeenCache,
    mcache: MessageCache,
    /// Ids we asked for with IWANT: from whom, and by when.
    promises: HashMap<MessageId, (PeerId, Instant)>,
    /// Ids announced by the first fragment of a message still arriving.
    incoming: Announcements,
    /// IWANTs waiting for their delay: id -> (peer, send at).
    iwant_due: HashMap<MessageId, (PeerId, Instant)>,
    pending: HashMap<PeerId, wire::GossipRpc>,
    outputs: VecDeque<GossipOutput>,
    px: Vec<PeerRecord>,
    rng: Rng,
    seqno: u64,
    next_heartbeat: Instant,
    heartbeats: u64,
    /// Signature checks done (messages and peer-exchange records).
    signature_checks: u64,
}

impl Router {
    /// A router signing with `key` (when `config.sign`), checking with `validator`.
    pub fn new(
        config: GossipConfig,
        key: Option<Arc<Keypair>>,
        validator: Option<Validator>,
        mut rng: Rng,
        now: Instant,
    ) -> Self {
        // Sequence numbers start at a random point, so a restarted node's ids differ.
        let seqno = rng.next_u64() >> 1;
        Router {
            seen: SeenCache::new(config.seen_ttl, config.seen_max),
            incoming: Announcements::default(),
            mcache: MessageCache::new(
                config.history_length,
                config.history_gossip,
                config.mcache_max_bytes,
            ),
            next_heartbeat: now + config.heartbeat,
            seqno,
            config,
            weights: ScoreWeights::default(),
            key,
            validator,
            topics: HashMap::new(),
            peers: HashMap::new(),
            promises: HashMap::new(),
            iwant_due: HashMap::new(),
            pending: HashMap::new(),
            outputs: VecDeque::new(),
            px: Vec::new(),
            rng,
            heartbeats: 0,
            signature_checks: 0,
        }
    }

    // ------------------------------------------------------------ peers and topics

    /// A peer connected (from `ip`): tell it our subscriptions.
    pub fn add_peer(&mut self, peer: PeerId, ip: IpAddr, now: Instant) {
        self.peers.entry(peer).or_insert_with(|| Peer {
            topics: HashSet::new(),
            score: PeerScore::default(),
            subnet: subnet(ip),
            dontwant: HashSet::new(),
            dontwant_order: VecDeque::new(),
            ihaves: 0,
            verify_budget: TokenBucket::new(
                self.config.verify_per_sec,
                self.config.verify_burst,
                now,
            ),
        });
        let subs: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, t)| t.subscribed)
            .map(|(n, _)| n.clone())
            .collect();
        if !subs.is_empty() {
            self.rpc(peer).subscribe.extend(subs);
        }
        self.flush(now);
    }

    /// A peer disconnected.
    pub fn remove_peer(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
        self.incoming.forget_peer(peer);
        self.pending.remove(peer);
        for t in self.topics.values_mut() {
            t.mesh.remove(peer);
        }
        self.promises.retain(|_, (p, _)| p != peer);
    }

    /// Subscribes to `topic`, telling every peer and grafting a mesh at once.
    pub fn subscribe(&mut self, topic: &str, now: Instant) {
        let t = self.topics.entry(topic.to_string()).or_default();
        if t.subscribed {
            return;
        }
        t.subscribed = true;
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.rpc(p).subscribe.push(topic.to_string());
        }
        self.maintain_mesh(topic, now);
        self.flush(now);
    }

    /// Leaves `topic`, pruning its mesh.
    pub fn unsubscribe(&mut self, topic: &str, now: Instant) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        t.subscribed = false;
        let mesh: Vec<PeerId> = t.mesh.drain().map(|(p, _)| p).collect();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.rpc(p).unsubscribe.push(topic.to_string());
        }
        for p in mesh {
            self.prune(topic, p, now);
        }
        self.flush(now);
    }

    /// Topics subscribed.
    pub fn subscriptions(&self) -> Vec<String> {
        self.topics
            .iter()
            .filter(|(_, t)| t.subscribed)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Mesh peers of `topic`.
    pub fn mesh(&self, topic: &str) -> Vec<PeerId> {
        self.topics
            .get(topic)
            .map(|t| t.mesh.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Counters of every topic.
    pub fn metrics(&self) -> HashMap<String, TopicMetrics> {
        self.topics
            .iter()
            .map(|(n, t)| {
                let mut m = t.metrics.clone();
                m.mesh = t.mesh.len();
                m.choked = t.mesh.values().filter(|l| l.we_choked).count();
                (n.clone(), m)
            })
            .collect()
    }

    /// The gossip score of `peer`.
    pub fn score(&self, peer: &PeerId) -> f64 {
        self.peers
            .get(peer)
            .map_or(0.0, |p| p.score.value(&self.weights))
    }

    /// Signature checks done so far (message envelopes and peer-exchange records).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks
    }

    /// Records offered to pruned peers (peer exchange), e.g. from the DHT table.
    pub fn set_peer_exchange(&mut self, records: Vec<PeerRecord>) {
        self.px = records;
    }

    // ------------------------------------------------------------ publishing

    /// Publishes `data` on `topic` to every subscribed peer (flood publish).
    pub fn publish(
        &mut self,
        topic: &str,
        data: Vec<u8>,
        now: Instant,
    ) -> Result<MessageId, PublishError> {
        if data.len() > self.config.max_message_size {
            return Err(PublishError::TooLarge);
        }
        self.seqno = self.seqno.wrapping_add(1);
        let key = if self.config.sign {
            self.key.as_deref()
        } else {
            None
        };
        let mut msg = message::build(key, topic, self.seqno, data);
        msg.hops = 1;
        self.publish_message(msg, now)
    }

    /// Publishes a message built (and signed) elsewhere, e.g. on the caller's thread.
    pub fn publish_message(
        &mut self,
        msg: wire::GossipMessage,
        now: Instant,
    ) -> Result<MessageId, PublishError> {
        let id = message::message_id(&msg);
        let topic = msg.topic.clone();
        let threshold = self.config.publish_threshold;
        let targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.topics.contains(&topic) && p.score.value(&self.weights) >= threshold)
            .map(|(id, _)| *id)
            .collect();
        self.seen.insert(id, now);
        self.mcache.put(id, msg.clone());
        self.topics.entry(topic).or_default().metrics.published += 1;
        if targets.is_empty() {
            return Err(PublishError::NoPeers);
        }
        for p in targets {
            self.rpc(p).publish.push(msg.clone());
        }
        self.flush(now);
        Ok(id)
    }

    // ------------------------------------------------------------ receiving

    /// The first fragment of a large gossip RPC from `from` arrived: if it carries a
    /// message we do not have, tell the mesh not to send us copies. Only a mesh peer
    /// of a subscribed topic (the message's, when the fragment shows it) is believed,
    /// for a bounded number of messages at a time and until a deadline: a message
    /// that does not complete by then is fetched elsewhere and costs the announcer.
    pub fn handle_first_fragment(&mut self, from: PeerId, prefix: &[u8], now: Instant) {
        if !self.config.idontwant {
            return;
        }
        let Some((id, topic)) = message::peek_first(prefix) else {
            return;
        };
        if self.seen.contains(&id) || self.incoming.contains(&id) {
            return;
        }
        let in_mesh = |t: &Topic| t.subscribed && t.mesh.contains_key(&from);
        let mesh_topics: Vec<String> = match &topic {
            Some(name) => self
                .topics
                .get(name)
                .filter(|t| in_mesh(t))
                .map(|_| vec![name.clone()])
                .unwrap_or_default(),
            None => self
                .topics
                .iter()
                .filter(|(_, t)| in_mesh(t))
                .map(|(n, _)| n.clone())
                .collect(),
        };
        if mesh_topics.is_empty() {
            return;
        }
        let deadline = now + self.config.announce_timeout;
        let max = self.config.max_announced_per_peer;
        if !self
            .incoming
            .announce(id, from, mesh_topics.clone(), deadline, max)
        {
            return;
        }
        let mut others: Vec<PeerId> = Vec::new();
        for name in &mesh_topics {
            if let Some(t) = self.topics.get_mut(name) {
                for (p, l) in t.mesh.iter_mut().filter(|(p, _)| **p != from) {
                    l.hushed = true;
                    if !others.contains(p) {
                        others.push(*p);
                    }
                }
            }
        }
        others.sort();
        for p in others {
            self.rpc(p).idontwant.push(wire::IDontWant {
                ids: vec![id.to_vec()],
            });
        }
        self.flush(now);
    }

    /// Announcements whose message did not complete in time: penalize the announcer
    /// and ask other mesh peers for the message.
    fn expire_announcements(&mut self, now: Instant) {
        let deadline = now + self.config.heartbeat * PROMISE_HEARTBEATS;
        for (id, a) in self.incoming.expire(now) {
            if self.seen.contains(&id) {
                continue;
            }
            self.penalize(a.from, Penalty::BrokenAnnouncement);
            let mut holders: Vec<PeerId> = a
                .topics
                .iter()
                .filter_map(|t| self.topics.get(t))
                .flat_map(|t| t.mesh.keys().copied())
                .filter(|p| *p != a.from)
                .collect();
            holders.sort();
            holders.dedup();
            self.rng.shuffle(&mut holders);
            for p in holders.into_iter().take(2) {
                self.promises.insert(id, (p, deadline));
                self.rpc(p).iwant.push(wire::IWant {
                    ids: vec![id.to_vec()],
                });
            }
        }
    }

    /// An RPC from `from`. Its shape is checked on the raw bytes before decoding;
    /// then the cheap checks (graylist, subscription, seen cache, budget) come before
    /// any signature check, and the first bad signature ends the RPC.
    pub fn handle_rpc(&mut self, from: PeerId, bytes: &[u8], now: Instant) {
        if !self.peers.contains_key(&from) {
            return;
        }
        if self.score(&from) < self.config.graylist_threshold {
            return;
        }
        if let Err(e) = rpc::check_shape(bytes, &self.config.rpc_limits) {
            return self.penalize(from, Penalty::OverLimits(e));
        }
        let Ok(rpc) = wire::GossipRpc::decode(bytes) else {
            return self.penalize(from, Penalty::Undecodable);
        };
        self.handle_subscriptions(from, &rpc, now);
        for msg in rpc.publish {
            if self.score(&from) < self.config.graylist_threshold {
                break;
            }
            if !self.handle_message(from, msg, now) {
                break;
            }
        }
        let gossip_ok = self.score(&from) >= self.config.gossip_threshold;
        if gossip_ok {
            for ihave in rpc.ihave {
                self.handle_ihave(from, ihave, now);
            }
            for iwant in rpc.iwant {
                self.handle_iwant(from, iwant);
            }
        }
        for g in rpc.graft {
            self.handle_graft(from, g.topic, now);
        }
        // Peer exchange is read from one PRUNE per RPC at most.
        let mut px_allowed = true;
        for p in rpc.prune {
            self.handle_prune(from, p, &mut px_allowed, now);
        }
        for d in rpc.idontwant {
            self.handle_idontwant(from, d);
        }
        let chokes = rpc.choke.into_iter().map(|c| (c.topic, true));
        for (topic, choked) in chokes.chain(rpc.unchoke.into_iter().map(|u| (u.topic, false))) {
            if let Some(l) = self
                .topics
                .get_mut(&topic)
                .and_then(|t| t.mesh.get_mut(&from))
            {
                l.choked_by_peer = choked;
            }
        }
        self.flush(now);
    }

    fn handle_subscriptions(&mut self, from: PeerId, rpc: &wire::GossipRpc, now: Instant) {
        let max = self.config.max_topics_per_peer;
        let mut too_many = false;
        if let Some(p) = self.peers.get_mut(&from) {
            for t in &rpc.unsubscribe {
                p.topics.remove(t);
            }
            for t in &rpc.subscribe {
                let full = p.topics.len() >= max && !p.topics.contains(t);
                if full || t.len() > MAX_TOPIC_LEN {
                    too_many = true;
                    break;
                }
                p.topics.insert(t.clone());
            }
        }
        for t in &rpc.unsubscribe {
            if let Some(topic) = self.topics.get_mut(t) {
                topic.mesh.remove(&from);
            }
        }
        if too_many {
            self.penalize(from, Penalty::TopicLimits);
        }
        // A new subscriber to a topic whose mesh is short: graft it now, not at the
        // next heartbeat, so a network forms quickly.
        for t in &rpc.subscribe {
            let short = self
                .topics
                .get(t)
                .is_some_and(|x| x.subscribed && x.mesh.len() < self.config.d_lo);
            if short {
                self.maintain_mesh(t, now);
            }
        }
    }

    /// Handles one published message; `false` when the rest of its RPC is to be
    /// dropped (the sender just proved itself a liar).
    fn handle_message(&mut self, from: PeerId, msg: wire::GossipMessage, now: Instant) -> bool {
        if msg.data.len() > self.config.max_message_size {
            self.penalize(from, Penalty::OversizedMessage);
            return false;
        }
        // Not our topic: no work at all (and nothing marked seen on its word).
        if !self.topics.get(&msg.topic).is_some_and(|t| t.subscribed) {
            return true;
        }
        let id = message::message_id(&msg);
        let topic_name = msg.topic.clone();
        if self.seen.contains(&id) {
            let keep = self.config.d_eager_min;
            let mut choke = false;
            if let Some(t) = self.topics.get_mut(&topic_name) {
                t.metrics.duplicates += 1;
                let eager = t.mesh.values().filter(|l| !l.we_choked).count();
                if let Some(l) = t.mesh.get_mut(&from) {
                    l.dups += 1;
                    // Plumtree: a link that brought a copy we already had goes lazy,
                    // as long as enough links stay eager.
                    if !l.we_choked && eager > keep {
                        l.we_choked = true;
                        choke = true;
                    }
                }
            }
            if choke {
                self.rpc(from).choke.push(wire::Choke { topic: topic_name });
            }
            return true;
        }
        let budget = self.peers.get_mut(&from).map(|p| &mut p.verify_budget);
        if !budget.is_some_and(|b| b.try_take(1.0, now)) {
            if let Some(t) = self.topics.get_mut(&topic_name) {
                t.metrics.over_budget += 1;
            }
            return true;
        }
        // The signature is checked once per id: a copy that fails does not mark the id
        // seen, so the genuine message still gets through.
        self.signature_checks += 1;
        let origin = match message::verify(&msg, self.config.sign) {
            Ok(origin) => origin,
            Err(_) => {
                self.penalize(from, Penalty::BadSignature);
                return false;
            }
        };
        let verdict = match &self.validator {
            Some(v) => v(&topic_name, &msg.data),
            None => Validation::Accept,
        };
        self.seen.insert(id, now);
        match verdict {
            Validation::Reject => {
                self.incoming.complete(&id);
                if let Some(t) = self.topics.get_mut(&topic_name) {
                    t.metrics.rejected += 1;
                }
                self.penalize(from, Penalty::InvalidMessage);
                return false;
            }
            Validation::Ignore => {
                self.incoming.complete(&id);
                return true;
            }
            Validation::Accept => {}
        }
        let via_iwant = self.promises.remove(&id).is_some();
        if let Some(p) = self.peers.get_mut(&from) {
            p.score.first_deliveries += 1.0;
        }
        let large = self.config.idontwant && msg.data.len() >= self.config.idontwant_min_size;
        let already_announced = self.incoming.complete(&id);
        let Some(topic) = self.topics.get_mut(&topic_name) else {
            return true;
        };
        let mut unchoke = false;
        if let Some(l) = topic.mesh.get_mut(&from) {
            l.first += 1;
            // A choked link that brought news first (through IWANT) is faster: use it.
            if via_iwant && l.we_choked {
                l.we_choked = false;
                unchoke = true;
            }
        }
        let m = &mut topic.metrics;
        m.deliveries += 1;
        m.hops[(msg.hops as usize).min(15)] += 1;
        if m.first_sources.len() < 64 || m.first_sources.contains_key(&from) {
            *m.first_sources.entry(from).or_default() += 1;
        }
        let mesh: Vec<(PeerId, bool)> = topic
            .mesh
            .iter()
            .map(|(p, l)| (*p, l.choked_by_peer))
            .collect();
        if unchoke {
            self.rpc(from).unchoke.push(wire::Unchoke {
                topic: topic_name.clone(),
            });
        }
        let mut forward = msg.clone();
        forward.hops = msg.hops.saturating_add(1);
        self.mcache.put(id, forward.clone());
        for (p, choked) in mesh {
            if p == from || origin == Some(p) {
                continue;
            }
            let dontwant = self.peers.get(&p).is_some_and(|x| x.dontwant.contains(&id));
            if dontwant {
                continue;
            }
            if large && !already_announced {
                let link = self
                    .topics
                    .get_mut(&topic_name)
                    .and_then(|t| t.mesh.get_mut(&p));
                if let Some(l) = link {
                    l.hushed = true;
                }
                self.rpc(p).idontwant.push(wire::IDontWant {
                    ids: vec![id.to_vec()],
                });
            }
            if choked {
                self.rpc(p).ihave.push(wire::IHave {
                    topic: topic_name.clone(),
                    ids: vec![id.to_vec()],
                });
            } else {
                self.rpc(p).publish.push(forward.clone());
            }
        }
        self.outputs.push_back(GossipOutput::Deliver(GossipEvent {
            topic: topic_name,
            id,
            origin,
            from,
            hops: msg.hops,
            data: msg.data,
        }));
        true
    }

    fn handle_ihave(&mut self, from: PeerId, ihave: wire::IHave, now: Instant) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        // Counted in ids: a choked mesh link announces every message in its own IHAVE
        // entry, and every one of those must get through.
        p.ihaves += ihave.ids.len();
        if p.ihaves > self.config.max_ihave_messages * self.config.max_ihave_length {
            return;
        }
        if !self.topics.get(&ihave.topic).is_some_and(|t| t.subscribed) {
            return;
        }
        let at = now + self.config.iwant_delay;
        for raw in ihave.ids.into_iter().take(self.config.max_ihave_length) {
            let Ok(id) = <MessageId>::try_from(raw.as_slice()) else {
                continue;
            };
            let known = self.seen.contains(&id) || self.incoming.contains(&id);
            if known || self.promises.contains_key(&id) || self.iwant_due.contains_key(&id) {
                continue;
            }
            self.iwant_due.insert(id, (from, at));
        }
    }

    /// Sends the IWANTs whose delay ran out for messages still missing.
    fn send_due_iwants(&mut self, now: Instant) {
        let due: Vec<(MessageId, PeerId)> = self
            .iwant_due
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (p, _))| (*id, *p))
            .collect();
        let deadline = now + self.config.heartbeat * PROMISE_HEARTBEATS;
        let mut per_peer: HashMap<PeerId, Vec<Vec<u8>>> = HashMap::new();
        for (id, peer) in due {
            self.iwant_due.remove(&id);
            let known = self.seen.contains(&id) || self.incoming.contains(&id);
            if known || !self.peers.contains_key(&peer) {
                continue;
            }
            self.promises.insert(id, (peer, deadline));
            per_peer.entry(peer).or_default().push(id.to_vec());
        }
        let mut peers: Vec<_> = per_peer.into_iter().collect();
        peers.sort_by_key(|(p, _)| *p);
        for (peer, ids) in peers {
            self.rpc(peer).iwant.push(wire::IWant { ids });
        }
    }

    fn handle_iwant(&mut self, from: PeerId, iwant: wire::IWant) {
        let max = self.config.max_iwant_replies;
        let mut msgs = Vec::new();
        for raw in iwant.ids.iter().take(self.config.max_ihave_length) {
            let Ok(id) = <MessageId>::try_from(raw.as_slice()) else {
                continue;
            };
            if let Some(m) = self.mcache.get_for_iwant(&id, from, max) {
                msgs.push(m.clone());
            }
        }
        self.rpc(from).publish.extend(msgs);
    }

    fn handle_graft(&mut self, from: PeerId, topic: String, now: Instant) {
        let score = self.score(&from);
        let d_hi = self.config.d_hi;
        let Some(t) = self.topics.get_mut(&topic) else {
            return self.prune(&topic, from, now);
        };
        let backing_off = t.backoff.get(&from).is_some_and(|until| *until > now);
        if !t.subscribed || score < 0.0 || backing_off || t.mesh.len() >= d_hi {
            if backing_off {
                self.penalize(from, Penalty::GraftDuringBackoff);
            }
            return self.prune(&topic, from, now);
        }
        t.mesh.entry(from).or_default();
    }

    /// A PRUNE. Its peer-exchange records are only read when the pruning peer was
    /// in our mesh of a topic we need peers for, from one PRUNE per RPC, and a
    /// forged record costs the sender and ends the reading.
    fn handle_prune(
        &mut self,
        from: PeerId,
        prune: wire::Prune,
        px_allowed: &mut bool,
        now: Instant,
    ) {
        let backoff = Duration::from_secs(prune.backoff_secs).max(self.config.prune_backoff);
        let short = if let Some(t) = self.topics.get_mut(&prune.topic) {
            let was_mesh = t.mesh.remove(&from).is_some();
            t.backoff
                .insert(from, now + backoff.min(Duration::from_secs(3600)));
            was_mesh && t.subscribed && t.mesh.len() < self.config.d_lo
        } else {
            false
        };
        if !short || prune.peers.is_empty() || !std::mem::take(px_allowed) {
            return;
        }
        let mut records = Vec::new();
        for raw in prune.peers.into_iter().take(self.config.prune_peers) {
            self.signature_checks += 1;
            match PeerRecord::verify(raw) {
                Ok(r) if !self.peers.contains_key(&r.id) => records.push(r),
                Ok(_) => {}
                Err(_) => {
                    self.penalize(from, Penalty::ForgedPeerExchange);
                    return;
                }
            }
        }
        if !records.is_empty() {
            self.outputs
                .push_back(GossipOutput::Connect { from, records });
        }
    }

    fn handle_idontwant(&mut self, from: PeerId, d: wire::IDontWant) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        for raw in d.ids.into_iter().take(self.config.max_ihave_length) {
            let Ok(id) = <MessageId>::try_from(raw.as_slice()) else {
                continue;
            };
            if p.dontwant.insert(id) {
                p.dontwant_order.push_back(id);
                if p.dontwant_order.len() > MAX_DONTWANT {
                    if let Some(old) = p.dontwant_order.pop_front() {
                        p.dontwant.remove(&old);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ heartbeat

    /// When [`Router::heartbeat`] must run.
    pub fn poll_timeout(&self) -> Instant {
        let next = self
            .iwant_due
            .values()
            .map(|(_, at)| *at)
            .min()
            .map_or(self.next_heartbeat, |at| at.min(self.next_heartbeat));
        self.incoming.next_deadline().map_or(next, |d| d.min(next))
    }

    /// Delayed IWANTs, then (when due) mesh maintenance, lazy gossip, choking,
    /// promises and score decay.
    pub fn heartbeat(&mut self, now: Instant) {
        self.send_due_iwants(now);
        self.expire_announcements(now);
        if now < self.next_heartbeat {
            self.flush(now);
            return;
        }
        self.next_heartbeat = now + self.config.heartbeat;
        self.heartbeats += 1;
        // Broken promises.
        let broken: Vec<(MessageId, PeerId)> = self
            .promises
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(id, (p, _))| (*id, *p))
            .collect();
        for (id, p) in broken {
            self.promises.remove(&id);
            if let Some(peer) = self.peers.get_mut(&p) {
                peer.score.broken_promises += 1.0;
            }
        }
        // Scores: decay, colocation.
        let mut per_subnet: HashMap<[u8; 6], usize> = HashMap::new();
        for p in self.peers.values() {
            *per_subnet.entry(p.subnet).or_default() += 1;
        }
        for p in self.peers.values_mut() {
            p.score.decay(&self.weights);
            p.score.colocated = per_subnet.get(&p.subnet).copied().unwrap_or(0);
            p.ihaves = 0;
        }
        let topics: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, t)| t.subscribed)
            .map(|(n, _)| n.clone())
            .collect();
        let choke_round = self.heartbeats % u64::from(self.config.choke_window.max(1)) == 0;
        let graft_round = self.heartbeats % self.config.opportunistic_graft_every.max(1) == 0;
        for topic in topics {
            self.maintain_mesh(&topic, now);
            if choke_round {
                self.score_mesh_deliveries(&topic);
                self.choke_round(&topic);
            }
            if graft_round {
                self.opportunistic_graft(&topic, now);
            }
            self.emit_gossip(&topic);
        }
        for t in self.topics.values_mut() {
            t.backoff.retain(|_, until| *until > now);
        }
        self.mcache.shift();
        self.flush(now);
    }

    fn maintain_mesh(&mut self, topic: &str, now: Instant) {
        let (d, d_lo, d_hi) = (self.config.d, self.config.d_lo, self.config.d_hi);
        let scores: HashMap<PeerId, f64> = self.peers.keys().map(|p| (*p, self.score(p))).collect();
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        // Peers with a negative score leave the mesh.
        let bad: Vec<PeerId> = t
            .mesh
            .keys()
            .filter(|p| scores.get(p).copied().unwrap_or(0.0) < 0.0)
            .copied()
            .collect();
        for p in &bad {
            t.mesh.remove(p);
        }
        let mut grafts = Vec::new();
        if t.mesh.len() < d_lo {
            let mut candidates: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(id, p)| {
                    p.topics.contains(topic)
                        && !t.mesh.contains_key(id)
                        && t.backoff.get(id).is_none_or(|u| *u <= now)
                        && scores.get(id).copied().unwrap_or(0.0) >= 0.0
                })
                .map(|(id, _)| *id)
                .collect();
            candidates.sort();
            self.rng.shuffle(&mut candidates);
            for p in candidates.into_iter().take(d - t.mesh.len()) {
                t.mesh.insert(p, Link::default());
                grafts.push(p);
            }
        }
        let mut prunes = bad;
        if t.mesh.len() > d_hi {
            let mut members: Vec<PeerId> = t.mesh.keys().copied().collect();
            members.sort();
            self.rng.shuffle(&mut members);
            for p in members.into_iter().take(t.mesh.len() - d) {
                t.mesh.remove(&p);
                prunes.push(p);
            }
        }
        for p in grafts {
            self.rpc(p).graft.push(wire::Graft {
                topic: topic.to_string(),
            });
        }
        for p in prunes {
            self.prune(topic, p, now);
        }
    }

    /// An eager mesh link that delivered nothing in a window in which the topic was
    /// busy is free-riding: it counts a delivery deficit against its peer's score.
    fn score_mesh_deliveries(&mut self, topic: &str) {
        let min = self.config.mesh_deficit_min_messages;
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        let busy: u32 = t.mesh.values().map(|l| l.first).sum();
        if busy < min {
            return;
        }
        let idle: Vec<PeerId> = t
            .mesh
            .iter()
            .filter(|(_, l)| !l.we_choked && !l.hushed && l.first == 0 && l.dups == 0)
            .map(|(p, _)| *p)
            .collect();
        for p in idle {
            if let Some(peer) = self.peers.get_mut(&p) {
                peer.score.mesh_deficit += 1.0;
            }
        }
    }

    /// If the mesh's median score is low, graft up to two peers that score above it.
    fn opportunistic_graft(&mut self, topic: &str, now: Instant) {
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        if t.mesh.is_empty() {
            return;
        }
        let mut scores: Vec<f64> = t.mesh.keys().map(|p| self.score(p)).collect();
        scores.sort_by(|a, b| a.total_cmp(b));
        let median = scores[scores.len() / 2];
        if median >= self.config.opportunistic_graft_threshold {
            return;
        }
        let mut better: Vec<(PeerId, f64)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.topics.contains(topic)
                    && !t.mesh.contains_key(id)
                    && t.backoff.get(id).is_none_or(|u| *u <= now)
            })
            .map(|(id, p)| (*id, p.score.value(&self.weights)))
            .filter(|(_, s)| *s > median)
            .collect();
        better.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let picks: Vec<PeerId> = better.into_iter().take(2).map(|(p, _)| p).collect();
        if let Some(t) = self.topics.get_mut(topic) {
            for p in &picks {
                t.mesh.entry(*p).or_default();
            }
        }
        for p in picks {
            self.rpc(p).graft.push(wire::Graft {
                topic: topic.to_string(),
            });
        }
    }

    /// Chokes mesh links that mostly brought duplicates in the last window. The
    /// `d_eager_min` links that delivered first most often always stay eager.
    fn choke_round(&mut self, topic: &str) {
        let (keep, dups) = (self.config.d_eager_min, self.config.choke_duplicates);
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let mut ranked: Vec<(PeerId, u32, u32, bool)> = t
            .mesh
            .iter()
            .map(|(p, l)| (*p, l.first, l.dups, l.we_choked))
            .collect();
        // Most first deliveries first; ties: fewer duplicates, then id (deterministic).
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        let mut chokes = Vec::new();
        let mut unchokes = Vec::new();
        for (rank, (p, first, dup, choked)) in ranked.into_iter().enumerate() {
            let Some(l) = t.mesh.get_mut(&p) else {
                continue;
            };
            if rank < keep {
                if choked {
                    l.we_choked = false;
                    unchokes.push(p);
                }
            } else if !choked && dup >= dups && first * 3 < dup {
                l.we_choked = true;
                chokes.push(p);
            }
            l.first = 0;
            l.dups = 0;
            l.hushed = false;
        }
        for p in chokes {
            self.rpc(p).choke.push(wire::Choke {
                topic: topic.to_string(),
            });
        }
        for p in unchokes {
            self.rpc(p).unchoke.push(wire::Unchoke {
                topic: topic.to_string(),
            });
        }
    }

    fn emit_gossip(&mut self, topic: &str) {
        let ids = self.mcache.gossip_ids(topic);
        if ids.is_empty() {
            return;
        }
        let threshold = self.config.gossip_threshold;
        let Some(t) = self.topics.get(topic) else {
            return;
        };
        let mut targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.topics.contains(topic)
                    && !t.mesh.contains_key(id)
                    && p.score.value(&self.weights) >= threshold
            })
            .map(|(id, _)| *id)
            .collect();
        targets.sort();
        self.rng.shuffle(&mut targets);
        let ids: Vec<Vec<u8>> = ids
            .into_iter()
            .take(self.config.max_ihave_length)
            .map(|i| i.to_vec())
            .collect();
        for p in targets.into_iter().take(self.config.d_lazy) {
            self.rpc(p).ihave.push(wire::IHave {
                topic: topic.to_string(),
                ids: ids.clone(),
            });
        }
    }

    fn prune(&mut self, topic: &str, peer: PeerId, now: Instant) {
        let backoff = self.config.prune_backoff;
        if let Some(t) = self.topics.get_mut(topic) {
            t.mesh.remove(&peer);
            t.backoff.insert(peer, now + backoff);
        }
        let mut px: Vec<wire::PeerRecord> = self
            .px
            .iter()
            .filter(|r| r.id != peer)
            .map(PeerRecord::to_wire)
            .collect();
        self.rng.shuffle(&mut px);
        px.truncate(self.config.prune_peers);
        self.rpc(peer).prune.push(wire::Prune {
            topic: topic.to_string(),
            peers: px,
            backoff_secs: backoff.as_secs(),
        });
    }

    // ------------------------------------------------------------ helpers

    fn penalize(&mut self, peer: PeerId, penalty: Penalty) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.score.invalid += penalty.weight();
        }
        self.outputs
            .push_back(GossipOutput::Penalize { peer, penalty });
    }

    fn rpc(&mut self, peer: PeerId) -> &mut wire::GossipRpc {
        self.pending.entry(peer).or_default()
    }

    /// Encodes what was queued per peer, in as many RPCs as the limits need.
    fn flush(&mut self, now: Instant) {
        let deadline = now + self.config.forward_deadline;
        let mut pending: Vec<(PeerId, wire::GossipRpc)> = self.pending.drain().collect();
        pending.sort_by_key(|(p, _)| *p);
        for (peer, rpc) in pending {
            if !self.peers.contains_key(&peer) {
                continue;
            }
            for part in rpc::pack(rpc, &self.config.rpc_limits) {
                self.outputs.push_back(GossipOutput::Send {
                    peer,
                    bytes: part.encode_to_vec(),
                    deadline,
                });
            }
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<GossipOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
