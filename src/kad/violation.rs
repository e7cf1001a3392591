//! What a peer did wrong in the DHT, as the node is told it (and penalizes it).

/// A DHT protocol violation by a peer (or, for [`KadViolation::RequestRate`], a
/// nuisance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KadViolation {
    /// The bytes are no `KadMessage`.
    Undecodable,
    /// A message over its limits (records, providers, sizes), checked before decoding.
    OverLimits,
    /// A message with no request or response in it.
    Empty,
    /// A request with no body.
    NoBody,
    /// A key not 32 bytes long.
    BadKey,
    /// The sender's record describes someone else.
    SenderRecordOfAnother,
    /// The sender's record does not verify.
    InvalidSenderRecord,
    /// A record passed on does not verify (forged).
    ForgedRecord,
    /// A peer record with a field of the wrong shape.
    MalformedRecord,
    /// `AddProvider` from a peer that sent no record of itself.
    ProviderWithoutRecord,
    /// Provider metadata over its bound.
    ProviderMetadataTooLarge,
    /// A provider announcement whose signature does not verify.
    BadProviderSignature,
    /// An answer to a request we sent to another peer, or never sent.
    UnsolicitedAnswer,
    /// An answer with more records than asked for.
    OversizedAnswer,
    /// More requests than its rate allows (a nuisance: a smaller penalty).
    RequestRate,
}

impl KadViolation {
    /// A nuisance rather than a violation: it costs a tenth of a violation's
    /// penalty.
    pub fn is_minor(self) -> bool {
        matches!(self, KadViolation::RequestRate)
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            KadViolation::Undecodable => "undecodable kad message",
            KadViolation::OverLimits => "kad message over its limits",
            KadViolation::Empty => "empty kad message",
            KadViolation::NoBody => "kad request without body",
            KadViolation::BadKey => "bad key",
            KadViolation::SenderRecordOfAnother => "sender record of another peer",
            KadViolation::InvalidSenderRecord => "invalid sender record",
            KadViolation::ForgedRecord => "forged peer record",
            KadViolation::MalformedRecord => "malformed peer record",
            KadViolation::ProviderWithoutRecord => "provider without a record",
            KadViolation::ProviderMetadataTooLarge => "provider metadata too large",
            KadViolation::BadProviderSignature => "bad provider signature",
            KadViolation::UnsolicitedAnswer => "answer to a request sent elsewhere",
            KadViolation::OversizedAnswer => "oversized kad answer",
            KadViolation::RequestRate => "kad request rate",
        }
    }
}

impl std::fmt::Display for KadViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl std::error::Error for KadViolation {}
