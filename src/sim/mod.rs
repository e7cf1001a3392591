//! A deterministic discrete-event simulator of whole nodes.
//!
//! Every simulated node is a real `NodeCore` — the handshake,
//! sealed frames, mux, Kademlia, gossip and signatures the mio driver runs —
//! driven through the same `handle_*` / `poll_*` calls, in virtual time:
//!
//! - **Links** are TCP-like byte streams: in order, with a fixed one-way latency
//!   per connection (region pair, plus up to 10% jitter drawn at setup) and a
//!   1 MiB window that blocks a sender whose bytes are not read: what the
//!   receiver reads is credited back to the sender a one-way trip later (its ACK),
//!   and a close reaches the other end as a FIN behind the bytes and a reset.
//! - **Bandwidth**: a node's uplink serializes what it writes, **FIFO over all its
//!   connections** in the order written (a 1 MiB block to 8 peers occupies a
//!   50 Mbit/s uplink for 8 × 168 ms); its downlink serializes what it receives.
//! - **Processing**: a node handles one input at a time and is charged modeled CPU
//!   time ([`CostModel`]); inputs that arrive while it is busy wait, and what it
//!   writes leaves when its work is done.
//! - **Faults**: nodes killed (their peers see their connections end), nodes
//!   added at any time, partitions (segments across are held and retransmitted
//!   after the heal; dials across get no answer), slow regions.
//!
//! One seeded generator draws placements, keys, latencies and every node's protocol
//! randomness; maps iterate in a fixed order; so one seed gives one trace
//! ([`Simulation::trace`]).
//!
//! **Threads.** Each node owns its state, its ends of connections included; a
//! node learns of another's work only through events at least one link latency
//! later (1.5 ms, the shortest one-way trip of the matrix). So the engine runs
//! the one queue in windows that long: the nodes are split over the machine's
//! cores ([`Simulation::set_threads`]), each thread runs its nodes' events of
//! the window in key order, and what they send each other, dial (which draws
//! from the one generator) and hand their applications is merged after the
//! window in the order of the events that caused it. An event's key is its
//! virtual time, then the node that scheduled it and that node's count, never a
//! global counter, so the trace is the same for any thread count and the same as
//! running every event in strict order (a test checks all three). Nodes that
//! share cores, and the zero-latency model, have no lookahead and run in strict
//! order. Only handshake key material comes from `ring`'s
//! `SystemRandom` (its `SecureRandom` is sealed, so it cannot be replaced): it
//! changes ciphertext bytes, never their sizes or any decision.
//!
//! ```
//! use std::time::Duration;
//! use meshwire::sim::{CostModel, LinkModel, Simulation};
//!
//! let mut sim = Simulation::new(7, LinkModel::Regions, CostModel::default());
//! let a = sim.add_seed_node(Duration::ZERO);
//! let b = sim.add_node(Duration::from_millis(10));
//! let c = sim.add_node(Duration::from_millis(20));
//! for n in [a, b, c] {
//!     sim.subscribe(n, "blocks");
//! }
//! sim.run_until(Duration::from_secs(5));
//! sim.publish(b, "blocks", b"block 1".to_vec());
//! sim.run_until(Duration::from_secs(7));
//! assert_eq!(sim.deliveries().len(), 2, "a and c got it");
//! ```

mod bound;
mod engine;
mod event;
mod link;
pub mod model;
mod network;
mod s1;
mod shard;
mod trace;

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::NodeConfig;
use crate::gossip::{GossipConfig, MessageId, Outgoing};
use crate::identity::PeerId;
use crate::kad::record::PeerRecord;
use crate::node::command::{Command, Reply};

pub use engine::Delivery;
pub use model::{CostModel, LinkModel, Placement, REGIONS};
pub use s1::{build_network, run_s1, wait_for_meshes, RouterProfile, S1Options, S1Report, TOPIC};
pub use trace::Trace;

use engine::Engine;
use event::Ev;

/// Network id of every simulated node.
const NETWORK: &str = "meshwire-sim";
/// Port every simulated node listens on.
const PORT: u16 = 4000;

/// A simulated network; see the module docs.
pub struct Simulation {
    engine: Engine,
    template: NodeConfig,
    seeds: Vec<usize>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("nodes", &self.engine.nodes.len())
            .field("now", &self.now())
            .finish()
    }
}

