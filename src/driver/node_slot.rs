//! One node on the loop thread: its core, and what the core's outputs reach on the
//! application's side (the peer table handles read, the event queues, the threads
//! waiting for a reply). Everything shared with other threads lives here, not in
//! the core.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::SocketOptions;
use crate::node::command::{Command, Reply, RequestId};
use crate::node::core::{ConnId, NodeCore, Output};
use crate::node::delivery::{Delivery, NewQueue, Release};
use crate::node::reactor::ReactorError;
use crate::node::shared::{NodeShared, SharedPeer};
use crate::node::{Event, PeerInfo};

/// Hands a reply to the thread that waits for it.
pub(crate) type Replier = Box<dyn FnOnce(Reply) + Send>;

/// What a node's outputs ask of the loop itself.
#[derive(Default)]
pub(crate) struct LoopWork {
    pub(crate) dials: Vec<(ConnId, SocketAddr, Option<IpAddr>)>,
    pub(crate) wakes: Vec<ConnId>,
}

impl LoopWork {
    pub(crate) fn is_empty(&self) -> bool {
        self.dials.is_empty() && self.wakes.is_empty()
    }
}

pub(crate) struct NodeSlot {
    pub(crate) core: NodeCore,
    shared: Arc<NodeShared>,
    delivery: Delivery,
    replies: HashMap<RequestId, Replier>,
    pub(crate) socket: SocketOptions,
    pub(crate) timer: Option<Instant>,
    /// (token of each listener)
    pub(crate) listeners: Vec<usize>,
    /// Connection id → socket token.
    pub(crate) tokens: HashMap<ConnId, usize>,
    /// Shutdown finished: every connection is gone.
    pub(crate) finished: bool,
    /// A shutdown was handed to the core: new queues are refused.
    shutting_down: bool,
}

impl NodeSlot {
    pub(crate) fn new(
        core: NodeCore,
        shared: Arc<NodeShared>,
        delivery: Delivery,
        socket: SocketOptions,
    ) -> Self {
        NodeSlot {
            core,
            shared,
            delivery,
            replies: HashMap::new(),
            socket,
            timer: None,
            listeners: Vec::new(),
            tokens: HashMap::new(),
            finished: false,
            shutting_down: false,
        }
    }

    /// Hands the core a command from the application.
    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        if matches!(cmd, Command::Shutdown(_)) {
            self.shutting_down = true;
        }
        self.core.handle_command(cmd, now);
    }

    /// Someone waits for the reply to `request`.
    pub(crate) fn expect_reply(&mut self, request: RequestId, reply: Replier) {
        self.replies.insert(request, reply);
    }

    /// A new reactor or topic queue.
    pub(crate) fn add_queue(&mut self, queue: NewQueue) -> Result<(), ReactorError> {
        if self.shutting_down {
            return Err(ReactorError::Closed);
        }
        let mut released = Vec::new();
        let result = self.delivery.add_queue(queue, &mut released);
        for r in released {
            self.core.handle_released(r);
        }
        result
    }

    /// Takes every output the core has; returns what the loop must do.
    pub(crate) fn drain(&mut self) -> LoopWork {
        let mut work = LoopWork::default();
        let mut released: Vec<Release> = Vec::new();
        loop {
            while let Some(out) = self.core.poll_output() {
                self.apply(out, &mut work, &mut released);
            }
            if released.is_empty() {
                return work;
            }
            for r in released.drain(..) {
                self.core.handle_released(r);
            }
        }
    }

    fn apply(&mut self, out: Output, work: &mut LoopWork, released: &mut Vec<Release>) {
        match out {
            Output::Dial { conn, addr, local } => work.dials.push((conn, addr, local)),
            Output::Wake(conn) => work.wakes.push(conn),
            Output::Event { event, release } => {
                // Reactors hear of a peer before its messages and of its end after.
                match &event {
                    Event::PeerConnected {
                        peer,
                        addr,
                        direction,
                    } => {
                        let channels = self
                            .shared
                            .peers
                            .read()
                            .get(peer)
                            .map(|p| p.channels.clone())
                            .unwrap_or_default();
                        let info = PeerInfo {
                            id: *peer,
                            addr: *addr,
                            direction: *direction,
                            channels,
                        };
                        self.delivery.peer_added(info, released);
                    }
                    Event::PeerDisconnected { peer, reason } => {
                        self.delivery.peer_removed(*peer, reason, released)
                    }
                    _ => {}
                }
                self.delivery.deliver(event, release, released)
            }
            Output::Reply { request, reply } => {
                let reply = match reply {
                    Reply::Metrics(mut m) => {
                        m.waiting_events = self.delivery.waiting() as u64;
                        if self.delivery.dropped_control > 0 {
                            m.drops
                                .insert("event_queue_full", self.delivery.dropped_control);
                        }
                        Reply::Metrics(m)
                    }
                    Reply::ShutDown => {
                        self.finished = true;
                        Reply::ShutDown
                    }
                    other => other,
                };
                if let Some(replier) = self.replies.remove(&request) {
                    replier(reply);
                }
            }
            Output::PeerUp {
                peer,
                addr,
                direction,
                channels,
            } => {
                let mut peers = self.shared.peers.write();
                match peers.get_mut(&peer) {
                    Some(p) => {
                        p.addr = addr;
                        p.direction = direction;
                        p.channels = channels;
                    }
                    None => {
                        let queued = self.shared.new_queue_counts();
                        peers.insert(
                            peer,
                            SharedPeer {
                                addr,
                                direction,
                                channels,
                                queued,
                            },
                        );
                    }
                }
            }
            Output::PeerDown { peer, unsent } => {
                if let Some(p) = self.shared.peers.write().remove(&peer) {
                    for channel in unsent {
                        self.shared.dequeued(&p.queued, channel, 1);
                    }
                }
                // A sender waiting for this peer's queue learns it is gone.
                self.shared.room.ring();
            }
            Output::Dequeued { peer, channel, n } => {
                if let Some(p) = self.shared.peers.read().get(&peer) {
                    self.shared.dequeued(&p.queued, channel, n);
                }
            }
        }
    }

    /// When the node next needs its timer: the core's deadline or a delivery retry.
    pub(crate) fn next_timeout(&self, now: Instant) -> Option<Instant> {
        let retry = self.delivery.retry_in().map(|d| now + d);
        [self.core.poll_timeout(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// The node's timer fired.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        // The wall clock follows the system's, steps included (read here: the
        // core reads no clock). Both clocks are read together, not `now` (the
        // batch's start, maybe long ago under load) against the wall clock of now.
        let (at, wall) = (Instant::now(), std::time::SystemTime::now());
        self.core.handle_wall_clock(at, wall);
        node_timer(&mut self.core, &mut self.delivery, now);
    }
}

/// A node's timer: retry the events that wait for room in the application's
/// queues (their credit goes back), then the core's own deadlines if due.
pub(crate) fn node_timer(core: &mut NodeCore, delivery: &mut Delivery, now: Instant) {
    let mut released = Vec::new();
    delivery.flush(&mut released);
    for r in released {
        core.handle_released(r);
    }
    if core.poll_timeout().is_some_and(|t| t <= now) {
        core.handle_timeout(now);
    }
}
