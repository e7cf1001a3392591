//! One connection: handshake, then sealed frames carrying the channel mux. Sans-IO.
//!
//! The driver reads socket bytes into [`Connection::read_buf`] and reports them with
//! [`Connection::handle_read`], writes what [`Connection::poll_transmit`] returns,
//! and wakes at [`Connection::poll_timeout`]. When [`Connection::is_finished`] the
//! socket can be dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use crate::error::{DisconnectReason, FrameError, LocalClose, SendError};
use crate::identity::{Keypair, PeerId};
use crate::mux::{ChannelId, Mux, MuxConfig, MuxEvent, SendOptions, Tag};
use crate::secure::frame::{DEFAULT_MAX_PLAINTEXT, HEADER_LEN};
use crate::secure::handshake::MAX_HANDSHAKE_MSG;
use crate::secure::{CipherSuite, FrameOpener, FrameSealer, Handshake, HandshakeConfig, NodeInfo};

/// How long a closed connection waits for the peer's Close before dropping.
pub const LINGER: Duration = Duration::from_secs(2);

/// Who opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We accepted it.
    Inbound,
    /// We dialed it.
    Outbound,
}

/// What a connection hands up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The handshake finished.
    Established {
        /// The authenticated peer.
        remote: PeerId,
        /// What it said about itself.
        info: NodeInfo,
    },
    /// A whole request, response or refusal; release it as a message.
    Tagged {
        /// Its channel.
        channel: ChannelId,
        /// What it is, with its correlation id.
        tag: Tag,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The first fragment of a large message (channels that announce them).
    FirstFragment {
        /// Its channel.
        channel: ChannelId,
        /// A prefix of the message.
        data: Vec<u8>,
    },
    /// A whole message; call [`Connection::release`] once the application took it.
    Message {
        /// Its channel.
        channel: ChannelId,
        /// Its bytes.
        data: Vec<u8>,
    },
}

struct Open {
    remote: PeerId,
    cipher: CipherSuite,
    sealer: FrameSealer,
    opener: FrameOpener,
    mux: Mux,
}

enum State {
    Handshaking(Box<Handshake>),
    Open(Box<Open>),
}

/// A connection's whole protocol state.
pub struct Connection {
    state: State,
    direction: Direction,
    mux_config: Arc<MuxConfig>,
    ping_seed: u64,
    scratch: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    events: VecDeque<ConnEvent>,
    /// Set once the connection is over; remaining output is still flushed.
    done: Option<DisconnectReason>,
    /// Our own close in progress, and when we stop waiting for the peer's.
    local_close: Option<(LocalClose, Instant)>,
    /// Once over: when output the peer has not taken is given up, so a peer that
    /// stops reading cannot keep the connection (and its slot) forever.
    drop_at: Option<Instant>,
    /// Bytes this connection may hold for messages still arriving.
    reassembly_limit: usize,
}

impl Connection {
    /// A connection we dialed.
    #[allow(clippy::too_many_arguments)]
    pub fn outbound(
        hs: Arc<HandshakeConfig>,
        key: Arc<Keypair>,
        expected: Option<PeerId>,
        mux_config: Arc<MuxConfig>,
        now: Instant,
        rng: &dyn SecureRandom,
        ping_seed: u64,
    ) -> Result<Self, DisconnectReason> {
        let handshake = Handshake::initiator(hs, key, expected, now, rng)
            .map_err(DisconnectReason::Handshake)?;
        Ok(Self::new(
            handshake,
            Direction::Outbound,
            mux_config,
            ping_seed,
        ))
    }

    /// A connection we accepted.
    pub fn inbound(
        hs: Arc<HandshakeConfig>,
        key: Arc<Keypair>,
        mux_config: Arc<MuxConfig>,
        now: Instant,
        ping_seed: u64,
    ) -> Self {
        let handshake = Handshake::responder(hs, key, now);
        Self::new(handshake, Direction::Inbound, mux_config, ping_seed)
    }

