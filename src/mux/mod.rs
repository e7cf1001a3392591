//! The channel mux: many prioritized logical channels on one secure session. Sans-IO.
//!
//! Outgoing: [`Mux::fill_frame`] writes the next frame's packets — the control lane
//! (pong, ping, credit) first, then fragments from the channel with the least
//! recently-sent bytes per unit of priority, within that channel's credit.
//! Incoming: [`Mux::handle_frame`] parses a frame's packets, reassembles messages
//! (bounded by each channel's size limit) and checks the peer stayed within credit.
//! Credit goes back to the peer only when the application took a message
//! ([`Mux::release`]), so a slow consumer of one channel stalls only that channel.

pub mod config;
mod outgoing;
pub mod packet;
mod recv;
mod send;
mod tag;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{MuxError, SendError};
use crate::rate::TokenBucket;
pub use config::{ChannelConfig, ChannelId, MuxConfig, RateLimit};
use packet::PacketRef;
use recv::RecvChannel;
use send::SendChannel;
pub use send::{ChannelCounters, SendOptions};
pub use tag::{RefuseReason, Tag};

/// Recent-bytes scores decay by this factor ...
const DECAY_FACTOR: f64 = 0.8;
/// ... every this often.
const DECAY_PERIOD: Duration = Duration::from_millis(100);

/// What the mux hands up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxEvent {
    /// A whole message arrived; call [`Mux::release`] once the application took it.
    Message {
        /// Its channel.
        channel: ChannelId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A whole request, response or refusal (see [`Tag`]); release it as a message.
    Tagged {
        /// Its channel.
        channel: ChannelId,
        /// What it is, with its correlation id.
        tag: Tag,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The first fragment of a message that has more, on a channel that asked for it.
    FirstFragment {
        /// Its channel.
        channel: ChannelId,
        /// The fragment's bytes (a prefix of the message).
        data: Vec<u8>,
    },
    /// The peer closed with this raw `CloseReason`.
    RemoteClose(i32),
}

/// A queued message that had not started sending, taken off its connection.
#[derive(Debug, Clone)]
pub struct Unsent {
    /// Its channel.
    pub channel: ChannelId,
    /// Its bytes.
    pub data: Arc<Vec<u8>>,
    /// How it was sent.
    pub opts: SendOptions,
    /// What it is.
    pub tag: Tag,
}

/// Closing state of the local side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// Send what is queued, then the Close packet.
    Flush(i32),
    /// Close packet next; queued data is dropped.
    Now(i32),
    /// The Close packet went out.
    Sent,
}

/// One connection's channel mux.
pub struct Mux {
    send: Vec<SendChannel>,
    recv: Vec<RecvChannel>,
    fragment: usize,
    small_fragment: usize,
    ping_interval: Duration,
    pong_timeout: Duration,
    next_ping_at: Instant,
    awaiting_pong: Option<(u64, Instant)>,
    /// When the ping we wait for was written, to time its pong.
    ping_written_at: Option<Instant>,
    /// Smoothed round-trip time from keepalive pings (as TCP's SRTT: 7/8 old).
    rtt: Option<Duration>,
    ping_nonce: u64,
    pending_ping: Option<u64>,
    pending_pong: Option<u64>,
    send_bucket: Option<TokenBucket>,
    recv_bucket: Option<TokenBucket>,
    decay_at: Instant,
    events: VecDeque<MuxEvent>,
    closing: Closing,
    remote_closed: bool,
    /// Channels the peer may send on; `None` = all we serve.
    allowed: Option<Vec<ChannelId>>,
    /// Bytes this connection may hold for messages still arriving.
    reassembly_limit: usize,
    /// A send was refused for a full queue since the last timeout.
    refused: bool,
    /// Since when sends are refused and nothing left the queues.
    stalled_since: Option<Instant>,
    stall_timeout: Duration,
}