impl Simulation {
    /// An empty network; nodes get default settings.
    pub fn new(seed: u64, model: LinkModel, cost: CostModel) -> Self {
        Self::with_config(seed, model, cost, NodeConfig::new(NETWORK))
    }

    /// An empty network whose nodes get `template`'s settings (its listen address,
    /// seed and bootstrap peers are each node's own).
    pub fn with_config(seed: u64, model: LinkModel, cost: CostModel, template: NodeConfig) -> Self {
        Simulation {
            engine: Engine::new(seed, model, cost),
            template,
            seeds: Vec::new(),
        }
    }

    /// The gossip settings nodes get.
    pub fn gossip_config(&self) -> Option<&GossipConfig> {
        self.template.gossip.as_ref()
    }

    /// Adds a seed node (the seeds before it are its bootstrap peers); the nodes
    /// added later bootstrap from all seeds.
    pub fn add_seed_node(&mut self, start: Duration) -> usize {
        let addr = self.next_addr();
        let seeds = self.seeds.clone();
        let n = self
            .engine
            .add_node(self.template.clone(), addr, &seeds, start);
        self.seeds.push(n);
        n
    }

    /// Adds a node that starts at `start` and bootstraps from the seeds.
    pub fn add_node(&mut self, start: Duration) -> usize {
        let addr = self.next_addr();
        self.add_node_at(addr, start)
    }

    /// Adds a node listening on `addr` (to place many in one subnet).
    pub fn add_node_at(&mut self, addr: SocketAddr, start: Duration) -> usize {
        let seeds = self.seeds.clone();
        self.engine
            .add_node(self.template.clone(), addr, &seeds, start)
    }

    fn next_addr(&self) -> SocketAddr {
        SocketAddr::new(Engine::ipv4(self.engine.nodes.len()).into(), PORT)
    }

    /// Spreads the nodes over `threads` threads between link latencies (the
    /// default: the machine's cores). The trace is the same for any count;
    /// 0 runs every event in one queue in strict order, the reference the
    /// windows are checked against.
    pub fn set_threads(&mut self, threads: usize) {
        self.engine.sequential = threads == 0;
        self.engine.threads = threads.max(1);
    }

