//! # meshwire
//!
//! Peer-to-peer networking for blockchain-style systems, written from scratch on
//! `ring`, `prost` and (later) `mio`: an authenticated, forward-secret handshake,
//! AEAD-sealed frames, and — built on those — a channelized transport, a Kademlia
//! DHT and gossip broadcast.
//!
//! Every protocol layer is a sans-IO state machine: bytes and `now` in, bytes,
//! deadlines and events out. This crate level example runs a whole handshake and
//! exchanges a sealed frame without any socket:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use meshwire::identity::Keypair;
//! use meshwire::secure::{Handshake, HandshakeConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rng = ring::rand::SystemRandom::new();
//! let config = Arc::new(HandshakeConfig::new("example-net"));
//! let alice = Arc::new(Keypair::generate()?);
//! let bob = Arc::new(Keypair::generate()?);
//! let now = Instant::now();
//!
//! // Alice dials Bob and insists on talking to him.
//! let mut a = Handshake::initiator(config.clone(), alice.clone(), Some(bob.peer_id()), now, &rng)?;
//! let mut b = Handshake::responder(config, bob, now);
//! while !(a.is_done() && b.is_done()) {
//!     if let Some(bytes) = a.poll_transmit() { b.handle_input(&bytes, &rng)?; }
//!     if let Some(bytes) = b.poll_transmit() { a.handle_input(&bytes, &rng)?; }
//! }
//! let mut alice_end = a.take_established().expect("done");
//! let mut bob_end = b.take_established().expect("done");
//! assert_eq!(bob_end.remote, alice.peer_id());
//!
//! // One sealed frame from Alice to Bob.
//! let mut wire = Vec::new();
//! alice_end.sealer.seal(&mut wire, b"hello bob")?;
//! bob_end.opener.feed(&wire);
//! assert_eq!(bob_end.opener.next_frame()?.as_deref(), Some(&b"hello bob"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! A node is started with a [`NodeBuilder`] and used through its [`NodeHandle`]: two
//! nodes on loopback, one message on a channel.
//!
//! ```
//! use std::time::Duration;
//! use meshwire::{ChannelConfig, Event, NodeBuilder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const VOTES: u32 = 1;
//! let start = |addr: &str| {
//!     NodeBuilder::new("doc-net")
//!         .listen(addr.parse().unwrap())
//!         .channel(ChannelConfig::new(VOTES).priority(10))
//!         .start()
//! };
//! let alice = start("127.0.0.1:0")?;
//! let bob = start("127.0.0.1:0")?;
//! alice.dial(bob.listen_addrs()[0], Some(bob.peer_id()))?;
//! let events = bob.events();
//! loop {
//!     match events.recv_timeout(Duration::from_secs(10))? {
//!         Event::PeerConnected { peer, .. } => {
//!             assert_eq!(peer, alice.peer_id());
//!             // Bob is connected; alice may not have processed the handshake yet.
//!             bob.send(peer, VOTES, b"hello alice".to_vec())?;
//!         }
//!         _ => {}
//!     }
//!     if !bob.peers().is_empty() { break; }
//! }
//! let got = alice.events().iter().find_map(|e| match e {
//!     Event::Message { channel: VOTES, data, .. } => Some(data),
//!     _ => None,
//! });
//! assert_eq!(got.as_deref(), Some(&b"hello alice"[..]));
//! alice.shutdown();
//! bob.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! ## For a consensus engine
//!
//! Each part of the engine takes its channels as a [`Reactor`]: its own queue, with
//! every peer's arrival before its messages and its departure after them. What a
//! reactor sees a peer do wrong goes into the one score every layer feeds.
//!
//! ```no_run
//! use meshwire::{ChannelConfig, Misbehavior, NodeBuilder, ReactorEvent};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const VOTES: u32 = 1;
//! const PARTS: u32 = 2;
//! let node = NodeBuilder::new("chain-1")
//!     .channel(ChannelConfig::new(VOTES).priority(10))
//!     .channel(ChannelConfig::new(PARTS).priority(3).max_message_size(64 * 1024))
//!     .start()?;
//! let consensus = node.reactor(&[VOTES, PARTS], 1024)?;
//! while let Ok(ev) = consensus.recv() {
//!     if let ReactorEvent::Message { peer, channel: VOTES, data } = ev {
//!         if data.len() != 8 {
//!             // Graded: Minor, Invalid (a protocol violation's worth), Malicious (ban).
//!             node.report(peer, Misbehavior::Invalid, "malformed vote")?;
//!         } else {
//!             node.mark_good(peer)?;
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Requests
//!
//! Any application channel carries requests as well as messages. The asker waits
//! for the answer (or takes it as [`Event::Response`] with
//! [`NodeHandle::request_async`]); the server answers each [`Event::Request`]
//! under its id. A peer we are not connected to is found through the DHT and
//! reached over a short-lived connection that takes no peer slot.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use meshwire::{Event, NodeHandle, PeerId};
//! # fn f(server: NodeHandle, client: NodeHandle, peer: PeerId) -> Result<(), Box<dyn std::error::Error>> {
//! const BLOCKS: u32 = 3;
//! std::thread::spawn(move || {
//!     for ev in server.events() {
//!         if let Event::Request { id, channel: BLOCKS, data, .. } = ev {
//!             let _ = server.respond(id, [b"block for ".as_slice(), &data].concat());
//!         }
//!     }
//! });
//! let block = client.request(peer, BLOCKS, b"42".to_vec(), Duration::from_secs(2))?;
//! assert_eq!(block, b"block for 42");
//! # Ok(()) }
//! ```
//!
//! ## Services and routing
//!
//! A node of partition X announces itself under a name's key, with a little
//! metadata it signs; any node routes a request to "a node of partition X",
//! falling back to the next provider (ranked by score and round trip) when one is
//! dead or slow.
//!
//! ```no_run
//! # use meshwire::{NodeHandle, RouteOptions, RouteOutcome};
//! # fn f(server: NodeHandle, client: NodeHandle) -> Result<(), Box<dyn std::error::Error>> {
//! use meshwire::kad::key::key_from_name;
//! const API: u32 = 4;
//! let partition_x = key_from_name("acc/partition/X");
//! server.provide_with(partition_x, b"api=v2".to_vec())?;
//! match client.route(partition_x, API, b"balance?".to_vec(), RouteOptions::default()) {
//!     RouteOutcome::Delivered { peer, answer, failed } => {
//!         println!("{peer} answered {answer:?} after {} fallbacks", failed.len())
//!     }
//!     other => println!("no answer: {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! ## Metrics
//!
//! [`NodeHandle::metrics`] is a snapshot of every counter; its Prometheus text
//! carries per-peer keepalive RTTs and bytes, per-topic gossip deliveries, hops
//! and one-way delay (messages carry their origin's signed publish time), and the
//! DHT's table size, providers and lookup latency. The node program serves it with
//! `--metrics ADDR`.
//!
//! ```no_run
//! # use meshwire::NodeHandle;
//! # fn f(node: NodeHandle) -> Result<(), Box<dyn std::error::Error>> {
//! let m = node.metrics()?;
//! if let Some(blocks) = m.topics.get("blocks") {
//!     println!("p99 one-way delay at most {:?}", blocks.delay.quantile_bound(0.99));
//! }
//! print!("{}", m.to_prometheus()); // meshwire_gossip_delay_seconds_bucket{topic="blocks",le="0.05"} ...
//! # Ok(()) }
//! ```
//!
//! A validator behind sentries: the validator runs no DHT, takes no other peers,
//! and keeps its sentries in reserved slots; each sentry keeps the validator
//! unconditional (past its limits) and private (out of every DHT answer and peer
//! exchange).
//!
//! ```no_run
//! use meshwire::config::PeerLimits;
//! use meshwire::{Keypair, NodeBuilder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (sentry_addr, sentry_id) = ("10.0.0.2:26656".parse()?, Keypair::generate()?.peer_id());
//! # let validator_id = Keypair::generate()?.peer_id();
//! let validator = NodeBuilder::new("chain-1")
//!     .kad(None)
//!     .limits(PeerLimits { max_inbound: 0, max_outbound: 0, ..PeerLimits::default() })
//!     .persistent_peer(sentry_addr, Some(sentry_id));
//! let sentry = NodeBuilder::new("chain-1")
//!     .unconditional_peer(validator_id)
//!     .private_peer(validator_id);
//! # let _ = (validator, sentry);
//! # Ok(())
//! # }
//! ```
//!
//! Layers, bottom up: [`identity`], [`secure`] (handshake and sealed frames),
//! [`mux`] (channels), [`conn`], [`kad`] (the DHT), [`gossip`], and the node
//! ([`NodeBuilder`], [`NodeHandle`], [`Event`]). The wire contract lives in
//! `wire/*.proto` and `wire/PROTOCOL.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub(crate) mod collections;
pub mod config;
pub mod conn;
mod driver;
pub mod error;
pub mod gossip;
pub mod histogram;
pub mod identity;
pub mod kad;
pub mod metrics;
pub mod mux;
mod node;
pub mod peer_score;
pub mod peers;
mod rate;
pub mod record;
pub mod rng;
mod scan;
pub mod secure;
pub mod sim;
pub mod subnet;
pub mod wire;

pub use config::NodeConfig;
pub use conn::Direction;
pub use driver::Runtime;
pub use error::{
    DisconnectReason, FrameError, HandshakeError, IdentityError, LocalClose, MuxError, SendError,
};
pub use identity::{Keypair, PeerId};
pub use metrics::Metrics;
pub use mux::{ChannelConfig, ChannelId, RateLimit, RefuseReason, SendOptions};
/// A whole node core driven without sockets (fuzzing builds only).
#[cfg(fuzzing)]
#[doc(hidden)]
pub use node::harness;
pub use node::{
    Event, InboundRequestId, NodeBuilder, NodeHandle, OutboundRequestId, PeerDetails, PeerInfo,
    Reactor, ReactorError, ReactorEvent, RequestConfig, RequestError, RouteOptions, RouteOutcome,
    StartError,
};
pub use peer_score::{Misbehavior, PeerScore, ScoreSource};
