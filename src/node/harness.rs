//! A whole node core driven without sockets, for the fuzzer and the tests: several
//! inbound peers complete a real handshake with it, then each can send any
//! plaintext (sealed as frames for it) or any raw bytes, while time moves. After
//! every step the core's invariants are checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ring::rand::SystemRandom;

use crate::config::NodeConfig;
use crate::gossip::GOSSIP_CHANNEL;
use crate::identity::Keypair;
use crate::kad::KAD_CHANNEL;
use crate::mux::ChannelConfig;
use crate::node::command::Command;
use crate::node::core::{ConnId, Io, IoBudget, NodeCore, Output};
use crate::node::delivery::Delivery;
use crate::node::event::Event;
use crate::node::{complete_config, handshake_config};
use crate::secure::{FrameSealer, Handshake};

/// The application channel the harness's node serves.
pub const APP_CHANNEL: u32 = 1;
/// Output bytes a connection may hold sealed and unwritten, at most: a few frames.
const MAX_PENDING_OUTPUT: usize = 8 * (64 * 1024 + 64);

struct Peer {
    conn: ConnId,
    sealer: FrameSealer,
}

/// A node core and the peers talking to it.
pub struct CoreHarness {
    core: NodeCore,
    config: Arc<NodeConfig>,
    peers: Vec<Peer>,
    now: Instant,
    rng: SystemRandom,
    events: Receiver<Event>,
    delivery: Delivery,
    /// Addresses the core asked to dial (nobody answers them).
    dialed: Vec<SocketAddr>,
}

impl CoreHarness {
    /// A node with gossip, the DHT and one application channel, and `peers` inbound
    /// peers that completed the handshake (each from its own address).
    pub fn new(peers: usize) -> Self {
        let mut config = NodeConfig::new("harness");
        config.mux.channels.push(ChannelConfig::new(APP_CHANNEL));
        config.event_queue = 64;
        complete_config(&mut config);
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("literal address");
        let handshake = handshake_config(&config, &[addr]).expect("valid settings");
        let config = Arc::new(config);
        let key = Arc::new(Keypair::from_seed([7; 32]));
        let (tx, events) = crossbeam_channel::bounded(config.event_queue);
        let now = Instant::now();
        let core = NodeCore::new(
            config.clone(),
            Arc::new(handshake),
            key,
            None,
            SystemRandom::new(),
            now,
            1_700_000_000,
        );
        let mut h = CoreHarness {
            core,
            config,
            peers: Vec::new(),
            now,
            rng: SystemRandom::new(),
            events,
            delivery: Delivery::new(tx, HashMap::new()),
            dialed: Vec::new(),
        };
        for i in 0..peers {
            h.connect(i);
        }
        h
    }

    /// Peer `i` dials in and completes the handshake.
    fn connect(&mut self, i: usize) {
        self.connect_observing(i, None);
    }

    /// Peer `i` (from `127.1.i.1:4000`, a subnet of its own) dials in and completes
    /// the handshake, saying it sees the node on `observed`. Returns the address
    /// the node said it sees the peer on.
    pub fn connect_observing(
        &mut self,
        i: usize,
        observed: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let addr = SocketAddr::from(([127, 1, i as u8, 1], 4000));
        let conn = self.core.handle_accepted(addr, self.now)?;
        let mut seed = [0u8; 32];
        seed[0] = i as u8 + 1;
        let mut hs_config = crate::secure::HandshakeConfig::new("harness");
        hs_config.node_info.channels = vec![APP_CHANNEL, GOSSIP_CHANNEL, KAD_CHANNEL];
        hs_config.node_info.observed_addr = observed;
        let Ok(mut hs) = Handshake::initiator(
            Arc::new(hs_config),
            Arc::new(Keypair::from_seed(seed)),
            Some(self.core.local_id()),
            self.now,
            &self.rng,
        ) else {
            return None;
        };
        for _ in 0..4 {
            let mut reply = Vec::new();
            if let Some(out) = hs.poll_transmit() {
                reply = self.deliver(conn, &out);
            }
            reply.extend(self.take_output(conn));
            if !reply.is_empty() {
                let _ = hs.handle_input(&reply, &self.rng);
            }
            if hs.is_done() {
                if let Some(out) = hs.poll_transmit() {
                    self.deliver_and_settle(conn, &out);
                }
                break;
            }
        }
        let est = hs.take_established()?;
        let seen_at = est.remote_info.observed_addr;
        self.peers.push(Peer {
            conn,
            sealer: est.sealer,
        });
        seen_at
    }

    /// The addresses the node announces now.
    pub fn announced_addrs(&self) -> Vec<SocketAddr> {
        self.core.announced_addrs().to_vec()
    }

    /// Events the application would get, taken now (at most `n`).
    pub fn drain_events(&mut self, n: usize) -> Vec<Event> {
        self.events.try_iter().take(n).collect()
    }

