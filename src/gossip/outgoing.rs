//! A message of ours, built and signed (on any thread) in the form it goes out in.

use std::sync::Arc;
use std::time::SystemTime;

use crate::gossip::{message, stream, GossipConfig, MessageId};
use crate::identity::Keypair;
use crate::wire;

/// A message ready to publish: whole, or (large and signed, with cut-through on) as
/// a signed head and its encoded chunks.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A whole message.
    Whole(wire::GossipMessage),
    /// A stream: the head and the chunk RPCs.
    Stream(wire::StreamHead, Vec<Arc<Vec<u8>>>),
}

impl Outgoing {
    /// Builds `data` for `topic` with `seqno`, signed by `key` (`None`: anonymous),
    /// in the form `config` asks for at its size; stamped with `now` (the wall
    /// clock, read by the caller; `None`: unknown) when `config.origin_time` is on
    /// and it is signed.
    pub fn build(
        config: &GossipConfig,
        key: Option<&Keypair>,
        topic: &str,
        seqno: u64,
        data: Vec<u8>,
        now: Option<SystemTime>,
    ) -> Outgoing {
        let time = match now {
            Some(t) if config.origin_time && key.is_some() => unix_micros(t),
            _ => 0,
        };
        match key {
            Some(k) if config.cut_through && data.len() >= config.stream_min_size => {
                let (head, chunks) =
                    stream::build(k, topic, seqno, time, &data, config.stream_chunk);
                Outgoing::Stream(head, chunks)
            }
            _ => {
                let mut msg = message::build(key, topic, seqno, time, data);
                msg.hops = 1;
                Outgoing::Whole(msg)
            }
        }
    }

    /// Its id.
    pub fn id(&self) -> MessageId {
        match self {
            Outgoing::Whole(m) => message::message_id(m),
            Outgoing::Stream(head, _) => stream::head_id(head),
        }
    }

    /// Its topic.
    pub fn topic(&self) -> &str {
        match self {
            Outgoing::Whole(m) => &m.topic,
            Outgoing::Stream(head, _) => &head.topic,
        }
    }
}

/// Microseconds since the Unix epoch (0, which stamps nothing, for a clock set at
/// or before 1970).
pub(crate) fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
