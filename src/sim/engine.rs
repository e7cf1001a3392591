//! The event loop of the simulator: one queue of events in virtual time, run in
//! windows as long as the shortest link latency (the lookahead). Within a window
//! no node can hear of another's work, so the nodes are split over threads and
//! each runs its own events; what they send each other, and what touches the
//! shared generator and trace, is merged after the window in a fixed order. The
//! result does not depend on the number of threads.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;

use crate::collections::Map;
use crate::config::{NodeConfig, PersistentPeer};
use crate::gossip::MessageId;
use crate::identity::{Keypair, PeerId};
use crate::node::command::{Command, Reply};
use crate::node::core::{ConnId, NodeCore, Output, Work};
use crate::node::Event;
use crate::node::{complete_config, handshake_config};
use crate::rng::Rng;

use super::event::{Ev, Key, Queue};
use super::link::End;
use super::model::{CostModel, LinkModel, Placement};
use super::shard::{Effect, Shard};
use super::trace::Trace;

/// Where the simulated wall clock starts (Unix seconds).
const SIM_EPOCH_SECS: u64 = 1_700_000_000;
/// A window with fewer events than this runs on the calling thread: starting
/// threads would cost more than it saves.
const PARALLEL_MIN_EVENTS: usize = 64;

/// A message handed to a node's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// When, in virtual time since the start.
    pub at: Duration,
    /// Which node.
    pub node: usize,
    /// The message.
    pub id: MessageId,
    /// Hops from its origin.
    pub hops: u32,
    /// The peer it came from.
    pub from: crate::identity::PeerId,
}

/// What only one node touches: its core, its ends of connections, its links'
/// queues and its timers.
pub(crate) struct SimNode {
    pub(crate) core: NodeCore,
    pub(crate) key: Arc<Keypair>,
    pub(super) uplink_free: u64,
    pub(super) downlink_free: u64,
    pub(super) busy_until: u64,
    pub(super) timer: Option<Instant>,
    pub(super) conn_timers: Map<ConnId, Instant>,
    /// This node's ends of its connections.
    pub(crate) ends: Map<ConnId, End>,
    pub(super) io_pending: crate::collections::Set<ConnId>,
    pub(super) work: Work,
    /// Announced peers (node indices): the overlay as this node sees it.
    pub(crate) overlay: crate::collections::Set<usize>,
    pub(crate) bytes_written: u64,
    pub(crate) replies: Vec<Reply>,
    pub(super) seqno: u64,
    /// Events this node scheduled: the tie-break of their keys.
    pub(super) scheduled: u64,
}

impl SimNode {
    /// A key for an event this node (index `n`) schedules at `at`.
    pub(super) fn key(&mut self, n: usize, at: u64) -> Key {
        self.scheduled += 1;
        Key {
            at,
            origin: n as u32,
            seq: self.scheduled,
        }
    }
}

/// What every node may read and none changes while events run: who is where,
/// who is alive, the models.
pub(crate) struct World {
    pub(crate) ids: Vec<PeerId>,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) place: Vec<Placement>,
    pub(crate) alive: Vec<bool>,
    pub(crate) group: Vec<u8>,
    pub(crate) by_addr: Map<SocketAddr, usize>,
    pub(crate) by_id: Map<PeerId, usize>,
    pub(crate) partitioned: bool,
    pub(crate) model: LinkModel,
    pub(crate) cost: CostModel,
    /// Latency multiplier per region (a slow region).
    pub(crate) region_factor: [f64; 9],
    pub(super) base: Instant,
}

impl World {
    pub(crate) fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    pub(super) fn nanos_of(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.base))
    }

    /// Whether `a` can reach `b`: `b` runs and no partition lies between them.
    pub(super) fn reachable(&self, a: usize, b: usize) -> bool {
        self.alive[b] && (!self.partitioned || self.group[a] == self.group[b])
    }

    /// The shortest one-way latency any connection can have: no node hears of
    /// another's work sooner, so windows this long can run nodes apart.
    fn lookahead(&self) -> u64 {
        if self.cost.shared_cores > 0 {
            return 0; // nodes that share a core wait for each other at once
        }
        let factor = self.region_factor.iter().copied().fold(1.0, f64::min);
        let mut least = Duration::MAX;
        for from in 0..self.region_factor.len() {
            for to in 0..self.region_factor.len() {
                least = least.min(self.model.base_latency(from, to));
            }
        }
        nanos(least.mul_f64(factor.max(0.0)))
    }
}

/// What the simulation as a whole keeps: the one generator and what was seen.
pub(crate) struct Globals {
    pub(crate) rng: Rng,
    pub(crate) trace: Trace,
    pub(crate) deliveries: Vec<Delivery>,
}

