//! A hash over every event the simulated nodes handed their applications: the
//! same seed must give the same hash, run after run.

use crate::node::Event;

/// FNV-1a, 64 bits, over (virtual time, node, kind, message or peer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    hash: u64,
    events: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }
}

impl Trace {
    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn add(&mut self, at_nanos: u64, node: usize, event: &Event) {
        self.events += 1;
        self.eat(&at_nanos.to_le_bytes());
        self.eat(&(node as u64).to_le_bytes());
        match event {
            Event::Gossip(g) => {
                self.eat(b"G");
                self.eat(&g.id);
            }
            Event::PeerConnected { peer, .. } => {
                self.eat(b"C");
                self.eat(peer.as_bytes());
            }
            Event::PeerDisconnected { peer, .. } => {
                self.eat(b"D");
                self.eat(peer.as_bytes());
            }
            Event::AddressAdopted { addr } => {
                self.eat(b"A");
                self.eat(addr.to_string().as_bytes());
            }
            Event::DialFailed { addr, .. } => {
                self.eat(b"F");
                self.eat(addr.to_string().as_bytes());
            }
            Event::Lookup(r) => {
                self.eat(b"L");
                self.eat(&r.id.to_le_bytes());
            }
            Event::PublishFailed { id, .. } => {
                self.eat(b"P");
                self.eat(id);
            }
            Event::Message { peer, channel, .. } => {
                self.eat(b"M");
                self.eat(peer.as_bytes());
                self.eat(&channel.to_le_bytes());
            }
            Event::Request {
                id, peer, channel, ..
            } => {
                self.eat(b"Q");
                self.eat(&id.0.to_le_bytes());
                self.eat(peer.as_bytes());
                self.eat(&channel.to_le_bytes());
            }
            Event::Response { id, peer, result } => {
                self.eat(b"R");
                self.eat(&id.0.to_le_bytes());
                self.eat(peer.as_bytes());
                self.eat(&[u8::from(result.is_ok())]);
            }
        }
    }

    /// The hash, as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// Events hashed.
    pub fn events(&self) -> u64 {
        self.events
    }
}
