//! A set of nodes running their events: all of them in one queue (sequential),
//! or some of them for one window on a thread of their own. A shard touches only
//! its own nodes; events for other nodes (or past the window) and what concerns
//! the whole simulation (dials, which draw from the one generator; what the
//! applications saw) leave it, to be merged in key order.

use std::time::Instant;

use crate::node::core::{ConnId, IoBudget, IoOutcome, NodeCore, Output};
use crate::node::Event;

use super::engine::{nanos, Globals, SimNode, World};
use super::event::{Ev, Key, Queue};
use super::link::EndIo;

/// Bytes read from one connection per input before others get a turn; writes are
/// not bounded here, since the link model serializes them on the uplink anyway.
const IO_BUDGET: IoBudget = IoBudget {
    read: 256 * 1024,
    write: usize::MAX,
};

/// What a step asks of the simulation as a whole.
pub(super) enum Effect {
    /// Node `node`'s SYN on `conn` leaves for `target`: the latency is drawn and
    /// the accept scheduled with `key` (its time the SYN's departure).
    Dial {
        node: usize,
        conn: ConnId,
        target: usize,
        key: Key,
    },
    /// Node `node`'s application got `event` at `at`.
    Record { node: usize, at: u64, event: Event },
}

/// An effect with the key of the event that caused it and its place among
/// that event's effects: the order they are applied in.
pub(super) type Caused = (Key, u32, Effect);

/// What a step wrote and asked for, released when its CPU time is over.
#[derive(Default)]
pub(super) struct StepEffects {
    writes: Vec<(ConnId, Vec<u8>)>,
    pub(super) finished: Vec<ConnId>,
    dials: Vec<(ConnId, std::net::SocketAddr)>,
    read: usize,
    events: Vec<Event>,
    pub(super) touched: Vec<ConnId>,
    /// Connections whose I/O ran: their timers may have moved.
    serviced: Vec<ConnId>,
}

/// See the module docs.
pub(super) struct Shard<'a> {
    nodes: &'a mut [SimNode],
    /// Index of `nodes[0]`.
    first: usize,
    pub(super) world: &'a World,
    queue: &'a mut Queue,
    /// Events bound elsewhere or past the window.
    out: Vec<(Key, Ev)>,
    effects: Vec<Caused>,
    /// Events at or after this wait for the next window.
    end: u64,
    /// Sequential: every node here, one queue, effects applied at once.
    globals: Option<&'a mut Globals>,
    core_busy: &'a mut [u64],
    pub(super) now: u64,
    /// The event being handled: what it causes is ordered after it.
    trigger: Key,
    counts: [u64; 12],
}

impl<'a> Shard<'a> {
    /// All nodes, run in key order from `queue` until `end`.
    pub(super) fn whole(
        nodes: &'a mut [SimNode],
        world: &'a World,
        queue: &'a mut Queue,
        core_busy: &'a mut [u64],
        globals: &'a mut Globals,
        end: u64,
    ) -> Self {
        Shard {
            nodes,
            first: 0,
            world,
            queue,
            out: Vec::new(),
            effects: Vec::new(),
            end,
            globals: Some(globals),
            core_busy,
            now: 0,
            trigger: Key {
                at: 0,
                origin: Key::ENGINE,
                seq: 0,
            },
            counts: [0; 12],
        }
    }

    /// Nodes `first..first + nodes.len()` for one window ending at `end`.
    pub(super) fn window(
        nodes: &'a mut [SimNode],
        first: usize,
        world: &'a World,
        queue: &'a mut Queue,
        end: u64,
    ) -> Self {
        Shard {
            nodes,
            first,
            world,
            queue,
            out: Vec::new(),
            effects: Vec::new(),
            end,
            globals: None,
            core_busy: &mut [],
            now: 0,
            trigger: Key {
                at: 0,
                origin: Key::ENGINE,
                seq: 0,
            },
            counts: [0; 12],
        }
    }

    pub(super) fn counts(&self) -> [u64; 12] {
        self.counts
    }

    /// What leaves the shard: events, and effects with the key of their cause.
    pub(super) fn into_parts(self) -> (Vec<(Key, Ev)>, Vec<Caused>) {
        (self.out, self.effects)
    }

    pub(super) fn node(&mut self, n: usize) -> &mut SimNode {
        &mut self.nodes[n - self.first]
    }

    /// Schedules `ev` at `key`: here if it is this shard's to run now, else out.
    pub(super) fn push(&mut self, key: Key, ev: Ev) {
        let n = ev.node();
        let here = n >= self.first && n - self.first < self.nodes.len();
        if self.globals.is_some() || (here && key.at < self.end) {
            self.queue.push(key, ev);
        } else {
            self.out.push((key, ev));
        }
    }

