//! Signed peer records: where a node can be reached, said by the node itself.

use std::net::SocketAddr;

use crate::identity::{self, Keypair, PeerId, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::wire;

/// Most addresses in a record.
pub const MAX_RECORD_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 64;
const LABEL: &[u8] = b"meshwire/v1 peer record";

/// A verified peer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Whose record.
    pub id: PeerId,
    /// Where it listens.
    pub addrs: Vec<SocketAddr>,
    /// Its sequence number; newer wins.
    pub seq: u64,
    wire: wire::PeerRecord,
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Malformed key, signature or addresses.
    Malformed,
    /// The signature does not verify.
    BadSignature,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordError::Malformed => "malformed peer record",
            RecordError::BadSignature => "peer record signature invalid",
        })
    }
}

impl std::error::Error for RecordError {}

/// The bytes a record's signature covers.
fn signing_bytes(seq: u64, addrs: &[String]) -> Vec<u8> {
    let mut b = Vec::with_capacity(LABEL.len() + 8 + addrs.len() * 24);
    b.extend_from_slice(LABEL);
    b.extend_from_slice(&seq.to_be_bytes());
    for a in addrs {
        b.extend_from_slice(&(a.len() as u32).to_be_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b
}

impl PeerRecord {
    /// Signs a record of `addrs` with sequence number `seq`.
    pub fn sign(key: &Keypair, addrs: &[SocketAddr], seq: u64) -> Self {
        let addrs: Vec<SocketAddr> = addrs.iter().take(MAX_RECORD_ADDRS).copied().collect();
        let strings: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let signature = key.sign(&signing_bytes(seq, &strings)).to_vec();
        PeerRecord {
            id: key.peer_id(),
            addrs,
            seq,
            wire: wire::PeerRecord {
                public_key: key.public_key().to_vec(),
                addrs: strings,
                seq,
                signature,
            },
        }
    }

    /// Verifies a record from the wire.
    pub fn verify(raw: wire::PeerRecord) -> Result<Self, RecordError> {
        UncheckedRecord::parse(raw)?.verify()
    }

    /// Whether `raw` is this very record, byte for byte (so already verified).
    pub fn is_same(&self, raw: &wire::PeerRecord) -> bool {
        self.wire == *raw
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::PeerRecord {
        self.wire.clone()
    }
}

/// A record from the wire whose shape is checked but whose signature is not yet:
/// cheap to hold, and verified only when it is about to be used (dialed, stored or
/// passed on), so a peer's list of twenty records costs one check per record we
/// actually contact, not twenty per answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncheckedRecord {
    /// Whose record it claims to be (the digest of its key: a lie only costs the
    /// liar the signature check that then fails).
    pub id: PeerId,
    /// Where it says the peer listens.
    pub addrs: Vec<SocketAddr>,
    raw: wire::PeerRecord,
}

impl UncheckedRecord {
    /// Checks lengths and parses the addresses; no signature check.
    pub fn parse(raw: wire::PeerRecord) -> Result<Self, RecordError> {
        if raw.public_key.len() != PUBLIC_KEY_LEN
            || raw.signature.len() != SIGNATURE_LEN
            || raw.addrs.len() > MAX_RECORD_ADDRS
            || raw.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
        {
            return Err(RecordError::Malformed);
        }
        let addrs = raw
            .addrs
            .iter()
            .map(|a| a.parse().map_err(|_| RecordError::Malformed))
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        Ok(UncheckedRecord {
            id: PeerId::from_public_key(&raw.public_key),
            addrs,
            raw,
        })
    }

    /// The wire form, as received.
    pub fn raw(&self) -> &wire::PeerRecord {
        &self.raw
    }

    /// Checks the signature.
    pub fn verify(self) -> Result<PeerRecord, RecordError> {
        let raw = self.raw;
        if !identity::verify(
            &raw.public_key,
            &signing_bytes(raw.seq, &raw.addrs),
            &raw.signature,
        ) {
            return Err(RecordError::BadSignature);
        }
        Ok(PeerRecord {
            id: self.id,
            addrs: self.addrs,
            seq: raw.seq,
            wire: raw,
        })
    }
}

/// Records whose signatures were checked lately, by a digest of all their fields:
/// the same record seen again (in another answer, as another request's sender) is
/// not checked again. Small per entry (16 bytes), so it can be large in count.
#[derive(Debug)]
pub struct VerifiedRecords {
    seen: crate::collections::Set<[u8; 16]>,
    cap: usize,
}

impl VerifiedRecords {
    /// A cache of at most `cap` digests (cleared when full).
    pub fn new(cap: usize) -> Self {
        VerifiedRecords {
            seen: Default::default(),
            cap,
        }
    }

    /// Verifies `record` unless the very same one was verified before.
    pub fn verify(&mut self, record: UncheckedRecord) -> Result<PeerRecord, RecordError> {
        let digest = Self::digest(record.raw());
        if self.seen.contains(&digest) {
            let raw = record.raw;
            return Ok(PeerRecord {
                id: record.id,
                addrs: record.addrs,
                seq: raw.seq,
                wire: raw,
            });
        }
        let verified = record.verify()?;
        if self.seen.len() >= self.cap {
            self.seen.clear();
        }
        self.seen.insert(digest);
        Ok(verified)
    }

    fn digest(raw: &wire::PeerRecord) -> [u8; 16] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&raw.public_key);
        ctx.update(&raw.signature);
        ctx.update(&signing_bytes(raw.seq, &raw.addrs));
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.finish().as_ref()[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_records_verify_and_tampering_is_caught() {
        let key = Keypair::generate().unwrap();
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1000".parse().unwrap()];
        let rec = PeerRecord::sign(&key, &addrs, 7);
        let back = PeerRecord::verify(rec.to_wire()).unwrap();
        assert_eq!(
            (back.id, back.seq, back.addrs.clone()),
            (key.peer_id(), 7, addrs)
        );

        let mut forged = rec.to_wire();
        forged.addrs = vec!["10.6.6.6:1".into()];
        assert_eq!(PeerRecord::verify(forged), Err(RecordError::BadSignature));
        let mut bumped = rec.to_wire();
        bumped.seq = 8;
        assert_eq!(PeerRecord::verify(bumped), Err(RecordError::BadSignature));
        // Someone else's key with the victim's addresses and signature.
        let other = Keypair::generate().unwrap();
        let mut stolen = rec.to_wire();
        stolen.public_key = other.public_key().to_vec();
        assert_eq!(PeerRecord::verify(stolen), Err(RecordError::BadSignature));
        let mut junk = rec.to_wire();
        junk.addrs = vec!["not an address".into()];
        assert_eq!(PeerRecord::verify(junk), Err(RecordError::Malformed));
    }

    #[test]
    fn the_verified_cache_skips_only_byte_identical_records() {
        let key = Keypair::generate().unwrap();
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:1000".parse().unwrap()];
        let rec = PeerRecord::sign(&key, &addrs, 7);
        let mut cache = VerifiedRecords::new(4);
        let parse = |w: wire::PeerRecord| UncheckedRecord::parse(w).unwrap();
        assert_eq!(cache.verify(parse(rec.to_wire())), Ok(rec.clone()));
        // Seen before: accepted again (from the cache).
        assert_eq!(cache.verify(parse(rec.to_wire())), Ok(rec.clone()));
        // The same key and signature over other addresses or another seq is checked,
        // and fails, cache or not.
        let mut moved = rec.to_wire();
        moved.addrs = vec!["10.6.6.6:1".into()];
        assert_eq!(cache.verify(parse(moved)), Err(RecordError::BadSignature));
        let mut bumped = rec.to_wire();
        bumped.seq = 8;
        assert_eq!(cache.verify(parse(bumped)), Err(RecordError::BadSignature));
        // Full: cleared, and still correct.
        for seq in 0..6 {
            let r = PeerRecord::sign(&key, &addrs, seq);
            assert_eq!(cache.verify(parse(r.to_wire())), Ok(r));
        }
        assert!(cache.seen.len() <= 4);
    }
}
