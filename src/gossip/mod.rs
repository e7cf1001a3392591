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
mod assembly;
pub mod cache;
pub mod config;
mod deferred;
mod delay;
mod flush;
mod lag;
mod lazy;
mod mesh;
pub mod message;
mod outgoing;
mod output;
mod outstanding;
pub mod penalty;
mod receive;
mod recent;
pub mod rpc;
pub mod score;
pub mod stream;
mod streaming;

use crate::collections::{Map, Set};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost::Message;

use crate::identity::{Keypair, PeerId};
use crate::rate::TokenBucket;
use crate::record::PeerRecord;
use crate::rng::Rng;
use crate::subnet::subnet;
use crate::wire;
use announce::Announcements;
use assembly::Assemblies;
use cache::{Cached, MessageCache, SeenCache};
pub use config::{GossipConfig, KnobError};
pub use message::{MessageId, Validation};
pub use outgoing::Outgoing;
pub use output::{GossipEvent, GossipOutput, PublishError, TopicMetrics, Validator};
pub use penalty::Penalty;
pub use rpc::RpcLimits;
use score::{Counter, PeerScore, ScoreWeights};

/// The channel gossip RPCs ride on.
pub const GOSSIP_CHANNEL: u32 = 0xffff_0002;
/// Longest topic name a peer may subscribe to.
pub const MAX_TOPIC_LEN: usize = 256;
/// Streams remembered per peer as having chunks queued for it: more than a send
/// queue holds at once.
const MAX_CHUNKS_QUEUED: usize = 64;
/// Ids remembered per peer from its IDONTWANTs.
const MAX_DONTWANT: usize = 1024;
/// Ids remembered per peer as offered to it in IHAVE gossip: more than the gossip
/// windows hold at the rates seen (P1: ~20 ids a heartbeat, gossiped over up to 6
/// windows under load). One forgotten is offered again, no worse than GossipSub.
const MAX_OFFERED: usize = 1024;
/// Other offerers remembered per id we wait for.
const MAX_ALTERNATES: usize = 3;
/// Heartbeats an IWANT may take before the promise counts as broken.
const PROMISE_HEARTBEATS: u32 = 3;

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
    mesh: Map<PeerId, Link>,
    backoff: Map<PeerId, Instant>,
    metrics: TopicMetrics,
}

/// IHAVEs held for one peer: ids per topic.
type HeldIhaves = Vec<(String, Vec<MessageId>)>;

impl Peer {
    /// The peer has `id` (it said IDONTWANT, sent a copy or an IHAVE): send it
    /// neither. On the peer's word, which only ever costs the peer itself; bounded.
    /// `true` if chunks of it were queued for the peer lately (worth withdrawing).
    fn note_has(&mut self, id: MessageId) -> bool {
        let queued = self.chunks_queued.iter().position(|q| *q == id);
        if let Some(i) = queued {
            self.chunks_queued.remove(i);
        }
        self.dontwant.insert(id);
        queued.is_some()
    }
}