    /// Runs until virtual time `t` (since the start).
    pub fn run_until(&mut self, t: Duration) {
        self.engine.run_until(t.as_nanos() as u64);
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.engine.now)
    }

    /// Nodes added so far (alive or not).
    pub fn len(&self) -> usize {
        self.engine.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.engine.nodes.is_empty()
    }

    /// Node `n`'s id.
    pub fn peer_id(&self, n: usize) -> PeerId {
        self.engine.world.ids[n]
    }

    /// Node `n`'s listen address.
    pub fn addr(&self, n: usize) -> SocketAddr {
        self.engine.world.addrs[n]
    }

    /// Where node `n` runs.
    pub fn placement(&self, n: usize) -> Placement {
        self.engine.world.place[n]
    }

    /// Whether node `n` runs (was not killed).
    pub fn is_alive(&self, n: usize) -> bool {
        self.engine.world.alive[n]
    }

    /// Node `n`'s application subscribes to `topic` (when `n` is next free).
    pub fn subscribe(&mut self, n: usize, topic: &str) {
        let at = self.engine.now;
        self.engine
            .schedule(at, Ev::Command(n, Command::Subscribe(topic.to_string())));
    }

    /// Node `n`'s application publishes `data` on `topic`, signed with its key.
    pub fn publish(&mut self, n: usize, topic: &str, data: Vec<u8>) -> MessageId {
        let seqno = self.engine.next_seqno(n);
        let key = self.engine.nodes[n].key.clone();
        let config = self.template.gossip.clone().unwrap_or_default();
        let at = self.engine.now;
        let wall = Some(self.engine.wall(at));
        let msg = Outgoing::build(&config, Some(&key), topic, seqno, data, wall);
        let id = msg.id();
        self.engine
            .schedule(at, Ev::Command(n, Command::Publish(Box::new(msg))));
        id
    }

    /// Node `from` dials node `to` (as the application's `dial` would).
    pub fn dial(&mut self, from: usize, to: usize) {
        let (addr, expected) = (self.addr(to), Some(self.peer_id(to)));
        let at = self.engine.now;
        self.engine
            .schedule(at, Ev::Command(from, Command::Dial { addr, expected }));
    }

    /// Node `n` starts a DHT lookup of the nodes closest to `key` (as the
    /// application's `find_node`); the result arrives in [`Simulation::lookups`].
    pub fn find_node(&mut self, n: usize, key: crate::kad::key::Key) {
        let at = self.engine.now;
        self.engine
            .schedule(at, Ev::Command(n, Command::FindNode(key, Some(0))));
    }

    /// The lookups node `n` finished since last asked.
    pub fn lookups(&mut self, n: usize) -> Vec<crate::kad::LookupResult> {
        let replies = std::mem::take(&mut self.engine.nodes[n].replies);
        replies
            .into_iter()
            .filter_map(|r| match r {
                Reply::Lookup(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// Node `n` stops at once; its peers see its connections end.
    pub fn kill(&mut self, n: usize) {
        self.engine.kill(n);
    }

    /// Splits the network: nodes in different groups cannot reach each other
    /// until [`Simulation::heal`].
    pub fn partition(&mut self, group: impl Fn(usize) -> u8) {
        for (i, g) in self.engine.world.group.iter_mut().enumerate() {
            *g = group(i);
        }
        self.engine.world.partitioned = true;
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.engine.world.partitioned = false;
    }

    /// Connections set up from now on to or from `region` (an index into
    /// [`REGIONS`]) have `factor` times the latency.
    pub fn slow_region(&mut self, region: usize, factor: f64) {
        if let Some(f) = self.engine.world.region_factor.get_mut(region) {
            *f = factor;
        }
    }

    /// Node `n`'s mesh peers of `topic` (looked at, not charged as work).
    pub fn mesh(&mut self, n: usize, topic: &str) -> Vec<PeerId> {
        match self
            .engine
            .ask(n, |r| Command::MeshPeers(topic.to_string(), r))
        {
            Some(Reply::MeshPeers(m)) => m,
            _ => Vec::new(),
        }
    }

    /// Node `n`'s DHT table.
    pub fn routing_table(&mut self, n: usize) -> Vec<PeerRecord> {
        match self.engine.ask(n, Command::RoutingTable) {
            Some(Reply::RoutingTable(t)) => t,
            _ => Vec::new(),
        }
    }

    /// Duplicates node `n` received on `topic` so far (full copies beyond the first).
    pub fn duplicates(&mut self, n: usize, topic: &str) -> u64 {
        match self.engine.ask(n, Command::GossipMetrics) {
            Some(Reply::GossipMetrics(m)) => m.get(topic).map_or(0, |t| t.duplicates),
            _ => 0,
        }
    }

    /// Node `n`'s announced peers, as node indices.
    pub fn overlay(&self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self.engine.nodes[n].overlay.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Bytes all nodes wrote so far.
    pub fn bytes_written(&self) -> u64 {
        self.engine.nodes.iter().map(|n| n.bytes_written).sum()
    }

    /// Every gossip delivery so far, in order.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.engine.globals.deliveries
    }

    /// The trace of events so far.
    pub fn trace(&self) -> Trace {
        self.engine.globals.trace
    }

    /// The node with id `peer`.
    pub fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.engine.world.by_id.get(peer).copied()
    }

    /// Events handled so far, by kind (for profiling the simulator).
    pub fn event_counts(&self) -> Vec<(&'static str, u64)> {
        event::Ev::KINDS
            .iter()
            .copied()
            .zip(self.engine.counts)
            .collect()
    }

    /// Windows run so far, and of those the ones whose nodes ran on several
    /// threads (the rest had too few events to be worth it, or ran in strict
    /// order).
    pub fn windows(&self) -> (u64, u64) {
        self.engine.windows
    }

    /// Node `n`'s counters (looked at, not charged as work).
    pub fn metrics(&self, n: usize) -> crate::Metrics {
        self.engine.nodes[n].core.metrics()
    }

    /// The link model.
    pub fn model(&self) -> LinkModel {
        self.engine.world.model
    }
}
