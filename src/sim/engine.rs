//! The event loop of the simulator: one heap of events in virtual time, nodes
//! that handle their inputs one at a time, links that serialize and delay bytes.

use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the simulated wall clock starts (Unix seconds).
const SIM_EPOCH_SECS: u64 = 1_700_000_000;

use ring::rand::SystemRandom;

use crate::collections::Map;
use crate::config::{NodeConfig, PersistentPeer};
use crate::gossip::MessageId;
use crate::identity::{Keypair, PeerId};
use crate::node::command::{Command, Reply};
use crate::node::core::{ConnId, IoBudget, IoOutcome, NodeCore, Output, Work};
use crate::node::Event;
use crate::node::{complete_config, handshake_config};
use crate::rng::Rng;

use super::event::{Ev, Queued};
use super::link::{EndIo, Link};
use super::model::{CostModel, LinkModel, Placement};
use super::trace::Trace;

/// Bytes read from one connection per input before others get a turn; writes are
/// not bounded here, since the link model serializes them on the uplink anyway.
const IO_BUDGET: IoBudget = IoBudget {
    read: 256 * 1024,
    write: usize::MAX,
};

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

pub(crate) struct SimNode {
    pub(crate) core: NodeCore,
    pub(crate) id: PeerId,
    pub(crate) key: Arc<Keypair>,
    pub(crate) addr: SocketAddr,
    pub(crate) place: Placement,
    pub(crate) alive: bool,
    pub(crate) group: u8,
    pub(super) uplink_free: u64,
    pub(super) downlink_free: u64,
    pub(super) busy_until: u64,
    pub(super) timer: Option<Instant>,
    pub(super) conn_timers: Map<ConnId, Instant>,
    /// Connection id → link index.
    pub(crate) conns: Map<ConnId, usize>,
    pub(super) io_pending: crate::collections::Set<ConnId>,
    pub(super) work: Work,
    /// Announced peers (node indices): the overlay as this node sees it.
    pub(crate) overlay: crate::collections::Set<usize>,
    pub(crate) bytes_written: u64,
    pub(crate) replies: Vec<Reply>,
    pub(super) seqno: u64,
}

/// What a step wrote and asked for, released when its CPU time is over.
#[derive(Default)]
pub(super) struct StepEffects {
    writes: Vec<(ConnId, Vec<u8>)>,
    finished: Vec<ConnId>,
    dials: Vec<(ConnId, SocketAddr)>,
    read: usize,
    events: Vec<Event>,
    pub(super) touched: Vec<ConnId>,
    /// Connections whose I/O ran: their timers may have moved.
    serviced: Vec<ConnId>,
}

/// The simulator: see the module docs.
pub struct Engine {
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) links: Vec<Option<Link>>,
    pub(super) free_links: Vec<usize>,
    pub(super) by_addr: Map<SocketAddr, usize>,
    pub(crate) by_id: Map<PeerId, usize>,
    heap: BinaryHeap<Queued>,
    slab: Vec<Option<Ev>>,
    free_slots: Vec<u32>,
    seq: u64,
    pub(crate) now: u64,
    pub(super) base: Instant,
    pub(crate) rng: Rng,
    pub(crate) model: LinkModel,
    pub(crate) cost: CostModel,
    /// Latency multiplier per region (a slow region).
    pub(crate) region_factor: [f64; 9],
    pub(crate) partitioned: bool,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) trace: Trace,
    pub(super) secure_rng: SystemRandom,
    /// With shared cores: when each core is free.
    core_busy: Vec<u64>,
    /// Events handled, by kind (see [`Ev::kind`]).
    pub(crate) counts: [u64; 10],
}

