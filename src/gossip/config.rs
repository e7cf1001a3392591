//! Gossip settings and their defaults.

use std::time::Duration;

/// Gossip router settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Target mesh degree.
    pub d: usize,
    /// Below this, the heartbeat grafts.
    pub d_lo: usize,
    /// Above this, the heartbeat prunes (down to `d`).
    pub d_hi: usize,
    /// Most mesh peers. Grafts are accepted beyond `d_hi` up to this, and the next
    /// heartbeat trims the mesh to `d`: refusing at `d_hi` left meshes of early
    /// nodes full for good, and nodes that joined later short of peers (S1, 1,000
    /// nodes: meshes not complete after 60 s; with this, 300 nodes complete 3.5 s
    /// after the last one joins).
    pub d_max: usize,
    /// Peers outside the mesh that get IHAVE gossip each heartbeat.
    pub d_lazy: usize,
    /// Mesh links per topic that always stay eager (never choked).
    pub d_eager_min: usize,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Heartbeats a message stays in the message cache (for IWANT).
    pub history_length: usize,
    /// Heartbeats of the cache that IHAVE gossip covers.
    pub history_gossip: usize,
    /// Offer each id to a peer in IHAVE gossip once, not in every gossip window
    /// it is still in (`false`: GossipSub, which offers it again each heartbeat).
    pub gossip_offer_once: bool,
    /// Payload bytes the message cache holds at most (oldest windows go first).
    pub mcache_max_bytes: usize,
    /// How long a message id is remembered as seen.
    pub seen_ttl: Duration,
    /// Most ids remembered as seen.
    pub seen_max: usize,
    /// Largest message payload.
    pub max_message_size: usize,
    /// Most ids in one IHAVE, and IHAVEs accepted per peer per heartbeat.
    pub max_ihave_length: usize,
    /// IHAVE messages' worth of ids (`max_ihave_messages * max_ihave_length`)
    /// accepted from one peer per heartbeat.
    pub max_ihave_messages: usize,
    /// Times one message is sent to one peer on IWANT.
    pub max_iwant_replies: u32,
    /// Topics a peer may subscribe to.
    pub max_topics_per_peer: usize,
    /// Backoff after a PRUNE before grafting again.
    pub prune_backoff: Duration,
    /// Peers offered in a PRUNE (peer exchange).
    pub prune_peers: usize,
    /// Messages at least this large get an IDONTWANT to the mesh on receipt.
    pub idontwant_min_size: usize,
    /// Send IDONTWANT at all (on receipt and at the first fragment).
    pub idontwant: bool,
    /// Send IDONTWANT already at a large message's first fragment (`false`: only
    /// once it is complete, as GossipSub v1.2 does).
    pub idontwant_first_fragment: bool,
    /// Heartbeats between opportunistic grafting rounds.
    pub opportunistic_graft_every: u64,
    /// Below this median mesh score, graft up to two better-scoring peers.
    pub opportunistic_graft_threshold: f64,
    /// Eager mesh links that delivered nothing while the topic carried at least this
    /// many messages in a choke window count a delivery deficit.
    pub mesh_deficit_min_messages: u32,
    /// Forwarded messages not sent within this are dropped (and counted).
    pub forward_deadline: Duration,
    /// Sign published messages (origin, seqno, signature); `false` = anonymous.
    pub sign: bool,
    /// Choke mesh links that bring duplicates (Plumtree): at once on a duplicate
    /// while `d_eager_min` links stay eager, and at choke rounds. `false`: every mesh
    /// link always pushes in full, as in GossipSub.
    pub choke: bool,
    /// With `choke`, a link joining the mesh while more than `d_eager_min` others
    /// are eager starts choked, where duplicates would soon put it anyway: the
    /// chokes of a fresh mesh otherwise arrive only after the first messages went
    /// out on every link, and on a loaded machine that lag is seconds of traffic.
    pub choke_new_links: bool,
    /// A duplicate chokes its link at once only if it came this long after the
    /// first copy.
    pub choke_min_lag: Duration,
    /// Duplicates in the current choke window that choke a link at once.
    pub choke_after: u32,
    /// Heartbeats between choke decisions; duplicates needed to choke a link.
    pub choke_window: u32,
    /// Duplicate-only deliveries in a window that choke a mesh link.
    pub choke_duplicates: u32,
    /// How long an IHAVE waits for the eager push before the IWANT goes out.
    pub iwant_delay: Duration,
    /// Lengthen that wait while IWANTs turn out premature (the eager copy beat
    /// the reply, which is then a duplicate) and shorten it while replies come
    /// first, never past twice the observed lag: on a loaded machine copies
    /// arrive hundreds of milliseconds apart, and a fixed 5 ms fetched ~0.5
    /// duplicates per delivery (P1, 256 nodes). `false`: always `iwant_delay`.
    pub iwant_adaptive: bool,
    /// A copy or an IHAVE from a peer counts as its IDONTWANT for that id, so no
    /// separate IDONTWANT goes to a peer that gets the message or an IHAVE from us
    /// (the copy says we have it). `false`: GossipSub v1.2's explicit IDONTWANT.
    pub implied_dontwant: bool,
    /// Chunks of a stream still waiting in a peer's send queue are dropped once
    /// the peer shows it has the message (IDONTWANT, a copy, a head or an IHAVE).
    /// `false`: GossipSub v1.2, where what was queued goes out.
    pub withdraw_chunks: bool,
    /// IHAVEs for mesh links choked both ways wait up to this long and go out
    /// together, one id list per topic, minus the ids the peer showed it has
    /// meanwhile. `ZERO`: one IHAVE per message at once.
    pub ihave_batch: Duration,
    /// Score thresholds: below gossip, IHAVE/IWANT are ignored; below publish,
    /// no flood publish; below graylist, everything from the peer is ignored.
    pub gossip_threshold: f64,
    /// See `gossip_threshold`.
    pub publish_threshold: f64,
    /// See `gossip_threshold`.
    pub graylist_threshold: f64,
    /// What one RPC may hold, both ways (see [`crate::gossip::RpcLimits`]).
    pub rpc_limits: crate::gossip::RpcLimits,
    /// Signature checks one peer may cause per second (sustained) ...
    pub verify_per_sec: f64,
    /// ... and in a burst; new messages beyond are skipped, not penalized.
    pub verify_burst: f64,
    /// How long a message announced by a first fragment (or a stream's head) may
    /// take to complete before it is fetched from another mesh peer and the
    /// announcer is penalized; twice the observed lag is added while the network
    /// runs behind.
    pub announce_timeout: Duration,
    /// Announced, incomplete messages one peer may have at a time.
    pub max_announced_per_peer: usize,
    /// Publish messages of at least `stream_min_size` bytes as a signed head and
    /// hashed chunks, which every node forwards chunk by chunk as they arrive
    /// (`false`: whole messages only, forwarded once complete, as GossipSub does).
    pub cut_through: bool,
    /// Stamp our signed messages with the time we publish them (Unix microseconds,
    /// signed), so every receiver can keep a histogram of one-way delay per topic
    /// ([`crate::gossip::TopicMetrics::delay`]). Costs 9 bytes per message; it
    /// tells receivers our clock. Anonymous messages are never stamped.
    pub origin_time: bool,
    /// Mesh peers a relay forwards a stream to chunk by chunk; the rest of the mesh
    /// gets it whole once it is complete and accepted (unless it said IDONTWANT by
    /// then). Chunk-by-chunk children share the uplink chunk by chunk, so with eight
    /// each would get the message an eighth as fast; with a few, they forward it on
    /// almost as soon as it arrives.
    pub stream_eager: usize,
    /// Peers our own stream is published to (of the mesh, or of the flood targets),
    /// one after the other, each at the full uplink rate. Each forwards it at once,
    /// so the mesh has it sooner than if our uplink served all of it (S1, 300 nodes,
    /// 1 MiB: latency p50 1.47 s to the whole mesh, 0.77 s to 2 of it).
    pub stream_publish: usize,
    /// Smallest message published as a stream.
    pub stream_min_size: usize,
    /// Bytes per chunk of a stream (grown for messages that would need more than
    /// 1,024 chunks). Below the mux fragment, so that a chunk is one frame.
    pub stream_chunk: usize,
    /// Announced bytes of all streams being assembled at once; a head beyond is
    /// left for later (IHAVE/IWANT), before its signature is checked.
    pub max_assembly_bytes: usize,
    /// Messages larger than this are published to the mesh only, not to every
    /// subscribed peer (flood publish): flooding 1 MiB to 30 peers holds a 50 Mbit/s
    /// uplink for 5 s. 0 publishes everything to the mesh only.
    pub flood_publish_max_size: usize,
    /// How far flood publish goes past the links that want our messages pushed:
    /// a small message of ours goes to every mesh link not choked by its peer, plus
    /// this many other subscribed peers picked at random (choked or outside the
    /// mesh), so that a mesh of liars cannot sit on it alone. `usize::MAX` is
    /// GossipSub's flood publish (every subscribed peer). Each extra copy is one more
    /// root of the broadcast tree and lands as a duplicate almost everywhere below.
    pub flood_publish_extra: usize,
    /// Weights of the peer score (first deliveries, invalid messages, broken
    /// promises, mesh deficit, IP colocation, decay); the thresholds above act on it.
    pub score_weights: crate::gossip::score::ScoreWeights,
    /// The application decides on each message off the loop thread: it is
    /// delivered with `needs_verdict` and forwarded only once the application calls
    /// `report_validation` (a mempool's CheckTx). A synchronous validator, if any,
    /// runs first.
    pub deferred_validation: bool,
    /// A deferred message without a verdict after this is dropped as ignored.
    pub deferred_timeout: Duration,
    /// Most messages waiting for a verdict; beyond, new ones are dropped unseen.
    pub max_deferred: usize,
    /// Most payload bytes waiting for a verdict.
    pub max_deferred_bytes: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            d: 8,
            d_lo: 6,
            d_hi: 12,
            d_max: 18,
            d_lazy: 6,
            d_eager_min: 2,
            heartbeat: Duration::from_millis(200),
            // Longer than the forward deadline, so what a slow link dropped can still
            // be fetched by IWANT.
            history_length: 15,
            // Each id is offered to d_lazy peers at 3 heartbeats, not 10: at 1 KiB
            // the IHAVEs were a fifth of all bytes (S1, 300 nodes: amplification
            // 6.18 -> 4.80, the same latency).
            history_gossip: 3,
            gossip_offer_once: true,
            mcache_max_bytes: 64 << 20,
            seen_ttl: Duration::from_secs(120),
            seen_max: 200_000,
            max_message_size: 4 << 20,
            max_ihave_length: 500,
            max_ihave_messages: 10,
            max_iwant_replies: 3,
            max_topics_per_peer: 64,
            prune_backoff: Duration::from_secs(10),
            prune_peers: 8,
            idontwant_min_size: 1024,
            idontwant: true,
            idontwant_first_fragment: true,
            opportunistic_graft_every: 60,
            opportunistic_graft_threshold: 1.0,
            mesh_deficit_min_messages: 10,
            forward_deadline: Duration::from_secs(10),
            sign: true,
            choke: true,
            choke_new_links: true,
            choke_min_lag: Duration::ZERO,
            choke_after: 1,
            choke_window: 10,
            choke_duplicates: 3,
            iwant_delay: Duration::from_millis(5),
            iwant_adaptive: true,
            implied_dontwant: true,
            withdraw_chunks: true,
            // Doubly choked links only repair; 50 ms of batching turns ~2 ids per
            // IHAVE into dozens (P1 1 KiB: IHAVE-only RPCs were 0.59 of the payload).
            ihave_batch: Duration::from_millis(50),
            gossip_threshold: -10.0,
            publish_threshold: -50.0,
            graylist_threshold: -80.0,
            rpc_limits: crate::gossip::RpcLimits::default(),
            verify_per_sec: 1000.0,
            verify_burst: 2000.0,
            announce_timeout: Duration::from_secs(3),
            max_announced_per_peer: 8,
            cut_through: true,
            origin_time: true,
            stream_eager: 3,
            stream_publish: 2,
            stream_min_size: 32 * 1024,
            stream_chunk: 16 * 1024 - 64,
            max_assembly_bytes: 64 << 20,
            flood_publish_max_size: 32 * 1024,
            flood_publish_extra: 4,
            score_weights: Default::default(),
            deferred_validation: false,
            deferred_timeout: Duration::from_secs(5),
            max_deferred: 4096,
            max_deferred_bytes: 64 << 20,
        }
    }
}