    /// Peers that completed the handshake.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Peer `i` sends `plaintext` as one sealed frame (a sequence of packets, or
    /// anything else).
    pub fn send_frame(&mut self, i: usize, plaintext: &[u8]) {
        let Some(p) = self.peers.get_mut(i) else {
            return;
        };
        let mut wire = Vec::new();
        if p.sealer.seal(&mut wire, plaintext).is_ok() {
            let conn = p.conn;
            self.deliver_and_settle(conn, &wire);
        }
    }

    /// Peer `i` sends raw bytes, sealed or not.
    pub fn send_raw(&mut self, i: usize, bytes: &[u8]) {
        if let Some(conn) = self.peers.get(i).map(|p| p.conn) {
            self.deliver_and_settle(conn, bytes);
        }
    }

    /// Time moves on by `by`; every deadline due runs.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let conns: Vec<ConnId> = self.peers.iter().map(|p| p.conn).collect();
        for id in conns {
            if self.core.poll_conn_timeout(id).is_some_and(|t| t <= now)
                && !self.core.handle_conn_timeout(id, now)
            {
                self.service(id);
            }
        }
        crate::driver::node_slot::node_timer(&mut self.core, &mut self.delivery, now);
        self.settle();
    }

    /// The application subscribes to `topic`.
    pub fn subscribe(&mut self, topic: &str) {
        let now = self.now;
        self.core
            .handle_command(Command::Subscribe(topic.to_string()), now);
        self.settle();
    }

    /// Addresses dialed so far.
    pub fn dialed(&self) -> &[SocketAddr] {
        &self.dialed
    }

    /// The application takes up to `n` events.
    pub fn take_events(&mut self, n: usize) -> usize {
        self.events.try_iter().take(n).count()
    }

    /// Checks what must hold whatever the peers sent.
    pub fn check_invariants(&self) {
        let used = self.core.reassembly_in_use();
        assert!(
            used <= self.config.reassembly_budget,
            "reassembly {used} over the budget"
        );
        for p in &self.peers {
            let pending = self.core.pending_output(p.conn);
            assert!(
                pending <= MAX_PENDING_OUTPUT,
                "{pending} bytes sealed ahead"
            );
        }
    }

    /// Bytes arrive on `conn`, as the driver would hand them over; returns what
    /// `conn` wrote meanwhile.
    fn deliver(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<u8> {
        let mut io = Pipe {
            input: bytes,
            output: Vec::new(),
        };
        while !io.input.is_empty() {
            let outcome = self
                .core
                .handle_io(conn, &mut io, IoBudget::UNLIMITED, self.now);
            if outcome.finished || outcome.read == 0 {
                break;
            }
        }
        io.output
    }

    /// Bytes arrive on `conn`; then everything it and the core have to send goes out.
    fn deliver_and_settle(&mut self, conn: ConnId, bytes: &[u8]) {
        let _ = self.deliver(conn, bytes);
        self.service(conn);
        self.settle();
    }

    /// Writes out (and drops) what `conn` has to send; closes it once finished.
    fn service(&mut self, conn: ConnId) {
        let _ = self.take_output(conn);
    }

    fn take_output(&mut self, conn: ConnId) -> Vec<u8> {
        let mut io = Pipe {
            input: &[],
            output: Vec::new(),
        };
        let _ = self
            .core
            .handle_io(conn, &mut io, IoBudget::UNLIMITED, self.now);
        io.output
    }

    /// Hands on the core's outputs and services every connection it woke until it
    /// is quiet (dials are recorded, not made: nobody is listening).
    fn settle(&mut self) {
        for _ in 0..64 {
            let mut woken = Vec::new();
            let mut released = Vec::new();
            while let Some(out) = self.core.poll_output() {
                match out {
                    Output::Dial { addr, .. } => self.dialed.push(addr),
                    Output::Wake(id) => woken.push(id),
                    Output::Event { event, release } => {
                        self.delivery.deliver(event, release, &mut released)
                    }
                    _ => {}
                }
            }
            for r in released.drain(..) {
                self.core.handle_released(r);
            }
            if woken.is_empty() {
                return;
            }
            for id in woken {
                self.service(id);
            }
        }
    }
}