impl Mux {
    /// A mux for a connection established at `now`. `ping_seed` makes ping nonces
    /// unpredictable across connections.
    pub fn new(config: &MuxConfig, now: Instant, ping_seed: u64) -> Self {
        let mut channels = config.channels.clone();
        channels.sort_by_key(|c| c.id);
        channels.dedup_by_key(|c| c.id);
        Mux {
            recv: channels.iter().map(RecvChannel::new).collect(),
            send: channels.into_iter().map(SendChannel::new).collect(),
            fragment: config.fragment.max(1),
            small_fragment: config.small_fragment.clamp(1, config.fragment.max(1)),
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            next_ping_at: now + config.ping_interval,
            awaiting_pong: None,
            ping_written_at: None,
            rtt: None,
            ping_nonce: ping_seed,
            pending_ping: None,
            pending_pong: None,
            send_bucket: config.send_rate.map(|r| bucket(r, now)),
            recv_bucket: config.recv_rate.map(|r| bucket(r, now)),
            decay_at: now + DECAY_PERIOD,
            events: VecDeque::new(),
            closing: Closing::Open,
            remote_closed: false,
            allowed: None,
            reassembly_limit: usize::MAX,
            refused: false,
            stalled_since: None,
            stall_timeout: config.stall_timeout,
        }
    }

    /// Accepts data from the peer on these channels only; a packet on any other is
    /// [`MuxError::ChannelNotAllowed`]. Credit for the others is withdrawn.
    pub fn restrict_to(&mut self, channels: &[ChannelId]) {
        for r in &mut self.recv {
            if !channels.contains(&r.id()) {
                r.to_grant = 0;
            }
        }
        self.allowed = Some(channels.to_vec());
    }

    /// The channels the peer announced. Credit is granted, and messages sent, only
    /// on channels both sides serve: a grant or a message on a channel the peer does
    /// not have is a violation on its side, and a send there could never leave (it
    /// is refused as [`SendError::UnknownChannel`] instead). Call before the first
    /// frame, when the initial grants have not gone out yet.
    pub fn peer_serves(&mut self, channels: &[ChannelId]) {
        for r in &mut self.recv {
            if !channels.contains(&r.id()) {
                r.withhold();
            }
        }
        for c in &mut self.send {
            c.peer_serves = channels.contains(&c.config.id);
        }
    }

    /// Sends on each channel no message larger than `peer_max(channel)` says the
    /// peer accepts (where it says), so a message it would refuse is refused here,
    /// at `send`, instead of closing the connection there.
    pub fn limit_sends(&mut self, peer_max: impl Fn(ChannelId) -> Option<usize>) {
        for c in &mut self.send {
            if let Some(max) = peer_max(c.config.id) {
                c.max_message = c.max_message.min(max);
            }
        }
    }

    /// Caps the bytes held for messages still arriving (all channels together).
    pub fn set_reassembly_limit(&mut self, bytes: usize) {
        self.reassembly_limit = bytes;
    }

    /// Bytes held now for messages still arriving.
    pub fn reassembly_bytes(&self) -> usize {
        self.recv.iter().map(RecvChannel::reassembly_bytes).sum()
    }

    /// The smoothed round-trip time measured by keepalive pings (`None` before the
    /// first pong). It includes the time the ping's frame waited behind others.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Bytes waiting in the send queues.
    pub fn queued_bytes(&self) -> usize {
        self.send.iter().map(SendChannel::queued_bytes).sum()
    }

    /// Whether sends were refused and nothing was sent for the stall timeout.
    pub fn is_stalled(&self, now: Instant) -> bool {
        self.stalled_since
            .is_some_and(|since| now >= since + self.stall_timeout)
    }

    fn index(&self, channel: ChannelId) -> Option<usize> {
        self.send
            .binary_search_by_key(&channel, |c| c.config.id)
            .ok()
    }