    /// Schedules `ev`, caused by node `n`, at `at`.
    pub(super) fn schedule(&mut self, n: usize, at: u64, ev: Ev) {
        let key = self.node(n).key(n, at);
        self.push(key, ev);
    }

    fn effect(&mut self, effect: Effect) {
        let i = self.effects.len() as u32;
        self.effects.push((self.trigger, i, effect));
    }

    /// Runs events until the queue is empty or the next is due at `end`.
    pub(super) fn run(&mut self) {
        while self.queue.next_at().is_some_and(|at| at < self.end) {
            let Some((key, ev)) = self.queue.pop() else {
                break;
            };
            self.now = key.at;
            self.trigger = key;
            self.handle(key, ev);
            if let Some(globals) = self.globals.as_deref_mut() {
                let queue = &mut *self.queue;
                for (_, _, effect) in self.effects.drain(..) {
                    effect.apply(self.nodes, self.world, globals, &mut |k, ev| {
                        queue.push(k, ev)
                    });
                }
            }
        }
    }

    /// When node `n`'s CPU (its own, or the core it shares) is free.
    fn busy_until(&mut self, n: usize) -> u64 {
        match self.world.cost.shared_cores {
            0 => self.node(n).busy_until,
            cores => self.core_busy[n % cores],
        }
    }

    fn handle(&mut self, key: Key, ev: Ev) {
        let n = ev.node();
        if !self.world.alive[n] {
            return;
        }
        if ev.takes_cpu() {
            // A node handles one input at a time: later ones wait for its CPU.
            let busy = self.busy_until(n);
            if busy > key.at {
                self.push(Key { at: busy, ..key }, ev);
                return;
            }
        }
        self.counts[ev.kind()] += 1;
        self.dispatch(key, ev);
    }

