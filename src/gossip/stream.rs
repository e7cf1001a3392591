//! Large messages as a signed head and hashed chunks (cut-through forwarding).
//!
//! The head carries everything but the data, with the SHA-256 of every chunk, under
//! the origin's signature. A node checks the head once (one signature), and then each
//! chunk against its hash (one SHA-256 pass over the data, the same work a signature
//! over the whole payload costs). So a chunk can be forwarded the moment it arrives
//! and checked: nothing unauthenticated is ever passed on, and an IDONTWANT sent on
//! the head is backed by the origin's signature, not by a peer's word.

use std::sync::Arc;

use prost::Message;

use crate::gossip::message::{EnvelopeError, MessageId};
use crate::identity::{self, Keypair, PeerId, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::wire;

const LABEL: &[u8] = b"meshwire/v1 gossip stream";
/// The label of a head that carries its origin's publish time (see
/// `message::LABEL_TIMED`: the time can be neither stripped nor changed).
const LABEL_TIMED: &[u8] = b"meshwire/v1 gossip stream timed";
/// Length of one chunk hash.
pub const HASH_LEN: usize = 32;
/// Smallest chunk a head may announce.
pub const MIN_CHUNK: usize = 1024;
/// Most chunks one message may have (its hashes then take 32 KiB of the head).
pub const MAX_CHUNKS: usize = 1024;

/// Why a head does not describe a well-formed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// More data than the maximum message size.
    TooLarge,
    /// Sizes, chunk count or hash list inconsistent, or a field of the wrong length.
    Malformed,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::TooLarge => "streamed message larger than the maximum",
            HeadError::Malformed => "malformed stream head",
        })
    }
}

impl std::error::Error for HeadError {}

/// How many chunks of `chunk_size` carry `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1)))
}

/// Checks the shape of a head (no signature): sizes within `max_size`, the chunk
/// size and count within bounds, one hash per chunk, keys and ids of their lengths.
/// Returns the number of chunks.
pub fn check_head(head: &wire::StreamHead, max_size: usize) -> Result<usize, HeadError> {
    if head.size > max_size as u64 {
        return Err(HeadError::TooLarge);
    }
    let chunk = head.chunk_size as usize;
    if head.size == 0 || chunk < MIN_CHUNK {
        return Err(HeadError::Malformed);
    }
    let n = chunk_count(head.size, head.chunk_size);
    let fields_ok = head.origin.len() == 32
        && head.public_key.len() == PUBLIC_KEY_LEN
        && head.signature.len() == SIGNATURE_LEN;
    if n > MAX_CHUNKS as u64 || head.chunk_hashes.len() as u64 != n * HASH_LEN as u64 || !fields_ok
    {
        return Err(HeadError::Malformed);
    }
    Ok(n as usize)
}

/// The id of a streamed message: the same rule as for a whole signed message
/// (origin and seqno), so the two forms of one message are one id.
pub fn head_id(head: &wire::StreamHead) -> MessageId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&head.origin);
    ctx.update(&head.seqno.to_be_bytes());
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    id
}

fn signing_bytes(head: &wire::StreamHead) -> Vec<u8> {
    let timed = head.origin_time_micros != 0;
    let mut b =
        Vec::with_capacity(LABEL_TIMED.len() + 36 + head.topic.len() + head.chunk_hashes.len());
    b.extend_from_slice(if timed { LABEL_TIMED } else { LABEL });
    b.extend_from_slice(&(head.topic.len() as u32).to_be_bytes());
    b.extend_from_slice(head.topic.as_bytes());
    b.extend_from_slice(&head.seqno.to_be_bytes());
    if timed {
        b.extend_from_slice(&head.origin_time_micros.to_be_bytes());
    }
    b.extend_from_slice(&head.size.to_be_bytes());
    b.extend_from_slice(&head.chunk_size.to_be_bytes());
    b.extend_from_slice(&head.chunk_hashes);
    b
}

/// Checks a head's origin and signature (call [`check_head`] first: it is cheap).
pub fn verify_head(head: &wire::StreamHead) -> Result<PeerId, EnvelopeError> {
    let origin = PeerId::from_public_key(&head.public_key);
    if origin.as_bytes()[..] != head.origin[..] {
        return Err(EnvelopeError::BadSignature);
    }
    if !identity::verify(&head.public_key, &signing_bytes(head), &head.signature) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok(origin)
}

/// The length chunk `index` must have.
pub fn chunk_len(head: &wire::StreamHead, index: usize) -> usize {
    let chunk = u64::from(head.chunk_size);
    let start = index as u64 * chunk;
    head.size.saturating_sub(start).min(chunk) as usize
}

/// Whether `data` is chunk `index` of the message `head` describes.
pub fn chunk_matches(head: &wire::StreamHead, index: usize, data: &[u8]) -> bool {
    let Some(want) = head
        .chunk_hashes
        .get(index * HASH_LEN..(index + 1) * HASH_LEN)
    else {
        return false;
    };
    data.len() == chunk_len(head, index)
        && ring::digest::digest(&ring::digest::SHA256, data).as_ref() == want
}