    /// Queues a message; fails at once if the channel is unknown, the message too
    /// large or the queue full.
    pub fn send(
        &mut self,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<(), SendError> {
        self.send_tagged(channel, data, opts, Tag::Plain)
    }

    /// [`Mux::send`] of a request, a response or a refusal: `tag` rides on the first
    /// fragment.
    pub fn send_tagged(
        &mut self,
        channel: ChannelId,
        data: Arc<Vec<u8>>,
        opts: SendOptions,
        tag: Tag,
    ) -> Result<(), SendError> {
        if self.closing != Closing::Open {
            return Err(SendError::Closed);
        }
        let i = self
            .index(channel)
            .filter(|i| self.send[*i].peer_serves)
            .ok_or(SendError::UnknownChannel(channel))?;
        let result = self.send[i].push(data, opts, tag);
        if result == Err(SendError::Full) {
            self.refused = true;
        }
        result
    }

    /// Drops `channel`'s waiting messages sent with withdraw key `key` that have
    /// not started sending; returns how many.
    pub fn withdraw(&mut self, channel: ChannelId, key: u64) -> usize {
        match self.index(channel) {
            Some(i) => self.send[i].withdraw(key),
            None => 0,
        }
    }

    /// Messages waiting in `channel`'s send queue.
    pub fn queued(&self, channel: ChannelId) -> usize {
        self.index(channel).map_or(0, |i| self.send[i].len())
    }

    /// Calls `f(channel, n)` for each channel whose queue lost `n` messages (sent,
    /// expired or replaced) since the last call.
    pub fn take_dequeued(&mut self, mut f: impl FnMut(ChannelId, u32)) {
        for c in &mut self.send {
            if c.dequeued > 0 {
                f(c.config.id, c.dequeued);
                c.dequeued = 0;
            }
        }
    }

    /// Counters per channel.
    pub fn counters(&self) -> impl Iterator<Item = (ChannelId, ChannelCounters)> + '_ {
        self.send.iter().map(|c| (c.config.id, c.counters))
    }

    /// Starts closing: with `flush`, queued messages go out first.
    pub fn close(&mut self, reason: i32, flush: bool) {
        if matches!(self.closing, Closing::Open | Closing::Flush(_)) {
            self.closing = if flush {
                Closing::Flush(reason)
            } else {
                Closing::Now(reason)
            };
        }
    }

    /// Whether a graceful close is sending what is queued.
    pub fn is_flushing(&self) -> bool {
        matches!(self.closing, Closing::Flush(_))
    }

    /// Whether our Close packet went out.
    pub fn close_sent(&self) -> bool {
        self.closing == Closing::Sent
    }

    /// Whether the peer sent its Close.
    pub fn remote_closed(&self) -> bool {
        self.remote_closed
    }

    /// Takes every message not yet started, per channel (for moving to another
    /// connection to the same peer).
    pub fn take_unsent(&mut self) -> Vec<Unsent> {
        let mut out = Vec::new();
        for c in &mut self.send {
            let id = c.config.id;
            out.extend(c.take_unsent().into_iter().map(|m| Unsent {
                channel: id,
                data: m.data,
                opts: m.opts,
                tag: m.tag,
            }));
        }
        out
    }