/// Bytes in from a slice, out into a buffer that takes everything.
struct Pipe<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Io for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.input.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::packet;
    use crate::wire;
    use prost::Message;

    /// Peer `i` sends one gossip RPC.
    fn gossip(h: &mut CoreHarness, i: usize, rpc: &wire::GossipRpc) {
        let mut p = Vec::new();
        packet::put_msg(
            &mut p,
            GOSSIP_CHANNEL,
            true,
            &rpc.encode_to_vec(),
            0,
            crate::mux::Tag::Plain,
        );
        h.send_frame(i, &p);
    }

    #[test]
    fn each_peer_is_told_where_we_see_it_and_three_subnets_agreeing_get_an_address_announced() {
        let mut h = CoreHarness::new(0);
        let ours: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(h.announced_addrs(), vec![ours]);
        // Behind NAT: peers see us on a public IP (with some ephemeral port).
        let public = |port: u16| SocketAddr::from(([203, 0, 113, 7], port));
        let told = h.connect_observing(0, Some(public(50_001)));
        assert_eq!(
            told,
            Some(SocketAddr::from(([127, 1, 0, 1], 4000))),
            "we tell the peer the address we see it on"
        );
        h.connect_observing(1, Some(public(50_002)));
        assert_eq!(
            h.announced_addrs(),
            vec![ours],
            "two subnets are not enough"
        );
        // A liar naming another IP changes nothing.
        h.connect_observing(2, Some(SocketAddr::from(([198, 51, 100, 1], 9))));
        assert_eq!(h.announced_addrs(), vec![ours]);
        h.connect_observing(3, Some(public(50_003)));
        let adopted = SocketAddr::from(([203, 0, 113, 7], 1));
        assert_eq!(
            h.announced_addrs(),
            vec![ours, adopted],
            "the third subnet confirms it: announced with our listen port"
        );
        assert_eq!(h.core.metrics().addresses_adopted, 1);
        let events = h.drain_events(64);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::AddressAdopted { addr } if *addr == adopted)));
        // Our DHT record carries it too, under a higher sequence number.
        let record = h.core.local_record().unwrap().clone();
        assert_eq!(record.addrs, vec![ours, adopted]);
        assert!(record.seq > 1_700_000_000);
        h.connect_observing(4, Some(public(50_004)));
        assert_eq!(h.announced_addrs().len(), 2, "adopted once");
    }

    #[test]
    fn peer_exchange_dials_respect_the_outbound_subnet_cap() {
        let mut h = CoreHarness::new(3);
        h.subscribe("t");
        let subscribe = wire::GossipRpc {
            subscribe: vec!["t".into()],
            ..Default::default()
        };
        for i in 0..3 {
            gossip(&mut h, i, &subscribe);
        }
        // Every peer prunes us, offering eight peers of one /24.
        for i in 0..3 {
            let records = (0..8u8)
                .map(|j| {
                    let key = Keypair::from_seed([100 + 8 * i as u8 + j; 32]);
                    let addr = SocketAddr::from(([10, 9, 9, 1 + j], 4000));
                    crate::kad::record::PeerRecord::sign(&key, &[addr], 1).to_wire()
                })
                .collect();
            let prune = wire::GossipRpc {
                prune: vec![wire::Prune {
                    topic: "t".into(),
                    peers: records,
                    backoff_secs: 10,
                }],
                ..Default::default()
            };
            gossip(&mut h, i, &prune);
        }
        let same_subnet = h
            .dialed()
            .iter()
            .filter(|a| a.ip().to_string().starts_with("10.9.9."))
            .count();
        assert!(same_subnet > 0, "peer exchange is used");
        assert!(same_subnet <= 2, "{same_subnet} dials into one /24");
    }

    #[test]
    fn peers_complete_the_handshake_and_hostile_bytes_keep_the_core_in_bounds() {
        let mut h = CoreHarness::new(10);
        assert_eq!(h.peers(), 10);
        let connected = h
            .events
            .try_iter()
            .filter(|e| matches!(e, Event::PeerConnected { .. }))
            .count();
        assert_eq!(connected, 10);
        // Every peer announces 4 MiB on the application and gossip channels and
        // never finishes: 80 MiB asked for, a 64 MiB budget.
        for i in 0..10 {
            for ch in [APP_CHANNEL, GOSSIP_CHANNEL] {
                let mut p = Vec::new();
                packet::put_msg(
                    &mut p,
                    ch,
                    false,
                    &[0u8; 100],
                    4 << 20,
                    crate::mux::Tag::Plain,
                );
                h.send_frame(i, &p);
                h.check_invariants();
            }
        }
        let closed = |h: &CoreHarness, label: &str| {
            h.core
                .metrics()
                .disconnects
                .get(label)
                .copied()
                .unwrap_or(0)
        };
        assert!(closed(&h, "reassembly_budget") >= 1);
        // Unknown channels, garbage sealed and raw, and time.
        for i in 0..10 {
            let mut p = Vec::new();
            packet::put_msg(&mut p, 999, true, &[1], 0, crate::mux::Tag::Plain);
            h.send_frame(i, &p);
            h.send_frame(i, &[0xff; 300]);
            h.send_raw(i, &[0x00, 0x00, 0x10, 0x00, 1, 2, 3]);
            h.advance(Duration::from_secs(3));
            h.check_invariants();
        }
        h.take_events(100);
        for _ in 0..20 {
            h.advance(Duration::from_secs(5));
            h.check_invariants();
        }
        assert_eq!(h.core.reassembly_in_use(), 0, "everything closed and freed");
    }
}