#[derive(Debug)]
struct Peer {
    topics: Set<String>,
    score: PeerScore,
    subnet: [u8; 6],
    dontwant: recent::RecentIds,
    /// Ids we offered it in IHAVE gossip (each is offered to a peer once).
    offered: recent::RecentIds,
    /// Streams whose chunks were queued for this peer lately (newest last, bounded).
    chunks_queued: VecDeque<MessageId>,
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
    topics: Map<String, Topic>,
    peers: Map<PeerId, Peer>,
    seen: SeenCache,
    mcache: MessageCache,
    /// Ids we asked for with IWANT: from whom, and by when.
    promises: Map<MessageId, (PeerId, Instant)>,
    /// How long an IHAVE waits before its IWANT.
    iwant_wait: lag::RepairWait,
    /// Ids announced by the first fragment of a message still arriving.
    incoming: Announcements,
    /// Streamed messages still arriving.
    assembling: Assemblies,
    /// Chunk RPCs to send once the RPCs queued before them (their heads) are out.
    chunk_sends: Vec<(PeerId, MessageId, Arc<Vec<u8>>)>,
    /// Origins whose messages the validator rejected lately: their streams are
    /// forwarded only once complete and accepted (bounded; oldest go first).
    suspect_origins: VecDeque<PeerId>,
    /// IWANTs waiting for their delay: id -> (peer, send at).
    iwant_due: Map<MessageId, (PeerId, Instant)>,
    /// Other peers that offered an id we are waiting for (due or promised): asked
    /// next if the first leaves or breaks its promise. An id is offered to us by a
    /// peer once, so without these one lost reply loses the message.
    alternates: Map<MessageId, Vec<PeerId>>,
    /// IHAVEs held back for doubly choked links, per peer and topic (at most
    /// `max_ihave_length` ids per peer).
    lazy: Map<PeerId, HeldIhaves>,
    /// When the held-back IHAVEs go out.
    lazy_due: Option<Instant>,
    pending: Map<PeerId, wire::GossipRpc>,
    /// Full copies of a message for several peers, encoded once at the flush (see
    /// [`Router::push_copies`]).
    copies: Vec<(wire::GossipMessage, Vec<PeerId>)>,
    outputs: VecDeque<GossipOutput>,
    px: Vec<PeerRecord>,
    rng: Rng,
    seqno: u64,
    next_heartbeat: Instant,
    heartbeats: u64,
    /// Signature checks done (messages and peer-exchange records).
    signature_checks: u64,
    /// How far behind the network runs (the spread of duplicate arrivals).
    lag: lag::Lag,
    /// Messages waiting for the application's verdict.
    deferred: deferred::DeferredSet,
    /// The wall clock at an instant, as the node last told us (we read no clock).
    wall: Option<(Instant, SystemTime)>,
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
        let weights = config.score_weights.clone();
        Router {
            seen: SeenCache::new(config.seen_ttl, config.seen_max),
            incoming: Announcements::default(),
            assembling: Assemblies::default(),
            chunk_sends: Vec::new(),
            suspect_origins: VecDeque::new(),
            mcache: MessageCache::new(
                config.history_length,
                config.history_gossip,
                config.mcache_max_bytes,
            ),
            next_heartbeat: now + config.heartbeat,
            seqno,
            config,
            weights,
            key,
            validator,
            topics: Map::default(),
            peers: Map::default(),
            promises: Map::default(),
            iwant_wait: Default::default(),
            iwant_due: Map::default(),
            alternates: Map::default(),
            lazy: Map::default(),
            lazy_due: None,
            pending: Map::default(),
            copies: Vec::new(),
            outputs: VecDeque::new(),
            px: Vec::new(),
            rng,
            heartbeats: 0,
            signature_checks: 0,
            lag: lag::Lag::default(),
            deferred: Default::default(),
            wall: None,
        }
    }

    // ------------------------------------------------------------ peers and topics

    /// A peer connected (from `ip`): tell it our subscriptions.
    pub fn add_peer(&mut self, peer: PeerId, ip: IpAddr, now: Instant) {
        self.peers.entry(peer).or_insert_with(|| Peer {
            topics: Set::default(),
            score: PeerScore::default(),
            subnet: subnet(ip),
            dontwant: recent::RecentIds::new(MAX_DONTWANT),
            offered: recent::RecentIds::new(MAX_OFFERED),
            chunks_queued: VecDeque::new(),
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
        self.assembling.forget_peer(peer);
        self.pending.remove(peer);
        self.lazy.remove(peer);
        self.chunk_sends.retain(|(p, _, _)| p != peer);
        for t in self.topics.values_mut() {
            t.mesh.remove(peer);
        }
        // Its promises are broken at the next heartbeat, and asked of another
        // offerer then (without a penalty: it left).
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

    /// How far behind the network runs as this node sees it: the spread between
    /// first copies and their duplicates, which the repair windows stretch to.
    pub fn observed_lag(&self) -> Duration {
        self.lag.get()
    }

    /// A genuine copy of `id` came from `from`: any IWANT promise for it is kept,
    /// and the repair wait learns whether that IWANT was needed. `true` if there
    /// was one.
    fn keep_promise(&mut self, id: &MessageId, from: PeerId) -> bool {
        self.alternates.remove(id);
        let Some((asked, _)) = self.promises.remove(id) else {
            return false;
        };
        if self.config.iwant_adaptive {
            let floor = self.config.iwant_delay;
            // Half the configured cache time: an IWANT must still find the
            // message at its offerer (testnet, 1,000 nodes, lag ~5 s: waits of
            // twice the lag outlived the caches and lost deliveries).
            let cap = self.config.heartbeat * self.config.history_length as u32 / 2;
            self.iwant_wait.observe(asked == from, floor, cap, self.lag);
        }
        true
    }

    /// When an IWANT sent now must be answered: three heartbeats, plus twice the
    /// observed lag (a lagging peer is slow, not lying).
    fn promise_deadline(&self, now: Instant) -> Instant {
        now + self.config.heartbeat * PROMISE_HEARTBEATS + self.lag.get() * 2
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
            self.key.clone()
        } else {
            None
        };
        let wall = self.wall_time(now);
        let out = Outgoing::build(&self.config, key.as_deref(), topic, self.seqno, data, wall);
        self.publish_outgoing(out, now)
    }

    /// Publishes a message built (and signed) elsewhere, e.g. on the caller's thread.
    pub fn publish_outgoing(
        &mut self,
        out: Outgoing,
        now: Instant,
    ) -> Result<MessageId, PublishError> {
        match out {
            Outgoing::Whole(msg) => self.publish_message(msg, now),
            Outgoing::Stream(head, chunks) => self.publish_stream(head, chunks, now),
        }
    }

    /// Publishes a whole message built (and signed) elsewhere.
    pub fn publish_message(
        &mut self,
        msg: wire::GossipMessage,
        now: Instant,
    ) -> Result<MessageId, PublishError> {
        let id = message::message_id(&msg);
        let topic = msg.topic.clone();
        let targets = self.publish_targets(&topic, msg.data.len());
        self.seen.insert(id, now);
        self.mcache.put(id, Cached::Whole(msg.clone()));
        self.topics.entry(topic).or_default().metrics.published += 1;
        if targets.is_empty() {
            return Err(PublishError::NoPeers);
        }
        self.push_copies(msg, targets);
        self.flush(now);
        Ok(id)
    }

    /// Whom a new message of ours goes to. Up to `flood_publish_max_size`: every
    /// mesh link whose peer has not choked us, plus `flood_publish_extra` other
    /// subscribed peers above the publish threshold (bounded flood publish); above
    /// it, the mesh. With no mesh for the topic, `d` of the subscribed peers.
    fn publish_targets(&mut self, topic: &str, size: usize) -> Vec<PeerId> {
        let threshold = self.config.publish_threshold;
        let mut all: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.topics.contains(topic) && p.score.value(&self.weights) >= threshold)
            .map(|(id, _)| *id)
            .collect();
        all.sort();
        let flood = size <= self.config.flood_publish_max_size;
        let extra = self.config.flood_publish_extra;
        if flood && extra >= all.len() {
            return all;
        }
        let mesh = self.topics.get(topic).map(|t| &t.mesh);
        let (mut targets, mut rest): (Vec<PeerId>, Vec<PeerId>) = all.into_iter().partition(|p| {
            mesh.and_then(|m| m.get(p))
                .is_some_and(|l| !(flood && l.choked_by_peer))
        });
        // Past the mesh: `extra` more when flooding; with no one in the mesh to push
        // to, `d` at least.
        let more = match (flood, targets.is_empty()) {
            (true, false) => extra,
            (true, true) => extra.max(self.config.d),
            (false, false) => 0,
            (false, true) => self.config.d.max(1),
        };
        if more > 0 {
            self.rng.shuffle(&mut rest);
            rest.truncate(more);
            targets.extend(rest);
        }
        targets
    }

    // ------------------------------------------------------------ helpers

    fn penalize(&mut self, peer: PeerId, penalty: Penalty) {
        self.penalize_topic(peer, penalty, None);
    }

    /// A penalty for something in `topic` (counted in its own score part if it has
    /// weights).
    fn penalize_in(&mut self, peer: PeerId, penalty: Penalty, topic: &str) {
        self.penalize_topic(peer, penalty, Some(topic));
    }

    fn penalize_topic(&mut self, peer: PeerId, penalty: Penalty, topic: Option<&str>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.score
                .count(&self.weights, topic, Counter::Invalid, penalty.weight());
        }
        self.outputs
            .push_back(GossipOutput::Penalize { peer, penalty });
    }

    fn rpc(&mut self, peer: PeerId) -> &mut wire::GossipRpc {
        self.pending.entry(peer).or_default()
    }

    /// `peer` has `id` (see [`Peer::note_has`]); chunks of it queued for the peer
    /// are withdrawn, those not yet handed out and those in its send queue.
    pub(super) fn peer_has(&mut self, peer: PeerId, id: MessageId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.note_has(id) && self.config.withdraw_chunks {
            self.chunk_sends
                .retain(|(to, of, _)| !(*to == peer && *of == id));
            self.outputs.push_back(GossipOutput::Withdraw { peer, id });
        }
    }

    /// The next thing to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<GossipOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod flush_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod implied_tests;
#[cfg(test)]
mod lone_tests;
#[cfg(test)]
mod repair_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