    /// The application took a message of `bytes` from `channel`.
    pub fn release(&mut self, channel: ChannelId, bytes: usize) {
        if let Some(i) = self.index(channel) {
            self.recv[i].release(bytes);
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// Whether the receive rate limit allows reading now.
    pub fn read_allowed(&mut self, now: Instant) -> bool {
        self.recv_bucket.as_mut().is_none_or(|b| b.ready(now))
    }

    /// Handles one opened frame.
    pub fn handle_frame(&mut self, frame: &[u8], now: Instant) -> Result<(), MuxError> {
        if let Some(b) = &mut self.recv_bucket {
            b.ready(now);
            b.spend(frame.len());
        }
        for packet in packet::packets(frame) {
            if self.remote_closed {
                break;
            }
            match packet.map_err(MuxError::Malformed)? {
                PacketRef::Ping(nonce) => self.pending_pong = Some(nonce),
                PacketRef::Pong(nonce) => {
                    if self.awaiting_pong.is_some_and(|(n, _)| n == nonce) {
                        self.awaiting_pong = None;
                        if let Some(at) = self.ping_written_at.take() {
                            let sample = now.saturating_duration_since(at);
                            self.rtt = Some(match self.rtt {
                                Some(old) => (old * 7 + sample) / 8,
                                None => sample,
                            });
                        }
                    }
                }
                PacketRef::Msg {
                    channel,
                    eof,
                    data,
                    total_len,
                    tag,
                } => {
                    let i = self
                        .index(channel)
                        .ok_or(MuxError::UnknownChannel(channel))?;
                    if self.allowed.as_ref().is_some_and(|a| !a.contains(&channel)) {
                        return Err(MuxError::ChannelNotAllowed(channel));
                    }
                    if tag != Tag::Plain
                        && self.recv[i].at_message_start()
                        && !self.send[i].config.requests
                    {
                        return Err(MuxError::RequestsNotAllowed(channel));
                    }
                    // Only a fragment that really starts a multi-fragment message is
                    // announced; `total_len` elsewhere is ignored.
                    let first = self.recv[i].at_message_start() && !eof && total_len > 0;
                    let room = self
                        .reassembly_limit
                        .saturating_sub(self.reassembly_bytes());
                    let complete = self.recv[i].on_fragment(eof, data, total_len, tag, room)?;
                    if first && self.recv[i].announce_first {
                        let data = data[..data.len().min(256)].to_vec();
                        self.events
                            .push_back(MuxEvent::FirstFragment { channel, data });
                    }
                    if let Some((tag, msg)) = complete {
                        let counters = &mut self.send[i].counters;
                        counters.recv_msgs += 1;
                        counters.recv_bytes += msg.len() as u64;
                        self.events.push_back(match tag {
                            Tag::Plain => MuxEvent::Message { channel, data: msg },
                            tag => MuxEvent::Tagged {
                                channel,
                                tag,
                                data: msg,
                            },
                        });
                    }
                }
                PacketRef::Credit { channel, bytes } => {
                    let i = self
                        .index(channel)
                        .ok_or(MuxError::UnknownChannel(channel))?;
                    let c = &mut self.send[i];
                    c.credit = c.credit.saturating_add(bytes);
                }
                PacketRef::Close(reason) => {
                    self.remote_closed = true;
                    self.events.push_back(MuxEvent::RemoteClose(reason));
                }
                PacketRef::Unknown => {}
            }
        }
        Ok(())
    }

    /// The next time [`Mux::handle_timeout`] must run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = match self.awaiting_pong {
            Some((_, deadline)) => deadline,
            None => self.next_ping_at,
        };
        let mut at = keepalive;
        if self.has_data() {
            if let Some(ready) = self.send_bucket.as_ref().and_then(|b| b.ready_at()) {
                at = at.min(ready);
            }
        }
        if let Some(ready) = self.recv_bucket.as_ref().and_then(|b| b.ready_at()) {
            at = at.min(ready);
        }
        if let Some(since) = self.stalled_since {
            at = at.min(since + self.stall_timeout);
        }
        Some(at)
    }

    /// Runs keepalive: queues a ping when due, fails when a pong is overdue. Also
    /// starts the stall clock when sends were refused, and drops expired messages
    /// even while the socket takes nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MuxError> {
        if std::mem::take(&mut self.refused) && self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        for c in &mut self.send {
            c.drop_expired(now);
        }
        if let Some((_, deadline)) = self.awaiting_pong {
            if now >= deadline {
                return Err(MuxError::PingTimeout);
            }
        } else if now >= self.next_ping_at {
            self.ping_nonce = self.ping_nonce.wrapping_add(0x9e37_79b9_7f4a_7c15);
            self.pending_ping = Some(self.ping_nonce);
            self.awaiting_pong = Some((self.ping_nonce, now + self.pong_timeout));
            self.next_ping_at = now + self.ping_interval;
        }
        Ok(())
    }
}

fn bucket(r: RateLimit, now: Instant) -> TokenBucket {
    TokenBucket::new(r.bytes_per_sec as f64, r.burst as f64, now)
}

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
