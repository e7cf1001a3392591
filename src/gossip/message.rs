//! Published messages: ids, origin signatures, validation outcomes.

use crate::identity::{self, Keypair, PeerId, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::wire;

/// A message id: SHA-256 of origin and seqno (signed mode) or of topic and data.
pub type MessageId = [u8; 32];

const LABEL: &[u8] = b"meshwire/v1 gossip";
/// The label of a message that carries its origin's publish time: a different
/// label, so a timed message's signature can never pass for an untimed one's (and
/// the time can be neither stripped nor moved into the data).
const LABEL_TIMED: &[u8] = b"meshwire/v1 gossip timed";

/// What the application's validator says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Deliver and forward.
    Accept,
    /// Invalid: drop, never forward, penalize the sender.
    Reject,
    /// Drop without penalty (e.g. stale).
    Ignore,
}

/// The id of a message: of its origin (the PeerId of `origin_key`) and seqno, or of
/// topic and data when anonymous.
pub fn message_id(msg: &wire::GossipMessage) -> MessageId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    if msg.origin_key.is_empty() {
        ctx.update(b"anon");
        ctx.update(&(msg.topic.len() as u32).to_be_bytes());
        ctx.update(msg.topic.as_bytes());
        ctx.update(&msg.data);
    } else {
        ctx.update(PeerId::from_public_key(&msg.origin_key).as_bytes());
        ctx.update(&msg.seqno.to_be_bytes());
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    id
}

/// What the origin signs: a 32-byte digest of label, topic, seqno, publish time (when
/// set) and data, taken in one pass over the payload where it lies (no copy of it
/// to sign or verify).
fn signed_digest(topic: &str, seqno: u64, origin_time_micros: u64, data: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(if origin_time_micros == 0 {
        LABEL
    } else {
        LABEL_TIMED
    });
    ctx.update(&(topic.len() as u32).to_be_bytes());
    ctx.update(topic.as_bytes());
    ctx.update(&seqno.to_be_bytes());
    if origin_time_micros != 0 {
        ctx.update(&origin_time_micros.to_be_bytes());
    }
    ctx.update(data);
    let mut d = [0u8; 32];
    d.copy_from_slice(ctx.finish().as_ref());
    d
}

/// A new message, signed by `key` or anonymous. `origin_time_micros` (Unix
/// microseconds, 0 = none) is signed with it; an anonymous message carries none.
pub fn build(
    key: Option<&Keypair>,
    topic: &str,
    seqno: u64,
    origin_time_micros: u64,
    data: Vec<u8>,
) -> wire::GossipMessage {
    match key {
        Some(k) => wire::GossipMessage {
            origin_key: k.public_key().to_vec(),
            seqno,
            topic: topic.to_string(),
            signature: k
                .sign(&signed_digest(topic, seqno, origin_time_micros, &data))
                .to_vec(),
            data,
            hops: 0,
            origin_time_micros,
        },
        None => wire::GossipMessage {
            topic: topic.to_string(),
            data,
            ..Default::default()
        },
    }
}

/// Why a message's envelope is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Signature missing where required, or fields malformed.
    Malformed,
    /// The signature does not match the key.
    BadSignature,
}

/// Checks the envelope: a signed message must verify under its origin key; an
/// anonymous one must carry no key or signature. Returns the origin.
pub fn verify(
    msg: &wire::GossipMessage,
    require_signature: bool,
) -> Result<Option<PeerId>, EnvelopeError> {
    if msg.origin_key.is_empty() && msg.signature.is_empty() {
        // Unsigned, a publish time would be anyone's word: it skews every
        // receiver's delay figures, so it is refused, not ignored.
        return if require_signature || msg.origin_time_micros != 0 {
            Err(EnvelopeError::Malformed)
        } else {
            Ok(None)
        };
    }
    if msg.origin_key.len() != PUBLIC_KEY_LEN || msg.signature.len() != SIGNATURE_LEN {
        return Err(EnvelopeError::Malformed);
    }
    let origin = PeerId::from_public_key(&msg.origin_key);
    if !identity::verify(
        &msg.origin_key,
        &signed_digest(&msg.topic, msg.seqno, msg.origin_time_micros, &msg.data),
        &msg.signature,
    ) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok(Some(origin))
}

