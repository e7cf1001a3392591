//! Public error types.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::identity::PeerId;

/// Errors of keys, key files and peer ids.
#[derive(Debug)]
pub enum IdentityError {
    /// The system's secure random source failed.
    Rng,
    /// Bytes that are not an Ed25519 PKCS#8 key.
    BadKey(String),
    /// The key file exists but does not hold a valid key.
    CorruptKeyFile {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key file may be read or written by group or others.
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing the key file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A peer id that is not 64 hex characters.
    BadPeerIdHex,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Rng => f.write_str("secure random source failed"),
            IdentityError::BadKey(reason) => write!(f, "not an Ed25519 PKCS#8 key: {reason}"),
            IdentityError::CorruptKeyFile { path, reason } => {
                write!(f, "key file {} is corrupt: {reason}", path.display())
            }
            IdentityError::InsecurePermissions { path, mode } => write!(
                f,
                "key file {} has mode {mode:o}; it must not be accessible by group or others (chmod 600)",
                path.display()
            ),
            IdentityError::Io { path, source } => {
                write!(f, "key file {}: {source}", path.display())
            }
            IdentityError::BadPeerIdHex => f.write_str("a peer id is 64 hex characters"),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a handshake failed. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// A handshake message longer than the limit was announced.
    MessageTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Bytes that do not decode as the expected message.
    Malformed(&'static str),
    /// The peer speaks another protocol version.
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The peer belongs to another network.
    NetworkMismatch {
        /// Our network id.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// No cipher both sides accept.
    NoCommonCipher,
    /// The peer's ephemeral key is malformed or of low order (all-zero shared secret).
    BadEphemeralKey,
    /// A sealed handshake payload failed to open.
    DecryptFailed,
    /// The peer's identity key is malformed.
    BadPublicKey,
    /// The peer's signature over the transcript does not verify.
    BadSignature,
    /// The dialer expected another peer.
    UnexpectedPeer {
        /// Whom we dialed.
        expected: PeerId,
        /// Who answered.
        got: PeerId,
    },
    /// The remote is this node itself.
    SelfConnection,
    /// The responder refused our hello.
    Rejected {
        /// Its reason.
        reason: RejectReason,
        /// The version it speaks.
        version: u32,
        /// Its network id.
        network_id: String,
    },
    /// The peer's node info breaks a limit.
    BadNodeInfo(&'static str),
    /// The handshake did not finish before its deadline.
    Timeout,
    /// The stream ended before the handshake finished.
    Closed,
    /// The system's secure random source failed.
    Rng,
    /// Input after the handshake failed.
    Poisoned,
}

/// Why a responder refused a hello, as carried in `HandshakeReject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Protocol version mismatch.
    Version,
    /// Network id mismatch.
    Network,
    /// No common cipher.
    NoCommonCipher,
    /// A reason this version does not know.
    Other,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::MessageTooLarge { len, max } => {
                write!(f, "handshake message of {len} bytes exceeds the limit of {max}")
            }
            HandshakeError::Malformed(what) => write!(f, "malformed handshake message: {what}"),
            HandshakeError::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version mismatch: ours {ours}, theirs {theirs}")
            }
            HandshakeError::NetworkMismatch { ours, theirs } => {
                write!(f, "network id mismatch: ours {ours:?}, theirs {theirs:?}")
            }
            HandshakeError::NoCommonCipher => f.write_str("no cipher in common"),
            HandshakeError::BadEphemeralKey => {
                f.write_str("peer's ephemeral key is malformed or of low order")
            }
            HandshakeError::DecryptFailed => f.write_str("sealed handshake payload failed to open"),
            HandshakeError::BadPublicKey => f.write_str("peer's identity key is malformed"),
            HandshakeError::BadSignature => f.write_str("peer's transcript signature is invalid"),
            HandshakeError::UnexpectedPeer { expected, got } => {
                write!(f, "expected peer {}, got {}", expected.short(), got.short())
            }
            HandshakeError::SelfConnection => f.write_str("connected to self"),
            HandshakeError::Rejected {
                reason,
                version,
                network_id,
            } => write!(
                f,
                "peer refused the handshake ({reason:?}); it speaks version {version} on network {network_id:?}"
            ),
            HandshakeError::BadNodeInfo(what) => write!(f, "invalid node info: {what}"),
            HandshakeError::Timeout => f.write_str("handshake timed out"),
            HandshakeError::Closed => f.write_str("stream closed during the handshake"),
            HandshakeError::Rng => f.write_str("secure random source failed"),
            HandshakeError::Poisoned => f.write_str("handshake already failed"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Why a sealed frame was refused. Every variant closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame length outside the allowed range.
    BadLength {
        /// Announced ciphertext length (tag included).
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// Authentication failed: the frame was forged, corrupted, reordered or replayed.
    OpenFailed,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The plaintext is larger than a frame carries.
    PlaintextTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The 64-bit frame counter is used up; the connection must close.
    CounterExhausted,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength { len, max } => {
                write!(
                    f,
                    "frame length {len} outside the allowed range (max {max})"
                )
            }
            FrameError::OpenFailed => f.write_str("frame failed authentication"),
            FrameError::Truncated => f.write_str("stream ended inside a frame"),
            FrameError::PlaintextTooLarge { len, max } => {
                write!(
                    f,
                    "plaintext of {len} bytes exceeds the frame limit of {max}"
                )
            }
            FrameError::CounterExhausted => f.write_str("frame counter exhausted"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A protocol violation seen by the channel mux; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxError {
    /// Bytes that are not a valid packet.
    Malformed(crate::mux::packet::PacketError),
    /// A packet for a channel this node does not serve.
    UnknownChannel(u32),
    /// A message over the channel's size limit.
    MessageTooLarge {
        /// Channel id.
        channel: u32,
        /// Limit.
        max: usize,
    },
    /// The peer sent more than the receive credit we granted.
    CreditExceeded {
        /// Channel id.
        channel: u32,
    },
    /// The peer did not answer a ping in time.
    PingTimeout,
    /// A message would take reassembly memory beyond this node's budget.
    ReassemblyBudget {
        /// Channel id.
        channel: u32,
    },
    /// A packet on a channel this connection may not use (e.g. an application
    /// channel on a lookup-only connection).
    ChannelNotAllowed(u32),
    /// A request, response or refusal on a channel that carries no requests.
    RequestsNotAllowed(u32),
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxError::Malformed(e) => write!(f, "malformed packet: {e}"),
            MuxError::UnknownChannel(c) => write!(f, "packet on unknown channel {c}"),
            MuxError::MessageTooLarge { channel, max } => {
                write!(f, "message on channel {channel} exceeds {max} bytes")
            }
            MuxError::CreditExceeded { channel } => {
                write!(f, "peer exceeded its receive credit on channel {channel}")
            }
            MuxError::PingTimeout => f.write_str("no pong before the ping timeout"),
            MuxError::ReassemblyBudget { channel } => {
                write!(
                    f,
                    "message on channel {channel} exceeds the reassembly budget"
                )
            }
            MuxError::RequestsNotAllowed(c) => {
                write!(f, "request on channel {c}, which carries none")
            }
            MuxError::ChannelNotAllowed(c) => {
                write!(f, "packet on channel {c}, not allowed on this connection")
            }
        }
    }
}

impl std::error::Error for MuxError {}

/// Why a message (or a request) was not accepted. `send` returns it at once;
/// `send_timeout` and the requests that wait say [`SendError::TimedOut`] when time ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The channel's send queue to that peer is full.
    Full,
    /// The message exceeds the channel's maximum size.
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No such channel on this node, or the peer does not serve it.
    UnknownChannel(u32),
    /// No connection to that peer.
    UnknownPeer,
    /// The node or connection is shutting down.
    Closed,
    /// No room came (or no answer) within the time the caller gave.
    TimedOut,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => f.write_str("send queue full"),
            SendError::TooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the channel limit of {max}"
                )
            }
            SendError::UnknownChannel(c) => write!(f, "unknown channel {c}"),
            SendError::UnknownPeer => f.write_str("not connected to that peer"),
            SendError::Closed => f.write_str("closed"),
            SendError::TimedOut => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a connection ended, as reported in `PeerDisconnected` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The handshake failed.
    Handshake(HandshakeError),
    /// A frame failed to open or was malformed.
    Frame(FrameError),
    /// The peer broke the channel protocol.
    Protocol(MuxError),
    /// The peer closed with this reason (raw `CloseReason` value).
    Remote(i32),
    /// The stream ended without a Close.
    Eof,
    /// A socket error.
    Io(std::io::ErrorKind),
    /// This node closed it.
    Local(LocalClose),
}

/// Why this node closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalClose {
    /// The node shuts down.
    Shutdown,
    /// The application asked for it.
    Requested,
    /// Another connection to the same peer won.
    Duplicate,
    /// The peer is banned.
    Banned,
    /// Peer limits are reached.
    TooManyPeers,
    /// Our Close went out but the peer never closed its side.
    LingerTimeout,
    /// The peer took nothing from a full send queue for longer than the stall timeout.
    Stalled,
}