/// One chunk, encoded as a whole gossip RPC: encoded once and shared by every link
/// it is forwarded on.
pub fn chunk_rpc(id: &MessageId, index: u32, data: Vec<u8>) -> Arc<Vec<u8>> {
    let rpc = wire::GossipRpc {
        chunk: vec![wire::StreamChunk {
            id: id.to_vec(),
            index,
            data,
        }],
        ..Default::default()
    };
    Arc::new(rpc.encode_to_vec())
}

/// A message of ours cut into a signed head and its encoded chunk RPCs;
/// `origin_time_micros` (Unix microseconds, 0 = none) is signed with the head.
pub fn build(
    key: &Keypair,
    topic: &str,
    seqno: u64,
    origin_time_micros: u64,
    data: &[u8],
    chunk_size: usize,
) -> (wire::StreamHead, Vec<Arc<Vec<u8>>>) {
    let chunk_size = chunk_size
        .max(MIN_CHUNK)
        .max(data.len().div_ceil(MAX_CHUNKS));
    let mut hashes = Vec::with_capacity(data.len().div_ceil(chunk_size) * HASH_LEN);
    for c in data.chunks(chunk_size) {
        hashes.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, c).as_ref());
    }
    let mut head = wire::StreamHead {
        origin: key.peer_id().as_bytes().to_vec(),
        seqno,
        topic: topic.to_string(),
        size: data.len() as u64,
        chunk_size: chunk_size as u32,
        chunk_hashes: hashes,
        public_key: key.public_key().to_vec(),
        signature: Vec::new(),
        hops: 1,
        origin_time_micros,
    };
    head.signature = key.sign(&signing_bytes(&head)).to_vec();
    let id = head_id(&head);
    let chunks = data
        .chunks(chunk_size)
        .enumerate()
        .map(|(i, c)| chunk_rpc(&id, i as u32, c.to_vec()))
        .collect();
    (head, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Keypair {
        Keypair::from_seed([7; 32])
    }

    fn decode_chunk(rpc: &[u8]) -> wire::StreamChunk {
        let mut r = wire::GossipRpc::decode(rpc).unwrap();
        r.chunk.remove(0)
    }

    #[test]
    fn a_built_stream_verifies_and_every_chunk_matches_its_hash() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i ^ (i >> 9)) as u8).collect();
        let (head, chunks) = build(&key(), "t", 5, 0, &data, 16 * 1024);
        assert_eq!(check_head(&head, 1 << 20), Ok(7));
        assert_eq!(verify_head(&head), Ok(key().peer_id()));
        assert_eq!(chunks.len(), 7);
        let mut joined = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let c = decode_chunk(c);
            assert_eq!(c.index as usize, i);
            assert_eq!(c.id, head_id(&head).to_vec());
            assert!(chunk_matches(&head, i, &c.data));
            assert!(!chunk_matches(&head, (i + 1) % 7, &c.data));
            joined.extend_from_slice(&c.data);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn tampered_heads_and_chunks_are_refused() {
        let data = vec![1u8; 40_000];
        let (head, chunks) = build(&key(), "t", 1, 0, &data, 16 * 1024);
        let mut h = head.clone();
        h.size -= 1;
        assert_eq!(verify_head(&h), Err(EnvelopeError::BadSignature));
        let mut h = head.clone();
        h.chunk_hashes[0] ^= 1;
        assert_eq!(verify_head(&h), Err(EnvelopeError::BadSignature));
        let mut h = head.clone();
        h.chunk_hashes.pop();
        assert_eq!(check_head(&h, 1 << 20), Err(HeadError::Malformed));
        assert_eq!(check_head(&head, 1000), Err(HeadError::TooLarge));
        let mut h = head.clone();
        h.chunk_size = 10;
        assert_eq!(check_head(&h, 1 << 20), Err(HeadError::Malformed));
        let mut h = head.clone();
        h.size = u64::MAX;
        assert_eq!(check_head(&h, usize::MAX), Err(HeadError::Malformed));
        let mut c = decode_chunk(&chunks[0]);
        c.data[3] ^= 1;
        assert!(!chunk_matches(&head, 0, &c.data));
        assert!(!chunk_matches(&head, 99, &c.data), "index past the end");
        c.data.pop();
        assert!(!chunk_matches(&head, 0, &c.data));
    }

    #[test]
    fn a_heads_publish_time_is_signed() {
        let data = vec![1u8; 40_000];
        let (head, _) = build(&key(), "t", 1, 1_700_000_000_000_001, &data, 16 * 1024);
        assert_eq!(verify_head(&head), Ok(key().peer_id()));
        let mut h = head.clone();
        h.origin_time_micros -= 1;
        assert_eq!(verify_head(&h), Err(EnvelopeError::BadSignature));
        h.origin_time_micros = 0;
        assert_eq!(verify_head(&h), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn the_chunk_size_grows_so_no_message_needs_more_than_the_most_chunks() {
        let data = vec![0u8; 4 << 20];
        let (head, chunks) = build(&key(), "t", 1, 0, &data, MIN_CHUNK);
        assert!(chunks.len() <= MAX_CHUNKS);
        assert_eq!(check_head(&head, 4 << 20), Ok(chunks.len()));
    }
}
