//! What a peer did wrong in gossip, and how much it costs it.

use std::fmt;

use crate::gossip::rpc::RpcShapeError;

/// A gossip misdeed, reported to the node with [`crate::gossip::GossipOutput::Penalize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Penalty {
    /// The RPC is not a `GossipRpc`.
    Undecodable,
    /// The RPC holds more than [`crate::gossip::rpc::RpcLimits`] allow.
    OverLimits(RpcShapeError),
    /// A message larger than the maximum message size.
    OversizedMessage,
    /// A message whose envelope or signature is bad.
    BadSignature,
    /// A message the application's validator rejected.
    InvalidMessage,
    /// Too many topics, or a topic name too long.
    TopicLimits,
    /// A GRAFT while we asked it to back off.
    GraftDuringBackoff,
    /// A PRUNE whose peer-exchange records do not verify.
    ForgedPeerExchange,
    /// A first fragment announced a message that never completed in time.
    BrokenAnnouncement,
    /// A stream head whose sizes, chunk count or hashes do not agree.
    MalformedStream,
    /// A chunk that does not match its signed hash (or has no place in its stream).
    BadChunk,
}

impl Penalty {
    /// Severe penalties count as protocol violations for the peer manager; the others
    /// cost a fifth of one.
    pub fn is_severe(self) -> bool {
        matches!(
            self,
            Penalty::Undecodable
                | Penalty::OverLimits(_)
                | Penalty::OversizedMessage
                | Penalty::BadSignature
                | Penalty::InvalidMessage
                | Penalty::ForgedPeerExchange
                | Penalty::MalformedStream
                | Penalty::BadChunk
        )
    }

    /// What it adds to the peer's invalid-message counter in the gossip score.
    pub(crate) fn weight(self) -> f64 {
        match self {
            Penalty::GraftDuringBackoff | Penalty::BrokenAnnouncement => 0.25,
            _ => 1.0,
        }
    }
}

impl fmt::Display for Penalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Penalty::Undecodable => f.write_str("undecodable gossip rpc"),
            Penalty::OverLimits(e) => write!(f, "{e}"),
            Penalty::OversizedMessage => f.write_str("oversized gossip message"),
            Penalty::BadSignature => f.write_str("bad gossip signature"),
            Penalty::InvalidMessage => f.write_str("invalid gossip message"),
            Penalty::TopicLimits => f.write_str("too many or too long topics"),
            Penalty::GraftDuringBackoff => f.write_str("graft during backoff"),
            Penalty::ForgedPeerExchange => f.write_str("forged peer-exchange record"),
            Penalty::BrokenAnnouncement => f.write_str("announced message never completed"),
            Penalty::MalformedStream => f.write_str("malformed stream head"),
            Penalty::BadChunk => f.write_str("chunk does not match its signed hash"),
        }
    }
}

impl std::error::Error for Penalty {}
