//! The simulated network under the nodes: connection setup, uplinks and
//! downlinks that serialize bytes, latency, partitions, closes and crashes.

use std::net::SocketAddr;

use crate::node::core::ConnId;

use super::engine::{nanos, Engine};
use super::event::Ev;
use super::link::{Link, SEGMENT};
use super::model::serialization;

impl Engine {
    pub(super) fn dial(&mut self, n: usize, c: ConnId, addr: SocketAddr, at: u64) {
        let Some(&target) = self.by_addr.get(&addr) else {
            return; // nobody there: the dial times out
        };
        let (from, to) = (self.nodes[n].place.region, self.nodes[target].place.region);
        let factor = self.region_factor[from].max(self.region_factor[to]);
        let latency = self
            .model
            .connection_latency(from, to, &mut self.rng)
            .mul_f64(factor);
        let l = match self.free_links.pop() {
            Some(l) => l,
            None => {
                self.links.push(None);
                self.links.len() - 1
            }
        };
        self.links[l] = Some(Link::new((n, c), target, latency));
        self.nodes[n].conns.insert(c, l);
        if self.reachable(n, target) {
            self.schedule(at + nanos(latency), Ev::Accept(l));
        }
    }

    pub(super) fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[b].alive && (!self.partitioned || self.nodes[a].group == self.nodes[b].group)
    }

    pub(super) fn accept(&mut self, l: usize) {
        let Some(link) = self.links[l].as_ref() else {
            return;
        };
        let ((dialer, _), (n, _)) = (link.ends[0], link.ends[1]);
        if link.closed[0] {
            return;
        }
        let latency = link.latency;
        // The acceptor sees the dialer's address with an ephemeral port.
        let ip = self.nodes[dialer].addr.ip();
        let seen = SocketAddr::new(ip, 40_000 + (l % 20_000) as u16);
        let now = self.instant(self.now);
        let mut accepted = None;
        self.step(n, |core, fx| {
            accepted = core.handle_accepted(seen, now);
            fx.touched.extend(accepted);
        });
        let at = self.now + nanos(latency);
        match accepted {
            Some(c) => {
                if let Some(link) = self.links[l].as_mut() {
                    link.ends[1].1 = Some(c);
                }
                self.nodes[n].conns.insert(c, l);
                if self.reachable(n, dialer) {
                    self.schedule(at, Ev::Connected(l));
                }
            }
            None => self.schedule(at, Ev::Refused(l)),
        }
    }

    /// Puts `bytes` from node `n` on link `l` at `at`: through `n`'s uplink (FIFO
    /// over all its connections), then the link's latency.
    pub(super) fn transmit(
        &mut self,
        n: usize,
        c: ConnId,
        l: usize,
        bytes: Vec<u8>,
        eof: bool,
        at: u64,
    ) {
        let Some(link) = self.links[l].as_ref() else {
            return;
        };
        let dir = link.end_of(n, c);
        let latency = nanos(link.latency);
        let up = self.nodes[n].place.up;
        let mut segments: Vec<Vec<u8>> = if bytes.len() <= SEGMENT {
            vec![bytes]
        } else {
            bytes.chunks(SEGMENT).map(<[u8]>::to_vec).collect()
        };
        let last = segments.len() - 1;
        for (i, data) in segments.drain(..).enumerate() {
            let node = &mut self.nodes[n];
            let start = node.uplink_free.max(at);
            let end = start + nanos(serialization(data.len(), up));
            node.uplink_free = end;
            self.schedule(
                end + latency,
                Ev::Arrive {
                    link: l,
                    dir,
                    data,
                    eof: eof && i == last,
                },
            );
        }
    }

    pub(super) fn arrive(&mut self, l: usize, dir: usize, data: Vec<u8>, eof: bool) {
        let Some(link) = self.links[l].as_ref() else {
            return;
        };
        let (from, to) = (link.ends[dir].0, link.ends[1 - dir].0);
        if self.partitioned && self.nodes[from].group != self.nodes[to].group {
            // Lost in the partition; TCP would retransmit it: it arrives after healing.
            let at = self.now + 1_000_000_000;
            self.schedule(
                at,
                Ev::Arrive {
                    link: l,
                    dir,
                    data,
                    eof,
                },
            );
            return;
        }
        let node = &mut self.nodes[to];
        let start = node.downlink_free.max(self.now);
        let end = start + nanos(serialization(data.len(), node.place.down));
        node.downlink_free = end;
        self.schedule(
            end,
            Ev::Land {
                link: l,
                dir,
                data,
                eof,
            },
        );
    }

    pub(super) fn land(&mut self, l: usize, dir: usize, data: Vec<u8>, eof: bool) {
        let Some(link) = self.links[l].as_mut() else {
            return;
        };
        let stream = &mut link.streams[dir];
        stream.in_flight = stream.in_flight.saturating_sub(data.len());
        if stream.receiver_gone {
            return;
        }
        stream.inbox.extend(data);
        stream.eof |= eof;
        let (to, conn) = link.ends[1 - dir];
        let Some(conn) = conn else { return };
        if self.nodes[to].io_pending.insert(conn) {
            let at = self.now;
            self.schedule(at, Ev::Io(to, conn));
        }
    }

    /// Node `n` is done with its end of link `l`: the other side reads to the end.
    pub(super) fn close_end(&mut self, n: usize, c: ConnId, l: usize, at: u64) {
        let Some(link) = self.links[l].as_mut() else {
            return;
        };
        let end = link.end_of(n, c);
        link.closed[end] = true;
        link.streams[1 - end].receiver_gone = true;
        link.streams[1 - end].inbox.clear();
        if link.closed == [true, true] || link.ends[1].1.is_none() {
            if link.closed == [true, true] {
                self.links[l] = None;
                self.free_links.push(l);
            }
            return;
        }
        self.transmit(n, c, l, Vec::new(), true, at);
    }

    /// Node `n` stops at once (a crash or an exit): its peers see its connections end.
    pub(crate) fn kill(&mut self, n: usize) {
        let at = self.now;
        self.nodes[n].alive = false;
        let mut conns: Vec<(ConnId, usize)> = self.nodes[n].conns.drain().collect();
        conns.sort_unstable();
        for (c, l) in conns {
            self.close_end(n, c, l, at);
        }
        self.by_addr.remove(&self.nodes[n].addr);
    }
}