pub(super) fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Engine {
    pub(crate) fn new(seed: u64, model: LinkModel, cost: CostModel) -> Self {
        Engine {
            nodes: Vec::new(),
            links: Vec::new(),
            free_links: Vec::new(),
            by_addr: Map::default(),
            by_id: Map::default(),
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free_slots: Vec::new(),
            seq: 0,
            now: 0,
            base: Instant::now(),
            rng: Rng::new(seed),
            model,
            cost,
            region_factor: [1.0; 9],
            partitioned: false,
            deliveries: Vec::new(),
            trace: Trace::default(),
            secure_rng: SystemRandom::new(),
            counts: [0; 10],
            core_busy: vec![0; cost.shared_cores],
        }
    }

    /// When node `n`'s CPU (its own, or the core it shares) is free.
    fn busy_until(&self, n: usize) -> u64 {
        match self.cost.shared_cores {
            0 => self.nodes[n].busy_until,
            cores => self.core_busy[n % cores],
        }
    }

    pub(crate) fn instant(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    /// The simulated wall clock at virtual time `t`: every node's clock agrees.
    pub(crate) fn wall(&self, t: u64) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH
            + Duration::from_secs(SIM_EPOCH_SECS)
            + Duration::from_nanos(t)
    }

    pub(crate) fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(ev);
                s
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Queued {
            at,
            seq: self.seq,
            slot,
        });
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
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        seed[8..16].copy_from_slice(&(index as u64).to_le_bytes());
        let key = Arc::new(Keypair::from_seed(seed));
        config.listen = vec![addr];
        config.seed = self.rng.next_u64();
        config.bootstrap = bootstrap
            .iter()
            .map(|&b| PersistentPeer {
                addr: self.nodes[b].addr,
                id: Some(self.nodes[b].id),
            })
            .collect();
        complete_config(&mut config);
        let handshake = match handshake_config(&config, &[addr]) {
            Ok(h) => h,
            Err(e) => panic!("simulated node settings are invalid: {e}"),
        };
        let place = self.model.place(&mut self.rng);
        let t = self.now.max(nanos(start));
        let mut core = NodeCore::new(
            Arc::new(config),
            Arc::new(handshake),
            key.clone(),
            None,
            self.secure_rng.clone(),
            self.instant(t),
            SIM_EPOCH_SECS + t / 1_000_000_000,
        );
        core.handle_wall_clock(self.instant(t), self.wall(t));
        let id = key.peer_id();
        self.nodes.push(SimNode {
            core,
            id,
            key,
            addr,
            place,
            alive: true,
            group: 0,
            uplink_free: 0,
            downlink_free: 0,
            busy_until: 0,
            timer: None,
            conn_timers: Map::default(),
            conns: Map::default(),
            io_pending: Default::default(),
            work: Work::default(),
            overlay: Default::default(),
            bytes_written: 0,
            replies: Vec::new(),
            seqno: 1,
        });
        self.by_addr.insert(addr, index);
        self.by_id.insert(id, index);
        self.schedule(t, Ev::Start(index));
        index
    }

    /// The next publish sequence number of `node`.
    pub(crate) fn next_seqno(&mut self, node: usize) -> u64 {
        let n = &mut self.nodes[node];
        n.seqno += 1;
        n.seqno
    }

    /// Runs events until virtual time `until` (or the heap runs dry).
    pub(crate) fn run_until(&mut self, until: u64) {
        while let Some(top) = self.heap.peek() {
            if top.at > until {
                break;
            }
            let Some(q) = self.heap.pop() else { break };
            self.now = q.at;
            let Some(ev) = self.slab[q.slot as usize].take() else {
                continue;
            };
            self.free_slots.push(q.slot);
            if let Some(n) = ev.node(&self.links) {
                if !self.nodes[n].alive {
                    continue;
                }
                // A node handles one input at a time: later ones wait for its CPU.
                let busy = self.busy_until(n);
                if busy > q.at {
                    let at = busy;
                    self.schedule(at, ev);
                    continue;
                }
            }
            self.dispatch(ev);
        }
        self.now = self.now.max(until);
    }

    fn dispatch(&mut self, ev: Ev) {
        let now = self.instant(self.now);
        self.counts[ev.kind()] += 1;
        match ev {
            Ev::Start(n) => self.step(n, |core, _| core.start(now)),
            Ev::NodeTimer(n) => {
                if self.nodes[n].timer.is_some_and(|t| t <= now) {
                    self.nodes[n].timer = None;
                    self.step(n, |core, _| core.handle_timeout(now));
                }
            }
            Ev::ConnTimer(n, c) => {
                if self.nodes[n].conn_timers.get(&c).is_some_and(|t| *t <= now) {
                    self.nodes[n].conn_timers.remove(&c);
                    self.step(n, |core, fx| {
                        if core.handle_conn_timeout(c, now) {
                            fx.finished.push(c);
                        } else {
                            fx.touched.push(c);
                        }
                    });
                }
            }
            Ev::Io(n, c) => {
                self.nodes[n].io_pending.remove(&c);
                self.step(n, |_, fx| fx.touched.push(c));
            }
            Ev::Command(n, cmd) => self.step(n, |core, _| core.handle_command(cmd, now)),
            Ev::Accept(l) => self.accept(l),
            Ev::Connected(l) => {
                let Some(link) = self.links[l].as_ref() else {
                    return;
                };
                let (n, Some(c)) = link.ends[0] else { return };
                self.step(n, |core, fx| {
                    core.handle_connected(c);
                    fx.touched.push(c);
                });
            }
            Ev::Refused(l) => {
                let Some(link) = self.links[l].take() else {
                    return;
                };
                self.free_links.push(l);
                let (n, Some(c)) = link.ends[0] else { return };
                self.nodes[n].conns.remove(&c);
                self.step(n, |core, _| {
                    core.handle_dial_failed(c, std::io::ErrorKind::ConnectionRefused, now)
                });
            }
            Ev::Arrive {
                link,
                dir,
                data,
                eof,
            } => self.arrive(link, dir, data, eof),
            Ev::Land {
                link,
                dir,
                data,
                eof,
            } => self.land(link, dir, data, eof),
        }
    }

    /// Runs `input` on node `n` and everything it sets off, charges its CPU time,
    /// and releases what it wrote and asked for when that time is over.
    pub(super) fn step(&mut self, n: usize, input: impl FnOnce(&mut NodeCore, &mut StepEffects)) {
        let now = self.instant(self.now);
        let mut fx = StepEffects::default();
        input(&mut self.nodes[n].core, &mut fx);
        let mut written = 0;
        let mut rounds = 0;
        loop {
            let touched = std::mem::take(&mut fx.touched);
            for c in touched {
                written += self.service(n, c, now, &mut fx);
            }
            let mut released = Vec::new();
            while let Some(out) = self.nodes[n].core.poll_output() {
                match out {
                    Output::Dial { conn, addr, .. } => fx.dials.push((conn, addr)),
                    Output::Wake(c) => fx.touched.push(c),
                    Output::Event { event, release } => {
                        // The application takes every event at once.
                        released.extend(release);
                        fx.events.push(event);
                    }
                    Output::Reply { reply, .. } => self.nodes[n].replies.push(reply),
                    Output::PeerUp { peer, .. } => {
                        if let Some(&p) = self.by_id.get(&peer) {
                            self.nodes[n].overlay.insert(p);
                        }
                    }
                    Output::PeerDown { peer, .. } => {
                        if let Some(p) = self.by_id.get(&peer) {
                            self.nodes[n].overlay.remove(p);
                        }
                    }
                    Output::Dequeued { .. } => {}
                }
            }
            for r in released {
                self.nodes[n].core.handle_released(r);
            }
            rounds += 1;
            if fx.touched.is_empty() || rounds > 1000 {
                break;
            }
        }
        let node = &mut self.nodes[n];
        let work = node.core.poll_work();
        let cost = self.cost.charge(
            fx.read + written,
            fx.writes.len(),
            work.signature_checks - node.work.signature_checks,
            work.handshakes - node.work.handshakes,
        );
        node.work = work;
        let done = self.now + nanos(cost);
        node.busy_until = done;
        if self.cost.shared_cores > 0 {
            self.core_busy[n % self.cost.shared_cores] = done;
        }
        node.bytes_written += written as u64;
        self.release(n, done, fx);
    }

    /// Reads and writes connection `c` of node `n`; returns the bytes written.
    fn service(&mut self, n: usize, c: ConnId, now: Instant, fx: &mut StepEffects) -> usize {
        let node = &mut self.nodes[n];
        let Some(&l) = node.conns.get(&c) else {
            // Not (or no longer) a connection with a link: a dial not yet out, or
            // one whose entry is gone.
            return 0;
        };
        let Some(link) = self.links[l].as_mut() else {
            return 0;
        };
        let end = link.end_of(n, c);
        let [s0, s1] = &mut link.streams;
        let (incoming, outgoing) = if end == 0 { (s1, s0) } else { (s0, s1) };
        let mut written = Vec::new();
        let mut io = EndIo {
            incoming,
            outgoing,
            written: &mut written,
            read: 0,
        };
        let outcome: IoOutcome = node.core.handle_io(c, &mut io, IO_BUDGET, now);
        fx.serviced.push(c);
        let read = io.read;
        fx.read += read;
        if outcome.more_input && node.io_pending.insert(c) {
            let at = self.now;
            self.schedule(at, Ev::Io(n, c));
        }
        // Room opened for a sender that waited: it hears after a one-way trip.
        let link = self.links[l].as_mut().expect("link exists");
        let other = link.ends[1 - end];
        let back = link.latency;
        let incoming = &mut link.streams[1 - end];
        if read > 0 && incoming.sender_blocked {
            incoming.sender_blocked = false;
            if let (o, Some(oc)) = other {
                let at = self.now + nanos(back);
                self.schedule(at, Ev::Io(o, oc));
            }
        }
        let len = written.len();
        if len > 0 {
            fx.writes.push((c, written));
        }
        if outcome.finished {
            fx.finished.push(c);
        }
        len
    }

    /// What a step produced takes effect at `at`, when its CPU time is over.
    fn release(&mut self, n: usize, at: u64, mut fx: StepEffects) {
        for event in fx.events {
            self.record(n, at, event);
        }
        for (c, bytes) in fx.writes {
            if let Some(&l) = self.nodes[n].conns.get(&c) {
                self.transmit(n, c, l, bytes, false, at);
            }
        }
        for c in fx.finished {
            self.nodes[n].conn_timers.remove(&c);
            if let Some(l) = self.nodes[n].conns.remove(&c) {
                self.close_end(n, c, l, at);
            }
        }
        for (c, addr) in fx.dials {
            self.dial(n, c, addr, at);
            // Its connect deadline runs from now.
            fx.serviced.push(c);
        }
        // Re-arm the node's timers.
        let node = &mut self.nodes[n];
        let next = node.core.poll_timeout();
        if next.is_some() && next != node.timer {
            node.timer = next;
            if let Some(t) = next {
                let t = self.nanos_of(t).max(at);
                self.schedule(t, Ev::NodeTimer(n));
            }
        }
        fx.serviced.sort_unstable();
        fx.serviced.dedup();
        for c in fx.serviced {
            if !self.nodes[n].conns.contains_key(&c) {
                continue;
            }
            let node = &mut self.nodes[n];
            let next = node.core.poll_conn_timeout(c);
            if next.is_some() && next != node.conn_timers.get(&c).copied() {
                if let Some(t) = next {
                    node.conn_timers.insert(c, t);
                    let t = self.nanos_of(t).max(at);
                    self.schedule(t, Ev::ConnTimer(n, c));
                }
            }
        }
    }

    fn nanos_of(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.base))
    }

    fn record(&mut self, n: usize, at: u64, event: Event) {
        self.trace.add(at, n, &event);
        if let Event::Gossip(g) = event {
            self.deliveries.push(Delivery {
                at: Duration::from_nanos(at),
                node: n,
                id: g.id,
                hops: g.hops,
                from: g.from,
            });
        }
    }

    /// Asks node `n` for something, without charging it CPU (the simulation looks).
    pub(crate) fn ask(&mut self, n: usize, cmd: impl FnOnce(u64) -> Command) -> Option<Reply> {
        let now = self.instant(self.now);
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