    fn dispatch(&mut self, key: Key, ev: Ev) {
        let now = self.world.instant(self.now);
        match ev {
            Ev::Start(n) => self.step(n, |core, _| core.start(now)),
            Ev::NodeTimer(n) => {
                if self.node(n).timer.is_some_and(|t| t <= now) {
                    self.node(n).timer = None;
                    self.step(n, |core, _| core.handle_timeout(now));
                }
            }
            Ev::ConnTimer(n, c) => {
                if self.node(n).conn_timers.get(&c).is_some_and(|t| *t <= now) {
                    self.node(n).conn_timers.remove(&c);
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
                self.node(n).io_pending.remove(&c);
                self.step(n, |_, fx| fx.touched.push(c));
            }
            Ev::Command(n, cmd) => self.step(n, |core, _| core.handle_command(cmd, now)),
            Ev::Accept {
                node,
                dialer,
                dialer_conn,
                latency,
            } => self.accept(node, dialer, dialer_conn, latency),
            Ev::Connected {
                node,
                conn,
                acceptor,
                peer_conn,
                latency,
            } => self.connected(node, conn, acceptor, peer_conn, latency),
            Ev::Refused { node, conn } => {
                if self.node(node).ends.remove(&conn).is_some() {
                    self.step(node, |core, _| {
                        core.handle_dial_failed(conn, std::io::ErrorKind::ConnectionRefused, now)
                    });
                }
            }
            Ev::Arrive {
                node,
                conn,
                data,
                eof,
            } => self.arrive(key, node, conn, data, eof),
            Ev::Land {
                node,
                conn,
                data,
                eof,
            } => self.land(node, conn, data, eof),
            Ev::Credit { node, conn, bytes } => self.credit(node, conn, bytes),
            Ev::Reset { node, conn } => {
                if let Some(end) = self.node(node).ends.get_mut(&conn) {
                    end.peer_gone = true;
                    self.wake_blocked(node, conn);
                }
            }
        }
    }

    /// Runs `input` on node `n` and everything it sets off, charges its CPU time,
    /// and releases what it wrote and asked for when that time is over.
    pub(super) fn step(&mut self, n: usize, input: impl FnOnce(&mut NodeCore, &mut StepEffects)) {
        let now = self.world.instant(self.now);
        let mut fx = StepEffects::default();
        input(&mut self.node(n).core, &mut fx);
        let mut written = 0;
        let mut rounds = 0;
        loop {
            let touched = std::mem::take(&mut fx.touched);
            for c in touched {
                written += self.service(n, c, now, &mut fx);
            }
            let mut released = Vec::new();
            let world = self.world;
            let node = self.node(n);
            while let Some(out) = node.core.poll_output() {
                match out {
                    Output::Dial { conn, addr, .. } => fx.dials.push((conn, addr)),
                    Output::Wake(c) => fx.touched.push(c),
                    Output::Event { event, release } => {
                        // The application takes every event at once.
                        released.extend(release);
                        fx.events.push(event);
                    }
                    Output::Reply { reply, .. } => node.replies.push(reply),
                    Output::PeerUp { peer, .. } => {
                        if let Some(&p) = world.by_id.get(&peer) {
                            node.overlay.insert(p);
                        }
                    }
                    Output::PeerDown { peer, .. } => {
                        if let Some(p) = world.by_id.get(&peer) {
                            node.overlay.remove(p);
                        }
                    }
                    Output::Dequeued { .. } => {}
                }
            }
            for r in released {
                node.core.handle_released(r);
            }
            rounds += 1;
            if fx.touched.is_empty() || rounds > 1000 {
                break;
            }
        }
        let cost_model = self.world.cost;
        let start = self.now;
        let node = self.node(n);
        let work = node.core.poll_work();
        let cost = cost_model.charge(
            fx.read + written,
            fx.writes.len(),
            work.signature_checks - node.work.signature_checks,
            work.handshakes - node.work.handshakes,
        );
        node.work = work;
        let done = start + nanos(cost);
        node.busy_until = done;
        node.bytes_written += written as u64;
        if cost_model.shared_cores > 0 {
            self.core_busy[n % cost_model.shared_cores] = done;
        }
        self.release(n, done, fx);
    }

    /// Reads and writes connection `c` of node `n`; returns the bytes written.
    fn service(&mut self, n: usize, c: ConnId, now: Instant, fx: &mut StepEffects) -> usize {
        let node = self.node(n);
        let Some(end) = node.ends.get_mut(&c) else {
            // Not (or no longer) a connection with a link: a dial not yet out, or
            // one whose entry is gone.
            return 0;
        };
        let mut written = Vec::new();
        let mut io = EndIo {
            end,
            written: &mut written,
            read: 0,
        };
        let outcome: IoOutcome = node.core.handle_io(c, &mut io, IO_BUDGET, now);
        let read = io.read;
        let (peer, peer_conn, latency) = (end.peer, end.peer_conn, end.latency);
        fx.serviced.push(c);
        fx.read += read;
        let more = outcome.more_input && node.io_pending.insert(c);
        if more {
            let at = self.now;
            self.schedule(n, at, Ev::Io(n, c));
        }
        // What was read opens the sender's window when the ACK gets there.
        if let (true, Some(pc)) = (read > 0, peer_conn) {
            let at = self.now + nanos(latency);
            let credit = Ev::Credit {
                node: peer,
                conn: pc,
                bytes: read,
            };
            self.schedule(n, at, credit);
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
            self.effect(Effect::Record { node: n, at, event });
        }
        for (c, bytes) in fx.writes {
            self.transmit(n, c, bytes, false, at);
        }
        for c in fx.finished {
            self.node(n).conn_timers.remove(&c);
            self.close(n, c, at);
        }
        for (c, addr) in fx.dials {
            // Its connect deadline runs from now; with nobody at `addr`, it is
            // all that happens (the dial times out).
            fx.serviced.push(c);
            if let Some(&target) = self.world.by_addr.get(&addr) {
                self.node(n)
                    .ends
                    .insert(c, super::link::End::new(target, None, Default::default()));
                let key = self.node(n).key(n, at);
                self.effect(Effect::Dial {
                    node: n,
                    conn: c,
                    target,
                    key,
                });
            }
        }
        // Re-arm the node's timers.
        let world = self.world;
        let node = self.node(n);
        let next = node.core.poll_timeout();
        if next.is_some() && next != node.timer {
            node.timer = next;
            if let Some(t) = next {
                let t = world.nanos_of(t).max(at);
                self.schedule(n, t, Ev::NodeTimer(n));
            }
        }
        fx.serviced.sort_unstable();
        fx.serviced.dedup();
        for c in fx.serviced {
            let node = self.node(n);
            if !node.ends.contains_key(&c) {
                continue;
            }
            let next = node.core.poll_conn_timeout(c);
            if next.is_some() && next != node.conn_timers.get(&c).copied() {
                if let Some(t) = next {
                    node.conn_timers.insert(c, t);
                    let t = world.nanos_of(t).max(at);
                    self.schedule(n, t, Ev::ConnTimer(n, c));
                }
            }
        }
    }
}
