//! What the simulator's queues hold: the kinds of event, each owned by the node
//! that handles it, and the key that orders them in virtual time.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::node::command::Command;
use crate::node::core::ConnId;

pub(crate) enum Ev {
    Start(usize),
    NodeTimer(usize),
    ConnTimer(usize, ConnId),
    /// Service a connection: read what arrived, write what waits.
    Io(usize, ConnId),
    /// The dialer's SYN reaches the acceptor `node`.
    Accept {
        node: usize,
        dialer: usize,
        dialer_conn: ConnId,
        latency: Duration,
    },
    /// The acceptor's answer reaches the dialer `node`.
    Connected {
        node: usize,
        conn: ConnId,
        acceptor: usize,
        peer_conn: ConnId,
        latency: Duration,
    },
    /// Refused: the dialer `node` hears of it.
    Refused {
        node: usize,
        conn: ConnId,
    },
    /// A segment reaches the receiver's downlink (`eof`: the sender's FIN).
    Arrive {
        node: usize,
        conn: ConnId,
        data: Vec<u8>,
        eof: bool,
    },
    /// A segment is through the downlink: into the receiver's inbox.
    Land {
        node: usize,
        conn: ConnId,
        data: Vec<u8>,
        eof: bool,
    },
    /// The receiver read `bytes`: the sender's window opens by as much (its ACK).
    Credit {
        node: usize,
        conn: ConnId,
        bytes: usize,
    },
    /// The peer closed: writes now fail, as after a TCP reset.
    Reset {
        node: usize,
        conn: ConnId,
    },
    Command(usize, Command),
}

impl Ev {
    /// Names of the kinds, for `Engine::counts`.
    pub(crate) const KINDS: [&'static str; 12] = [
        "start",
        "node_timer",
        "conn_timer",
        "io",
        "accept",
        "connected",
        "refused",
        "arrive",
        "land",
        "command",
        "credit",
        "reset",
    ];

    pub(crate) fn kind(&self) -> usize {
        match self {
            Ev::Start(_) => 0,
            Ev::NodeTimer(_) => 1,
            Ev::ConnTimer(..) => 2,
            Ev::Io(..) => 3,
            Ev::Accept { .. } => 4,
            Ev::Connected { .. } => 5,
            Ev::Refused { .. } => 6,
            Ev::Arrive { .. } => 7,
            Ev::Land { .. } => 8,
            Ev::Command(..) => 9,
            Ev::Credit { .. } => 10,
            Ev::Reset { .. } => 11,
        }
    }

    /// The node that handles it: the only node whose state it touches.
    pub(super) fn node(&self) -> usize {
        match self {
            Ev::Start(n) | Ev::NodeTimer(n) | Ev::ConnTimer(n, _) | Ev::Io(n, _) => *n,
            Ev::Command(n, _) => *n,
            Ev::Accept { node, .. }
            | Ev::Connected { node, .. }
            | Ev::Refused { node, .. }
            | Ev::Arrive { node, .. }
            | Ev::Land { node, .. }
            | Ev::Credit { node, .. }
            | Ev::Reset { node, .. } => *node,
        }
    }

    /// Whether it runs on the node's CPU (network events take none: they wait
    /// for no one).
    pub(super) fn takes_cpu(&self) -> bool {
        !matches!(
            self,
            Ev::Arrive { .. } | Ev::Land { .. } | Ev::Credit { .. } | Ev::Reset { .. }
        )
    }
}

/// Orders events: virtual time, then who scheduled it and that one's count.
/// A node's own counter (not a global one) breaks ties, so the order does not
/// depend on how the nodes were spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) at: u64,
    /// The node that scheduled it, or [`Key::ENGINE`].
    pub(super) origin: u32,
    pub(super) seq: u64,
}

impl Key {
    /// Origin of what the simulation itself schedules (starts, commands).
    pub(super) const ENGINE: u32 = u32::MAX;
}

/// A heap entry: small, so the heap moves little; the event waits in a slab.
struct Queued {
    key: Key,
    slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // A min-heap on the key.
        o.key.cmp(&self.key)
    }
}

/// A min-queue of events by [`Key`].
#[derive(Default)]
pub(super) struct Queue {
    heap: BinaryHeap<Queued>,
    slab: Vec<Option<Ev>>,
    free_slots: Vec<u32>,
}

impl Queue {
    pub(super) fn push(&mut self, key: Key, ev: Ev) {
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
        self.heap.push(Queued { key, slot });
    }

    /// When the earliest event is due.
    pub(super) fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|q| q.key.at)
    }

    pub(super) fn pop(&mut self) -> Option<(Key, Ev)> {
        loop {
            let q = self.heap.pop()?;
            let ev = self.slab[q.slot as usize].take();
            self.free_slots.push(q.slot);
            if let Some(ev) = ev {
                return Some((q.key, ev));
            }
        }
    }
}
