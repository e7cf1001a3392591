//! The simulated network at one node: connection setup, the uplink and
//! downlink that serialize bytes, latency, the window's credit, partitions and
//! closes. Everything another node learns of goes out as an event at least one
//! link latency later.

use std::net::SocketAddr;
use std::time::Duration;

use crate::node::core::ConnId;

use super::engine::nanos;
use super::event::{Ev, Key};
use super::link::{End, SEGMENT};
use super::model::serialization;
use super::shard::Shard;

/// How long a segment sent across a partition is held: TCP retransmits it then.
const PARTITION_RETRY: u64 = 1_000_000_000;

impl Shard<'_> {
    /// The dialer's SYN reached node `n`: it accepts (or refuses) and answers.
    pub(super) fn accept(
        &mut self,
        n: usize,
        dialer: usize,
        dialer_conn: ConnId,
        latency: Duration,
    ) {
        // The acceptor sees the dialer's address with an ephemeral port.
        let ip = self.world.addrs[dialer].ip();
        let seen = SocketAddr::new(ip, 40_000 + (dialer_conn % 20_000) as u16);
        let now = self.world.instant(self.now);
        let mut accepted = None;
        self.step(n, |core, fx| {
            accepted = core.handle_accepted(seen, now);
            fx.touched.extend(accepted);
        });
        let at = self.now + nanos(latency);
        match accepted {
            Some(c) => {
                let end = End::new(dialer, Some(dialer_conn), latency);
                self.node(n).ends.insert(c, end);
                if self.world.reachable(n, dialer) {
                    let ev = Ev::Connected {
                        node: dialer,
                        conn: dialer_conn,
                        acceptor: n,
                        peer_conn: c,
                        latency,
                    };
                    self.schedule(n, at, ev);
                }
            }
            None => {
                let ev = Ev::Refused {
                    node: dialer,
                    conn: dialer_conn,
                };
                self.schedule(n, at, ev);
            }
        }
    }

    /// The answer of `acceptor` (its connection `peer_conn`) reached dialer `n`.
    pub(super) fn connected(
        &mut self,
        n: usize,
        c: ConnId,
        acceptor: usize,
        peer_conn: ConnId,
        latency: Duration,
    ) {
        if let Some(end) = self.node(n).ends.get_mut(&c) {
            end.peer_conn = Some(peer_conn);
            self.step(n, |core, fx| {
                core.handle_connected(c);
                fx.touched.push(c);
            });
            return;
        }
        // The dialer gave up before the answer came: it resets the connection,
        // which the acceptor reads as its end.
        let at = self.now + nanos(latency);
        let eof = Ev::Land {
            node: acceptor,
            conn: peer_conn,
            data: Vec::new(),
            eof: true,
        };
        self.schedule(n, at, eof);
        let reset = Ev::Reset {
            node: acceptor,
            conn: peer_conn,
        };
        self.schedule(n, at, reset);
    }

    /// Puts `bytes` from node `n`'s connection `c` on the wire at `at`: through
    /// `n`'s uplink (FIFO over all its connections), then the link's latency.
    pub(super) fn transmit(&mut self, n: usize, c: ConnId, bytes: Vec<u8>, eof: bool, at: u64) {
        let node = self.node(n);
        let Some(end) = node.ends.get(&c) else {
            return;
        };
        let Some(peer_conn) = end.peer_conn else {
            return; // not connected yet: nobody reads it
        };
        let (peer, latency) = (end.peer, nanos(end.latency));
        let up = self.world.place[n].up;
        let mut segments: Vec<Vec<u8>> = if bytes.len() <= SEGMENT {
            vec![bytes]
        } else {
            bytes.chunks(SEGMENT).map(<[u8]>::to_vec).collect()
        };
        let last = segments.len() - 1;
        for (i, data) in segments.drain(..).enumerate() {
            let node = self.node(n);
            let start = node.uplink_free.max(at);
            let done = start + nanos(serialization(data.len(), up));
            node.uplink_free = done;
            let ev = Ev::Arrive {
                node: peer,
                conn: peer_conn,
                data,
                eof: eof && i == last,
            };
            self.schedule(n, done + latency, ev);
        }
    }

    /// A segment reached node `n`'s downlink.
    pub(super) fn arrive(&mut self, key: Key, n: usize, c: ConnId, data: Vec<u8>, eof: bool) {
        let now = self.now;
        let world = self.world;
        let node = self.node(n);
        let Some(end) = node.ends.get_mut(&c) else {
            return; // closed here: discarded
        };
        let ev = Ev::Arrive {
            node: n,
            conn: c,
            data,
            eof,
        };
        if world.partitioned && world.group[end.peer] != world.group[n] {
            // Lost in the partition; TCP retransmits it: it arrives after healing,
            // and what follows it on this connection waits behind it.
            end.held_until = now + PARTITION_RETRY;
            let at = end.held_until;
            return self.push(Key { at, ..key }, ev);
        }
        if end.held_until > now {
            let at = end.held_until;
            return self.push(Key { at, ..key }, ev);
        }
        let Ev::Arrive { data, .. } = ev else { return };
        let start = node.downlink_free.max(now);
        let done = start + nanos(serialization(data.len(), world.place[n].down));
        node.downlink_free = done;
        let ev = Ev::Land {
            node: n,
            conn: c,
            data,
            eof,
        };
        self.push(Key { at: done, ..key }, ev);
    }

    /// A segment is through node `n`'s downlink: into the inbox.
    pub(super) fn land(&mut self, n: usize, c: ConnId, data: Vec<u8>, eof: bool) {
        let node = self.node(n);
        let Some(end) = node.ends.get_mut(&c) else {
            return;
        };
        end.inbox.extend(data);
        end.eof |= eof;
        if node.io_pending.insert(c) {
            let at = self.now;
            self.schedule(n, at, Ev::Io(n, c));
        }
    }

    /// The peer read `bytes` of what node `n` wrote on `c`.
    pub(super) fn credit(&mut self, n: usize, c: ConnId, bytes: usize) {
        if let Some(end) = self.node(n).ends.get_mut(&c) {
            end.outstanding = end.outstanding.saturating_sub(bytes);
            self.wake_blocked(n, c);
        }
    }

    /// Node `n`'s connection `c` waited for room: it gets a turn now.
    pub(super) fn wake_blocked(&mut self, n: usize, c: ConnId) {
        let node = self.node(n);
        let Some(end) = node.ends.get_mut(&c) else {
            return;
        };
        if end.sender_blocked {
            end.sender_blocked = false;
            if node.io_pending.insert(c) {
                let at = self.now;
                self.schedule(n, at, Ev::Io(n, c));
            }
        }
    }

    /// Node `n` is done with connection `c` at `at`: the peer reads to the end
    /// (the FIN follows the bytes), and its writes fail once it hears.
    pub(super) fn close(&mut self, n: usize, c: ConnId, at: u64) {
        self.transmit(n, c, Vec::new(), true, at);
        let Some(end) = self.node(n).ends.remove(&c) else {
            return;
        };
        if let Some(pc) = end.peer_conn {
            let ev = Ev::Reset {
                node: end.peer,
                conn: pc,
            };
            self.schedule(n, at + nanos(end.latency), ev);
        }
    }

    /// Every connection of node `n` ends at `at` (a crash or an exit).
    pub(super) fn close_all(&mut self, n: usize, at: u64) {
        let mut conns: Vec<ConnId> = self.node(n).ends.keys().copied().collect();
        conns.sort_unstable();
        for c in conns {
            self.node(n).conn_timers.remove(&c);
            self.close(n, c, at);
        }
    }
}