/// Reads the id of the first published message from the start of a `GossipRpc`
/// (e.g. the first fragment of a large one), if the bytes reach that far.
pub fn peek_first_id(prefix: &[u8]) -> Option<MessageId> {
    peek_first(prefix).map(|(id, _)| id)
}

/// The id of the first published message of a `GossipRpc` prefix, and its topic when
/// the prefix reaches it.
pub fn peek_first(prefix: &[u8]) -> Option<(MessageId, Option<String>)> {
    // GossipRpc field 1 (publish), length-delimited.
    let mut r = prefix;
    let key = read_varint(&mut r)?;
    if key != (1 << 3 | 2) {
        return None;
    }
    let _len = read_varint(&mut r)?;
    // GossipMessage field 1 (origin key, 32 bytes) then field 2 (seqno).
    if read_varint(&mut r)? != (1 << 3 | 2) || read_varint(&mut r)? != 32 || r.len() < 32 {
        return None;
    }
    let (key, mut rest) = r.split_at(32);
    let seqno = if rest.first() == Some(&(2 << 3)) {
        rest = &rest[1..];
        read_varint(&mut rest)?
    } else {
        0
    };
    let msg = wire::GossipMessage {
        origin_key: key.to_vec(),
        seqno,
        ..Default::default()
    };
    // Field 3 (topic), if it is next and whole in the prefix.
    let topic = (rest.first() == Some(&(3 << 3 | 2)))
        .then(|| {
            rest = &rest[1..];
            let len = usize::try_from(read_varint(&mut rest)?).ok()?;
            let name = rest.get(..len)?;
            String::from_utf8(name.to_vec()).ok()
        })
        .flatten();
    Some((message_id(&msg), topic))
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn signed_messages_verify_and_tampering_is_caught() {
        let k = Keypair::from_seed([3; 32]);
        let m = build(Some(&k), "blocks", 7, 0, b"payload".to_vec());
        assert_eq!(verify(&m, true), Ok(Some(k.peer_id())));
        let mut bad = m.clone();
        bad.data[0] ^= 1;
        assert_eq!(verify(&bad, true), Err(EnvelopeError::BadSignature));
        let mut hops = m.clone();
        hops.hops = 5;
        assert!(verify(&hops, true).is_ok(), "hops are not signed");
        let mut other = m.clone();
        other.origin_key = Keypair::from_seed([9; 32]).public_key().to_vec();
        assert_eq!(verify(&other, true), Err(EnvelopeError::BadSignature));
        let mut short = m.clone();
        short.origin_key.pop();
        assert_eq!(verify(&short, true), Err(EnvelopeError::Malformed));
        let anon = build(None, "blocks", 0, 0, b"x".to_vec());
        assert_eq!(verify(&anon, true), Err(EnvelopeError::Malformed));
        assert_eq!(verify(&anon, false), Ok(None));
        let mut anon_timed = anon;
        anon_timed.origin_time_micros = 5;
        assert_eq!(verify(&anon_timed, false), Err(EnvelopeError::Malformed));
    }

    #[test]
    fn the_publish_time_is_signed_and_cannot_be_stripped_or_moved_into_the_data() {
        let k = Keypair::from_seed([3; 32]);
        let t = 1_700_000_000_123_456u64;
        let m = build(Some(&k), "blocks", 7, t, b"payload".to_vec());
        assert_eq!(m.origin_time_micros, t);
        assert_eq!(verify(&m, true), Ok(Some(k.peer_id())));
        let mut later = m.clone();
        later.origin_time_micros += 1;
        assert_eq!(verify(&later, true), Err(EnvelopeError::BadSignature));
        let mut stripped = m.clone();
        stripped.origin_time_micros = 0;
        assert_eq!(verify(&stripped, true), Err(EnvelopeError::BadSignature));
        // The time's bytes put after the data of an untimed message: the labels
        // differ, so this is no signature of it.
        let mut moved = m.clone();
        moved.origin_time_micros = 0;
        moved.data.extend_from_slice(&t.to_be_bytes());
        assert_eq!(verify(&moved, true), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn the_id_is_readable_from_the_first_bytes_of_an_rpc() {
        let k = Keypair::from_seed([4; 32]);
        let m = build(Some(&k), "blocks", 300, 9, vec![7; 100_000]);
        let rpc = wire::GossipRpc {
            publish: vec![m.clone()],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(peek_first_id(&rpc[..100]), Some(message_id(&m)));
        assert_eq!(peek_first_id(&rpc[..20]), None);
    }
}