    fn new(hs: Handshake, direction: Direction, mux_config: Arc<MuxConfig>, seed: u64) -> Self {
        let mut conn = Connection {
            state: State::Handshaking(Box::new(hs)),
            direction,
            mux_config,
            ping_seed: seed,
            scratch: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            events: VecDeque::new(),
            done: None,
            local_close: None,
            drop_at: None,
            reassembly_limit: usize::MAX,
        };
        conn.collect_handshake_output();
        conn
    }

    /// Who opened it.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The authenticated peer, once the handshake finished.
    pub fn remote(&self) -> Option<PeerId> {
        match &self.state {
            State::Open(open) => Some(open.remote),
            State::Handshaking(_) => None,
        }
    }

    /// The negotiated cipher, once the handshake finished.
    pub fn cipher(&self) -> Option<CipherSuite> {
        match &self.state {
            State::Open(open) => Some(open.cipher),
            State::Handshaking(_) => None,
        }
    }

    /// Whether this side started closing, or the connection is over.
    pub fn is_closing(&self) -> bool {
        self.local_close.is_some() || self.done.is_some()
    }

    /// Whether the handshake finished.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Why the connection ended, once it did.
    pub fn disconnect_reason(&self) -> Option<&DisconnectReason> {
        self.done.as_ref()
    }

    /// Over, and everything we meant to send has been handed to the socket.
    pub fn is_finished(&self) -> bool {
        self.done.is_some() && self.out_pos == self.out.len()
    }

    /// Whether reading is allowed now (receive rate limit; nothing after the end).
    pub fn read_allowed(&mut self, now: Instant) -> bool {
        match &mut self.state {
            _ if self.done.is_some() => false,
            State::Open(open) => open.mux.read_allowed(now),
            State::Handshaking(_) => true,
        }
    }

    /// Where the socket should read into.
    pub fn read_buf(&mut self) -> &mut [u8] {
        match &mut self.state {
            State::Open(open) => open.opener.read_buf(),
            State::Handshaking(_) => {
                // A handshake message, plus room for early frames behind it.
                self.scratch.resize(MAX_HANDSHAKE_MSG + 2, 0);
                &mut self.scratch
            }
        }
    }

    /// `n` bytes were read into [`Connection::read_buf`].
    pub fn handle_read(&mut self, n: usize, now: Instant, rng: &dyn SecureRandom) {
        if self.done.is_some() {
            return;
        }
        let result = match &mut self.state {
            State::Handshaking(_) => self.handshake_input(n, now, rng),
            State::Open(open) => {
                open.opener.advance(n);
                Ok(())
            }
        };
        if let Err(reason) = result {
            self.finish(reason, now);
            return;
        }
        self.process_frames(now);
    }

    fn handshake_input(
        &mut self,
        n: usize,
        now: Instant,
        rng: &dyn SecureRandom,
    ) -> Result<(), DisconnectReason> {
        let State::Handshaking(hs) = &mut self.state else {
            return Ok(());
        };
        let result = hs.handle_input(&self.scratch[..n], rng);
        self.collect_handshake_output();
        let used = result.map_err(DisconnectReason::Handshake)?;
        let State::Handshaking(hs) = &mut self.state else {
            return Ok(());
        };
        let Some(est) = hs.take_established() else {
            return Ok(());
        };
        let mut open = Box::new(Open {
            remote: est.remote,
            cipher: est.cipher,
            sealer: est.sealer,
            opener: est.opener,
            mux: Mux::new(&self.mux_config, now, self.ping_seed),
        });
        open.mux.set_reassembly_limit(self.reassembly_limit);
        // What the peer said it accepts: frames and messages stay within it.
        let info = &est.remote_info;
        open.sealer
            .limit_plaintext(info.max_frame_plaintext.unwrap_or(DEFAULT_MAX_PLAINTEXT));
        open.mux.limit_sends(|channel| info.max_message(channel));
        open.mux.peer_serves(&info.channels);
        // Early frames that came with the last handshake message; they fit, since the
        // opener buffers at least a whole frame and the scratch is smaller.
        let early = &self.scratch[used..n];
        if open.opener.feed(early) != early.len() {
            return Err(DisconnectReason::Frame(FrameError::BadLength {
                len: early.len(),
                max: open.opener.max_plaintext() + HEADER_LEN,
            }));
        }
        // The handshake's scratch is not read again: give it back now, not at the
        // next idle timer (thousands of simulated connections each held 4 KiB).
        self.scratch = Vec::new();
        self.events.push_back(ConnEvent::Established {
            remote: est.remote,
            info: est.remote_info,
        });
        self.state = State::Open(open);
        Ok(())
    }

