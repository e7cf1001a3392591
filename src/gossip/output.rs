//! What the router hands out: its outputs for the node, the messages it delivers,
//! its publish errors and its per-topic counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::identity::PeerId;
use crate::record::PeerRecord;

use super::{MessageId, Penalty, Validation};

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
    /// When the origin published it, by the origin's clock (signed by it), if it
    /// stamped the message ([`GossipConfig::origin_time`](super::GossipConfig::origin_time)).
    pub origin_time: Option<SystemTime>,
    /// The payload.
    pub data: Vec<u8>,
    /// With deferred validation: the message waits, unforwarded, for the
    /// application's `report_validation` on its id (or its timeout).
    pub needs_verdict: bool,
}

/// What the router asks the node to do.
#[derive(Debug, Clone)]
pub enum GossipOutput {
    /// Send an encoded `GossipRpc` on the gossip channel; drop it if not sent by `deadline`.
    Send {
        /// To whom.
        peer: PeerId,
        /// The bytes (shared: a stream's chunk goes to several peers as one buffer).
        bytes: Arc<Vec<u8>>,
        /// Send-by time.
        deadline: Instant,
        /// A stream's chunk: the message it belongs to, for [`GossipOutput::Withdraw`].
        chunk_of: Option<MessageId>,
    },
    /// The peer has message `id` by now (it said IDONTWANT, or sent a copy, a head
    /// or an IHAVE): chunks of it still waiting in the peer's send queue are
    /// dropped. Under load a queue holds seconds of chunks; without this each is a
    /// duplicate by the time it goes out.
    Withdraw {
        /// To whom the chunks were queued.
        peer: PeerId,
        /// The message.
        id: MessageId,
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
    /// One-way delay of stamped messages, from the origin's publish time to their
    /// acceptance here (our clock minus the origin's: as good as the two clocks
    /// agree).
    pub delay: crate::histogram::Histogram,
    /// Stamped messages whose publish time lay ahead of our clock (counted in the
    /// delay histogram as 0): a sign that the clocks disagree.
    pub clock_ahead: u64,
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
    /// Stream heads left for later because too many streams were assembling.
    pub streams_deferred: u64,
    /// Streams given up at their deadline (then fetched from another peer).
    pub streams_expired: u64,
    /// Deferred messages whose verdict did not come in time (dropped as ignored).
    pub verdicts_timed_out: u64,
    /// Messages dropped unseen because too many (or too many bytes) waited for a
    /// verdict.
    pub verdicts_no_room: u64,
}
