//! Channel descriptors and connection-level mux settings, with their defaults.

use std::time::Duration;

/// A logical channel's id.
pub type ChannelId = u32;

/// Default fragment payload.
pub const DEFAULT_FRAGMENT: usize = 16 * 1024;
/// Fragment payload while a channel of higher priority has data waiting.
pub const DEFAULT_SMALL_FRAGMENT: usize = 1024;
/// Default bytes a channel's send queue to one peer may hold.
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 16 << 20;
/// Default time a send queue may stay refusing (full) while the peer takes nothing.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default keepalive ping interval.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Default time to wait for a pong before dropping the peer.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(15);

/// A logical channel: its id, priority and limits. Both ends of a connection
/// should describe a channel the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Channel id, unique per node.
    pub id: ChannelId,
    /// Share of the link this channel gets when others compete (weight, at least 1).
    pub priority: u32,
    /// Messages that may wait in the send queue to one peer; a send beyond is refused.
    pub send_queue_capacity: usize,
    /// Bytes that may wait in the send queue to one peer; a send beyond is refused
    /// (a single message always fits in an empty queue).
    pub send_queue_bytes: usize,
    /// Largest message, sent or received.
    pub max_message_size: usize,
    /// Bytes the peer may have in flight to us on this channel before the application
    /// takes them (receive credit). At least `max_message_size`.
    pub recv_window: usize,
    /// Report the first fragment of a multi-fragment message as soon as it arrives.
    pub announce_first_fragment: bool,
    /// Requests (and their answers) may travel here; a request on a channel that
    /// takes none is a protocol violation. On for application channels; the
    /// protocol's own channels (gossip, DHT) turn it off.
    pub requests: bool,
}

impl ChannelConfig {
    /// A channel with priority 1, a queue of 1024 messages or 16 MiB, 4 MiB messages
    /// and an 8 MiB receive window.
    pub fn new(id: ChannelId) -> Self {
        ChannelConfig {
            id,
            priority: 1,
            send_queue_capacity: 1024,
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            max_message_size: 4 << 20,
            recv_window: 8 << 20,
            announce_first_fragment: false,
            requests: true,
        }
    }

    /// Whether requests may travel on this channel.
    pub fn requests(mut self, on: bool) -> Self {
        self.requests = on;
        self
    }

    /// Reports first fragments of multi-fragment messages early (see
    /// [`crate::mux::MuxEvent::FirstFragment`]).
    pub fn announce_first_fragment(mut self, on: bool) -> Self {
        self.announce_first_fragment = on;
        self
    }

    /// Sets the priority weight.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority.max(1);
        self
    }

    /// Sets the send queue capacity in messages.
    pub fn send_queue_capacity(mut self, messages: usize) -> Self {
        self.send_queue_capacity = messages.max(1);
        self
    }

    /// Sets the send queue capacity in bytes.
    pub fn send_queue_bytes(mut self, bytes: usize) -> Self {
        self.send_queue_bytes = bytes.max(1);
        self
    }

    /// Sets the largest message size; grows the receive window to match if needed.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self.recv_window = self.recv_window.max(bytes);
        self
    }

    /// Sets the receive window; never below the largest message size.
    pub fn recv_window(mut self, bytes: usize) -> Self {
        self.recv_window = bytes.max(self.max_message_size).max(1);
        self
    }
}

/// A token bucket setting: sustained bytes per second and burst size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub bytes_per_sec: u64,
    /// Largest burst.
    pub burst: u64,
}

/// Settings of one connection's mux.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// The channels, in any order.
    pub channels: Vec<ChannelConfig>,
    /// Fragment payload size.
    pub fragment: usize,
    /// Fragment payload while a higher-priority channel has data waiting.
    pub small_fragment: usize,
    /// Keepalive ping interval.
    pub ping_interval: Duration,
    /// Time to wait for a pong.
    pub pong_timeout: Duration,
    /// Send rate limit of the connection (off by default).
    pub send_rate: Option<RateLimit>,
    /// Receive rate limit of the connection (off by default).
    pub recv_rate: Option<RateLimit>,
    /// A connection whose send queue refused a message and then sent nothing for
    /// this long is closed ([`crate::LocalClose::Stalled`]).
    pub stall_timeout: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            channels: Vec::new(),
            fragment: DEFAULT_FRAGMENT,
            small_fragment: DEFAULT_SMALL_FRAGMENT,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            send_rate: None,
            recv_rate: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

impl MuxConfig {
    /// The descriptor of `id`.
    pub fn channel(&self, id: ChannelId) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.id == id)
    }
}