impl LocalClose {
    /// The `CloseReason` value sent to the peer.
    pub fn wire_reason(self) -> i32 {
        use crate::wire::CloseReason as W;
        (match self {
            LocalClose::Shutdown | LocalClose::LingerTimeout => W::Shutdown,
            LocalClose::Requested => W::Unspecified,
            LocalClose::Duplicate => W::Duplicate,
            LocalClose::Banned => W::Banned,
            LocalClose::TooManyPeers => W::TooManyPeers,
            LocalClose::Stalled => W::Timeout,
        }) as i32
    }
}

impl DisconnectReason {
    /// A short stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            DisconnectReason::Handshake(_) => "handshake",
            DisconnectReason::Frame(_) => "frame",
            DisconnectReason::Protocol(MuxError::PingTimeout) => "ping_timeout",
            DisconnectReason::Protocol(MuxError::ReassemblyBudget { .. }) => "reassembly_budget",
            DisconnectReason::Protocol(_) => "protocol",
            DisconnectReason::Remote(_) => "remote_close",
            DisconnectReason::Eof => "eof",
            DisconnectReason::Io(_) => "io",
            DisconnectReason::Local(LocalClose::Duplicate) => "duplicate",
            DisconnectReason::Local(LocalClose::Banned) => "banned",
            DisconnectReason::Local(LocalClose::TooManyPeers) => "too_many_peers",
            DisconnectReason::Local(LocalClose::Stalled) => "stalled",
            DisconnectReason::Local(_) => "local",
        }
    }

    /// Whether the peer misbehaved (as opposed to ordinary churn).
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            DisconnectReason::Frame(_)
                | DisconnectReason::Protocol(MuxError::Malformed(_))
                | DisconnectReason::Protocol(MuxError::UnknownChannel(_))
                | DisconnectReason::Protocol(MuxError::MessageTooLarge { .. })
                | DisconnectReason::Protocol(MuxError::CreditExceeded { .. })
                | DisconnectReason::Protocol(MuxError::ChannelNotAllowed(_))
                | DisconnectReason::Protocol(MuxError::RequestsNotAllowed(_))
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Handshake(e) => write!(f, "handshake failed: {e}"),
            DisconnectReason::Frame(e) => write!(f, "bad frame: {e}"),
            DisconnectReason::Protocol(e) => write!(f, "protocol violation: {e}"),
            DisconnectReason::Remote(r) => write!(f, "closed by peer (reason {r})"),
            DisconnectReason::Eof => f.write_str("connection closed"),
            DisconnectReason::Io(kind) => write!(f, "socket error: {kind}"),
            DisconnectReason::Local(l) => write!(f, "closed locally: {l:?}"),
        }
    }
}

impl std::error::Error for DisconnectReason {}