/// The simulator: see the module docs.
pub struct Engine {
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) world: World,
    pub(crate) globals: Globals,
    queue: Queue,
    /// Events the simulation itself scheduled: their keys' tie-break.
    seq: u64,
    pub(crate) now: u64,
    secure_rng: SystemRandom,
    /// With shared cores: when each core is free.
    core_busy: Vec<u64>,
    /// Threads that run a window's nodes.
    pub(crate) threads: usize,
    /// Run every event in one queue, in order (what windows must agree with).
    pub(crate) sequential: bool,
    /// Per-thread queues, kept for their capacity.
    scratch: Vec<Queue>,
    /// Events handled, by kind (see [`Ev::kind`]).
    pub(crate) counts: [u64; 12],
    /// Windows run, and of those the ones spread over threads.
    pub(crate) windows: (u64, u64),
}

pub(super) fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Engine {
    pub(crate) fn new(seed: u64, model: LinkModel, cost: CostModel) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Engine {
            nodes: Vec::new(),
            world: World {
                ids: Vec::new(),
                addrs: Vec::new(),
                place: Vec::new(),
                alive: Vec::new(),
                group: Vec::new(),
                by_addr: Map::default(),
                by_id: Map::default(),
                partitioned: false,
                model,
                cost,
                region_factor: [1.0; 9],
                base: Instant::now(),
            },
            globals: Globals {
                rng: Rng::new(seed),
                trace: Trace::default(),
                deliveries: Vec::new(),
            },
            queue: Queue::default(),
            seq: 0,
            now: 0,
            secure_rng: SystemRandom::new(),
            core_busy: vec![0; cost.shared_cores],
            threads,
            sequential: false,
            scratch: Vec::new(),
            counts: [0; 12],
            windows: (0, 0),
        }
    }

    /// The simulated wall clock at virtual time `t`: every node's clock agrees.
    pub(crate) fn wall(&self, t: u64) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH
            + Duration::from_secs(SIM_EPOCH_SECS)
            + Duration::from_nanos(t)
    }

    /// Schedules an event of the simulation's own (a start, a command).
    pub(crate) fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let key = Key {
            at,
            origin: Key::ENGINE,
            seq: self.seq,
        };
        self.queue.push(key, ev);
    }

    /// Adds a node at `addr` that starts at `start` (virtual), with `config`'s
    /// settings (its listen address, seed and bootstrap peers are filled in here).
    pub(crate) fn add_node(
        &mut self,
        mut config: NodeConfig,
        addr: SocketAddr,
        bootstrap: &[usize],
        start: Duration,
    ) -> usize {
        let index = self.nodes.len();
        let rng = &mut self.globals.rng;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        seed[8..16].copy_from_slice(&(index as u64).to_le_bytes());
        let key = Arc::new(Keypair::from_seed(seed));
        config.listen = vec![addr];
        config.seed = rng.next_u64();
        config.bootstrap = bootstrap
            .iter()
            .map(|&b| PersistentPeer {
                addr: self.world.addrs[b],
                id: Some(self.world.ids[b]),
            })
            .collect();
        complete_config(&mut config);
        let handshake = match handshake_config(&config, &[addr]) {
            Ok(h) => h,
            Err(e) => panic!("simulated node settings are invalid: {e}"),
        };
        let place = self.world.model.place(rng);
        let t = self.now.max(nanos(start));
        let mut core = NodeCore::new(
            Arc::new(config),
            Arc::new(handshake),
            key.clone(),
            None,
            self.secure_rng.clone(),
            self.world.instant(t),
            SIM_EPOCH_SECS + t / 1_000_000_000,
        );
        core.handle_wall_clock(self.world.instant(t), self.wall(t));
        let id = key.peer_id();
        self.nodes.push(SimNode {
            core,
            key,
            uplink_free: 0,
            downlink_free: 0,
            busy_until: 0,
            timer: None,
            conn_timers: Map::default(),
            ends: Map::default(),
            io_pending: Default::default(),
            work: Work::default(),
            overlay: Default::default(),
            bytes_written: 0,
            replies: Vec::new(),
            seqno: 1,
            scheduled: 0,
        });
        let world = &mut self.world;
        world.ids.push(id);
        world.addrs.push(addr);
        world.place.push(place);
        world.alive.push(true);
        world.group.push(0);
        world.by_addr.insert(addr, index);
        world.by_id.insert(id, index);
        self.schedule(t, Ev::Start(index));
        index
    }

    /// The next publish sequence number of `node`.
    pub(crate) fn next_seqno(&mut self, node: usize) -> u64 {
        let n = &mut self.nodes[node];
        n.seqno += 1;
        n.seqno
    }

    /// Runs events until virtual time `until` (or the queue runs dry).
    pub(crate) fn run_until(&mut self, until: u64) {
        let lookahead = self.world.lookahead();
        if self.sequential || lookahead == 0 {
            let mut shard = Shard::whole(
                &mut self.nodes,
                &self.world,
                &mut self.queue,
                &mut self.core_busy,
                &mut self.globals,
                until.saturating_add(1),
            );
            shard.run();
            add_counts(&mut self.counts, &shard.counts());
        } else {
            while let Some(first) = self.queue.next_at() {
                if first > until {
                    break;
                }
                let end = first.saturating_add(lookahead).min(until.saturating_add(1));
                self.run_window(end);
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs every event before `end`: the nodes split over threads, then what
    /// they produced merged in key order.
    fn run_window(&mut self, end: u64) {
        let threads = self.threads.clamp(1, self.nodes.len().max(1));
        let chunk = self.nodes.len().div_ceil(threads).max(1);
        self.scratch.resize_with(threads, Queue::default);
        let mut taken = 0;
        while self.queue.next_at().is_some_and(|at| at < end) {
            let Some((key, ev)) = self.queue.pop() else {
                break;
            };
            self.scratch[ev.node() / chunk].push(key, ev);
            taken += 1;
        }
        let world = &self.world;
        let mut shards: Vec<Shard<'_>> = self
            .nodes
            .chunks_mut(chunk)
            .zip(self.scratch.iter_mut())
            .enumerate()
            .map(|(i, (nodes, queue))| Shard::window(nodes, i * chunk, world, queue, end))
            .collect();
        self.windows.0 += 1;
        if threads == 1 || taken < PARALLEL_MIN_EVENTS {
            for shard in &mut shards {
                shard.run();
            }
        } else {
            self.windows.1 += 1;
            std::thread::scope(|s| {
                let mut rest = shards.iter_mut();
                let first = rest.next();
                let handles: Vec<_> = rest.map(|shard| s.spawn(move || shard.run())).collect();
                if let Some(shard) = first {
                    shard.run();
                }
                for h in handles {
                    if let Err(panic) = h.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
            });
        }
        let mut effects = Vec::new();
        let mut leaving = Vec::new();
        for shard in shards {
            add_counts(&mut self.counts, &shard.counts());
            let (out, fx) = shard.into_parts();
            leaving.extend(out);
            effects.extend(fx);
        }
        // What touches the generator and the trace, in the order one queue would
        // have run it.
        effects.sort_unstable_by_key(|(key, i, _)| (*key, *i));
        for (_, _, effect) in effects {
            effect.apply(
                &mut self.nodes,
                &self.world,
                &mut self.globals,
                &mut |k, ev| self.queue.push(k, ev),
            );
        }
        for (key, ev) in leaving {
            self.queue.push(key, ev);
        }
    }

    /// Node `n` stops at once (a crash or an exit): its peers see its
    /// connections end.
    pub(crate) fn kill(&mut self, n: usize) {
        let at = self.now;
        let mut shard = Shard::whole(
            &mut self.nodes,
            &self.world,
            &mut self.queue,
            &mut self.core_busy,
            &mut self.globals,
            at,
        );
        shard.close_all(n, at);
        self.world.alive[n] = false;
        self.world.by_addr.remove(&self.world.addrs[n]);
    }

    /// Asks node `n` for something, without charging it CPU (the simulation looks).
    pub(crate) fn ask(&mut self, n: usize, cmd: impl FnOnce(u64) -> Command) -> Option<Reply> {
        let now = self.world.instant(self.now);
        let node = &mut self.nodes[n];
        node.core.handle_command(cmd(1), now);
        // Replies come out at once; anything else stays queued for its next step.
        let mut reply = None;
        let mut others = Vec::new();
        while let Some(out) = node.core.poll_output() {
            match out {
                Output::Reply { reply: r, .. } => reply = Some(r),
                other => others.push(other),
            }
        }
        debug_assert!(others.is_empty(), "a query changed a node");
        reply
    }

    pub(crate) fn ipv4(index: usize) -> Ipv4Addr {
        // Each node in a /24 of its own.
        Ipv4Addr::new(10 + (index >> 16) as u8, (index >> 8) as u8, index as u8, 1)
    }
}

fn add_counts(total: &mut [u64; 12], more: &[u64; 12]) {
    for (t, m) in total.iter_mut().zip(more) {
        *t += m;
    }
}

impl Effect {
    /// Applies what a node's step asked of the simulation as a whole.
    pub(super) fn apply(
        self,
        nodes: &mut [SimNode],
        world: &World,
        globals: &mut Globals,
        push: &mut impl FnMut(Key, Ev),
    ) {
        match self {
            Effect::Record { node, at, event } => record(globals, node, at, event),
            Effect::Dial {
                node,
                conn,
                target,
                key,
            } => {
                let (from, to) = (world.place[node].region, world.place[target].region);
                let factor = world.region_factor[from].max(world.region_factor[to]);
                let latency = world
                    .model
                    .connection_latency(from, to, &mut globals.rng)
                    .mul_f64(factor);
                if let Some(end) = nodes[node].ends.get_mut(&conn) {
                    end.latency = latency;
                }
                if world.reachable(node, target) {
                    let key = Key {
                        at: key.at + nanos(latency),
                        ..key
                    };
                    push(
                        key,
                        Ev::Accept {
                            node: target,
                            dialer: node,
                            dialer_conn: conn,
                            latency,
                        },
                    );
                }
            }
        }
    }
}

fn record(globals: &mut Globals, n: usize, at: u64, event: Event) {
    globals.trace.add(at, n, &event);
    if let Event::Gossip(g) = event {
        globals.deliveries.push(Delivery {
            at: Duration::from_nanos(at),
            node: n,
            id: g.id,
            hops: g.hops,
            from: g.from,
        });
    }
}
