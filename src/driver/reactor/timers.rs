//! The loop's timer heap: each node's and each connection's next deadline, and
//! running the ones that are due.

use std::cmp::Reverse;
use std::time::Instant;

use super::{Kind, Reactor};

/// Whose deadline a heap entry is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A node's (its core's next timeout).
    Node(usize),
    /// A connection's, by socket token.
    Sock(usize),
}

impl Reactor {
    /// Keeps the node's timer in the heap in line with its next deadline.
    pub(super) fn schedule_node(&mut self, node: usize, now: Instant) {
        let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
            return;
        };
        let at = slot.next_timeout(now);
        if at.is_some() && at != slot.timer {
            slot.timer = at;
            if let Some(at) = at {
                self.timers.push(Reverse((at, Timer::Node(node))));
            }
        }
    }

    pub(super) fn schedule_sock(&mut self, token: usize) {
        let Some(sock) = self.sockets.get_mut(token).and_then(|s| s.as_mut()) else {
            return;
        };
        let Kind::Conn { id, .. } = sock.kind else {
            return;
        };
        let Some(slot) = self.nodes.get(sock.node).and_then(|n| n.as_ref()) else {
            return;
        };
        let at = slot.core.poll_conn_timeout(id);
        if at != sock.timer {
            sock.timer = at;
            if let Some(at) = at {
                self.timers.push(Reverse((at, Timer::Sock(token))));
            }
        }
    }

    /// Runs the timers that were due when called; a timer re-armed in the past while
    /// running waits for the next turn, so no deadline can monopolise the loop.
    pub(super) fn fire_timers(&mut self, now: Instant, work: &mut Vec<usize>) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push((at, timer));
        }
        for (at, timer) in due {
            match timer {
                Timer::Sock(token) => {
                    let Some(sock) = self.sockets.get_mut(token).and_then(|s| s.as_mut()) else {
                        continue;
                    };
                    if sock.timer != Some(at) {
                        continue; // stale entry
                    }
                    sock.timer = None;
                    let node = sock.node;
                    let Kind::Conn { id, .. } = sock.kind else {
                        continue;
                    };
                    let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                        continue;
                    };
                    if slot.core.handle_conn_timeout(id, now) {
                        self.drop_socket(token);
                        self.after_node(node, now);
                    } else {
                        work.push(token);
                    }
                }
                Timer::Node(node) => {
                    let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                        continue;
                    };
                    if slot.timer != Some(at) {
                        continue;
                    }
                    slot.timer = None;
                    slot.handle_timeout(now);
                    self.after_node(node, now);
                }
            }
        }
    }
}