    fn collect_handshake_output(&mut self) {
        if let State::Handshaking(hs) = &mut self.state {
            if let Some(bytes) = hs.poll_transmit() {
                self.out.extend_from_slice(&bytes);
            }
        }
    }

    fn process_frames(&mut self, now: Instant) {
        let State::Open(open) = &mut self.state else {
            return;
        };
        let result = loop {
            match open.opener.next_frame() {
                Ok(Some(frame)) => {
                    if let Err(e) = open.mux.handle_frame(frame, now) {
                        break Err(DisconnectReason::Protocol(e));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(DisconnectReason::Frame(e)),
            }
        };
        while let Some(ev) = open.mux.poll_event() {
            match ev {
                MuxEvent::Message { channel, data } => {
                    self.events.push_back(ConnEvent::Message { channel, data })
                }
                MuxEvent::Tagged { channel, tag, data } => self
                    .events
                    .push_back(ConnEvent::Tagged { channel, tag, data }),
                MuxEvent::FirstFragment { channel, data } => self
                    .events
                    .push_back(ConnEvent::FirstFragment { channel, data }),
                MuxEvent::RemoteClose(reason) => {
                    // Answer with our own Close. A graceful close of ours keeps
                    // flushing (the peer reads until our Close); otherwise what was
                    // queued stays available through take_unsent.
                    let flush = open.mux.is_flushing();
                    open.mux.close(LocalClose::Shutdown.wire_reason(), flush);
                    if self.local_close.is_none() {
                        self.done = Some(DisconnectReason::Remote(reason));
                    }
                }
            }
        }
        if let Err(reason) = result {
            self.finish(reason, now);
        }
        self.check_close_complete();
    }

    /// The peer ended the stream.
    pub fn handle_eof(&mut self, now: Instant) {
        if self.done.is_some() {
            return;
        }
        let reason = match &mut self.state {
            State::Handshaking(hs) => {
                let err = hs.handle_eof().err();
                DisconnectReason::Handshake(err.unwrap_or(crate::HandshakeError::Closed))
            }
            State::Open(open) => match (open.opener.finish(), self.local_close) {
                (Err(e), _) => DisconnectReason::Frame(e),
                (Ok(()), Some((why, _))) => DisconnectReason::Local(why),
                (Ok(()), None) => DisconnectReason::Eof,
            },
        };
        self.finish(reason, now);
        // Nothing more can be written usefully once the peer has gone.
        self.out_pos = self.out.len();
    }

    /// A socket error: the connection is over at once.
    pub fn handle_io_error(&mut self, kind: std::io::ErrorKind) {
        if self.done.is_none() {
            self.done = Some(DisconnectReason::Io(kind));
        }
        self.out_pos = self.out.len();
    }

    fn finish(&mut self, reason: DisconnectReason, now: Instant) {
        if self.done.is_some() {
            return;
        }
        log::debug!("connection ends: {reason}");
        // Tell the peer why if the session is up (best effort, with what is queued).
        if let State::Open(open) = &mut self.state {
            if !open.mux.close_sent() {
                let wire = match reason {
                    DisconnectReason::Local(why) => why.wire_reason(),
                    DisconnectReason::Protocol(crate::error::MuxError::PingTimeout) => {
                        crate::wire::CloseReason::Timeout as i32
                    }
                    _ => crate::wire::CloseReason::ProtocolError as i32,
                };
                open.mux.close(wire, false);
                let start = FrameSealer::begin_frame(&mut self.out);
                open.mux
                    .fill_frame(&mut self.out, open.sealer.max_plaintext(), now);
                if open.sealer.seal_in_place(&mut self.out, start).is_err() {
                    self.out.truncate(start);
                }
            }
        }
        self.done = Some(reason);
    }

    /// Queues a message.
    pub fn send(
        &mut self,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        self.send_tagged(channel, data, opts, Tag::Plain)
    }

    /// Queues a request, a response or a refusal (see [`Tag`]).
    pub fn send_tagged(
        &mut self,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
        tag: Tag,
    ) -> Result<(), SendError> {
        if self.done.is_some() {
            return Err(SendError::Closed);
        }
        match &mut self.state {
            State::Open(open) => open.mux.send_tagged(channel, data, opts, tag),
            State::Handshaking(_) => Err(SendError::UnknownPeer),
        }
    }

    /// The mux, once established.
    pub fn mux(&mut self) -> Option<&mut Mux> {
        match &mut self.state {
            State::Open(open) => Some(&mut open.mux),
            State::Handshaking(_) => None,
        }
    }

    /// The smoothed keepalive round-trip time, once measured.
    pub fn rtt(&self) -> Option<std::time::Duration> {
        match &self.state {
            State::Open(open) => open.mux.rtt(),
            State::Handshaking(_) => None,
        }
    }

    /// Per-channel counters, once established.
    pub fn channel_counters(&self) -> Option<Vec<(ChannelId, crate::mux::ChannelCounters)>> {
        match &self.state {
            State::Open(open) => Some(open.mux.counters().collect()),
            State::Handshaking(_) => None,
        }
    }

    /// The application took a message of `bytes` from `channel`.
    pub fn release(&mut self, channel: ChannelId, bytes: usize) {
        if let Some(mux) = self.mux() {
            mux.release(channel, bytes);
        }
    }

    /// Starts closing: with `flush`, queued messages go out before our Close.
    pub fn close(&mut self, why: LocalClose, flush: bool, now: Instant) {
        if self.done.is_some() || self.local_close.is_some() {
            return;
        }
        match &mut self.state {
            State::Handshaking(_) => self.done = Some(DisconnectReason::Local(why)),
            State::Open(open) => {
                open.mux.close(why.wire_reason(), flush);
                self.local_close = Some((why, now + LINGER));
            }
        }
    }

    fn check_close_complete(&mut self) {
        if let (Some((why, _)), State::Open(open)) = (self.local_close, &self.state) {
            if open.mux.close_sent() && open.mux.remote_closed() && self.done.is_none() {
                self.done = Some(DisconnectReason::Local(why));
            }
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// Arms the hard deadline of a connection that is over.
    fn arm_drop(&mut self, now: Instant) {
        if self.done.is_some() && self.drop_at.is_none() {
            self.drop_at = Some(now + LINGER);
        }
    }

    /// Caps the bytes this connection may hold for messages still arriving.
    pub fn set_reassembly_limit(&mut self, bytes: usize) {
        self.reassembly_limit = bytes;
        if let Some(mux) = self.mux() {
            mux.set_reassembly_limit(bytes);
        }
    }

    /// Bytes held now for messages still arriving.
    pub fn reassembly_bytes(&self) -> usize {
        match &self.state {
            State::Open(open) => open.mux.reassembly_bytes(),
            State::Handshaking(_) => 0,
        }
    }

    /// Accepts data from the peer on these channels only (see [`Mux::restrict_to`]).
    pub fn restrict_to(&mut self, channels: &[ChannelId]) {
        if let Some(mux) = self.mux() {
            mux.restrict_to(channels);
        }
    }

    /// Messages queued but not started, for moving them to another connection.
    pub fn take_unsent(&mut self) -> Vec<crate::mux::Unsent> {
        self.mux().map(|m| m.take_unsent()).unwrap_or_default()
    }
}

mod timers;
mod transmit;

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