/// Why [`GossipConfig::set_knob`] refused a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnobError {
    /// No setting of that name can be set by name.
    Unknown(String),
    /// The value is not a whole number.
    BadValue(String),
}

impl std::fmt::Display for KnobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KnobError::Unknown(k) => write!(f, "unknown gossip setting {k:?}"),
            KnobError::BadValue(v) => write!(f, "not a whole number: {v:?}"),
        }
    }
}

impl std::error::Error for KnobError {}

impl GossipConfig {
    /// Sets one setting by name from a whole number (switches take 0/1, durations
    /// are in milliseconds, sizes in bytes): for benchmark and simulator ablations,
    /// which take `name=value` from the command line.
    ///
    /// ```
    /// let mut g = meshwire::gossip::GossipConfig::default();
    /// g.set_knob("choke", "0").unwrap();
    /// g.set_knob("heartbeat_ms", "100").unwrap();
    /// assert!(!g.choke);
    /// assert!(g.set_knob("no_such_setting", "1").is_err());
    /// g.set_knob("flood_publish_max_size", "5000000000").unwrap();
    /// assert!(g.set_knob("choke_after", "5000000000").is_err(), "not a u32");
    /// ```
    pub fn set_knob(&mut self, name: &str, value: &str) -> Result<(), KnobError> {
        let bad = || KnobError::BadValue(value.to_string());
        let n: u64 = value.trim().parse().map_err(|_| bad())?;
        // Each kind is converted where it is used, so a size too big for a u32
        // is still a size.
        let size = || usize::try_from(n).map_err(|_| bad());
        let count = || u32::try_from(n).map_err(|_| bad());
        let ms = Duration::from_millis(n);
        let on = n != 0;
        match name {
            "d" => self.d = size()?,
            "d_lo" => self.d_lo = size()?,
            "d_hi" => self.d_hi = size()?,
            "d_max" => self.d_max = size()?,
            "d_lazy" => self.d_lazy = size()?,
            "d_eager_min" => self.d_eager_min = size()?,
            "history_gossip" => self.history_gossip = size()?,
            "gossip_offer_once" => self.gossip_offer_once = on,
            "heartbeat_ms" => self.heartbeat = ms,
            "choke" => self.choke = on,
            "choke_new_links" => self.choke_new_links = on,
            "choke_after" => self.choke_after = count()?,
            "choke_min_lag_ms" => self.choke_min_lag = ms,
            "choke_window" => self.choke_window = count()?,
            "choke_duplicates" => self.choke_duplicates = count()?,
            "iwant_delay_ms" => self.iwant_delay = ms,
            "iwant_adaptive" => self.iwant_adaptive = on,
            "ihave_batch_ms" => self.ihave_batch = ms,
            "idontwant" => self.idontwant = on,
            "idontwant_min_size" => self.idontwant_min_size = size()?,
            "idontwant_first_fragment" => self.idontwant_first_fragment = on,
            "implied_dontwant" => self.implied_dontwant = on,
            "cut_through" => self.cut_through = on,
            "withdraw_chunks" => self.withdraw_chunks = on,
            "stream_chunk" => self.stream_chunk = size()?,
            "stream_eager" => self.stream_eager = size()?,
            "stream_publish" => self.stream_publish = size()?,
            "stream_min_size" => self.stream_min_size = size()?,
            "flood_publish_max_size" => self.flood_publish_max_size = size()?,
            "flood_publish_extra" => self.flood_publish_extra = size()?,
            _ => return Err(KnobError::Unknown(name.to_string())),
        }
        Ok(())
    }

    /// Applies `name=value` settings separated by commas (see
    /// [`GossipConfig::set_knob`]).
    pub fn set_knobs(&mut self, list: &str) -> Result<(), KnobError> {
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| KnobError::BadValue(item.to_string()))?;
            self.set_knob(name.trim(), value)?;
        }
        Ok(())
    }
}
