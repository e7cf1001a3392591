//! What a channel message is: a plain one-way message, or one leg of a request.
//! The tag rides on a message's first fragment (`PacketMsg` fields 5–7).

/// Why a request was refused before the application saw it (`RefuseReason` on the
/// wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Too many of the requester's (or the channel's) requests wait for answers.
    Busy,
    /// The receiver takes no requests on this channel.
    Unsupported,
    /// The receiver is shutting down.
    ShuttingDown,
    /// A reason this version does not know (its raw value).
    Other(i32),
}

impl RefuseReason {
    /// Its value on the wire.
    pub fn to_wire(self) -> i32 {
        match self {
            RefuseReason::Busy => 1,
            RefuseReason::Unsupported => 2,
            RefuseReason::ShuttingDown => 3,
            RefuseReason::Other(v) => v,
        }
    }

    /// From its value on the wire.
    pub fn from_wire(v: i32) -> Self {
        match v {
            1 => RefuseReason::Busy,
            2 => RefuseReason::Unsupported,
            3 => RefuseReason::ShuttingDown,
            v => RefuseReason::Other(v),
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::Busy => write!(f, "busy"),
            RefuseReason::Unsupported => write!(f, "no requests on this channel"),
            RefuseReason::ShuttingDown => write!(f, "shutting down"),
            RefuseReason::Other(v) => write!(f, "refused ({v})"),
        }
    }
}

/// A message's kind, with the correlation id of a request's legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Tag {
    /// A one-way message.
    #[default]
    Plain,
    /// A request under this id (the requester's choice).
    Request(u64),
    /// The answer to the request with this id.
    Response(u64),
    /// The request with this id was refused; the message is empty.
    Refusal(u64, RefuseReason),
}

/// `MsgKind` values on the wire.
pub(crate) const KIND_PLAIN: u64 = 0;
pub(crate) const KIND_REQUEST: u64 = 1;
pub(crate) const KIND_RESPONSE: u64 = 2;
pub(crate) const KIND_REFUSAL: u64 = 3;

impl Tag {
    /// `(kind, request_id, refuse_reason)` as written; zeros are left out.
    pub(crate) fn to_wire(self) -> (u64, u64, i32) {
        match self {
            Tag::Plain => (KIND_PLAIN, 0, 0),
            Tag::Request(id) => (KIND_REQUEST, id, 0),
            Tag::Response(id) => (KIND_RESPONSE, id, 0),
            Tag::Refusal(id, why) => (KIND_REFUSAL, id, why.to_wire()),
        }
    }

    /// From the three fields; `None` for a kind this version does not know.
    pub(crate) fn from_wire(kind: u64, id: u64, refuse: i32) -> Option<Self> {
        Some(match kind {
            KIND_PLAIN => Tag::Plain,
            KIND_REQUEST => Tag::Request(id),
            KIND_RESPONSE => Tag::Response(id),
            KIND_REFUSAL => Tag::Refusal(id, RefuseReason::from_wire(refuse)),
            _ => return None,
        })
    }
}
