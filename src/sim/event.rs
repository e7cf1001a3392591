//! What the simulator's heap holds: the kinds of event, and the small entry that
//! orders them in virtual time.

use std::cmp::Ordering as CmpOrdering;

use crate::node::command::Command;
use crate::node::core::ConnId;

use super::link::Link;

pub(crate) enum Ev {
    Start(usize),
    NodeTimer(usize),
    ConnTimer(usize, ConnId),
    /// Service a connection: read what arrived, write what waits.
    Io(usize, ConnId),
    /// The dialer's SYN reaches the acceptor.
    Accept(usize),
    /// The acceptor's answer reaches the dialer.
    Connected(usize),
    /// Refused: the dialer hears of it.
    Refused(usize),
    /// A segment reaches the receiver's downlink (`eof`: the sender's FIN).
    Arrive {
        link: usize,
        dir: usize,
        data: Vec<u8>,
        eof: bool,
    },
    /// A segment is through the downlink: into the receiver's inbox.
    Land {
        link: usize,
        dir: usize,
        data: Vec<u8>,
        eof: bool,
    },
    Command(usize, Command),
}

impl Ev {
    /// Names of the kinds, for [`Engine::counts`].
    pub(crate) const KINDS: [&'static str; 10] = [
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
    ];

    pub(crate) fn kind(&self) -> usize {
        match self {
            Ev::Start(_) => 0,
            Ev::NodeTimer(_) => 1,
            Ev::ConnTimer(..) => 2,
            Ev::Io(..) => 3,
            Ev::Accept(_) => 4,
            Ev::Connected(_) => 5,
            Ev::Refused(_) => 6,
            Ev::Arrive { .. } => 7,
            Ev::Land { .. } => 8,
            Ev::Command(..) => 9,
        }
    }

    /// The node whose CPU handles it, if any (network events take no CPU).
    pub(super) fn node(&self, links: &[Option<Link>]) -> Option<usize> {
        match self {
            Ev::Start(n) | Ev::NodeTimer(n) | Ev::ConnTimer(n, _) | Ev::Io(n, _) => Some(*n),
            Ev::Command(n, _) => Some(*n),
            Ev::Accept(l) => links.get(*l)?.as_ref().map(|l| l.ends[1].0),
            Ev::Connected(l) | Ev::Refused(l) => links.get(*l)?.as_ref().map(|l| l.ends[0].0),
            Ev::Arrive { .. } | Ev::Land { .. } => None,
        }
    }
}

/// A heap entry: small, so the heap moves little; the event waits in a slab.
pub(super) struct Queued {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
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
        // A min-heap on (time, order of scheduling).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}
