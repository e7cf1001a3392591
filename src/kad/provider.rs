//! A provider's signed announcement: "I offer this key, and here is what I say about
//! it". Signed by the provider, so the nodes that store and return it can neither
//! change its metadata nor name a provider that never announced.

use crate::identity::{self, Keypair, PeerId};
use crate::kad::key::Key;
use crate::kad::record::{PeerRecord, UncheckedRecord};
use crate::wire;

/// Largest metadata a provider may attach to its announcement.
pub const MAX_PROVIDER_METADATA: usize = 256;

const LABEL: &[u8] = b"meshwire/v1 provider";

/// The bytes an announcement's signature covers: the label, the key, and the
/// metadata with its length.
fn signing_bytes(key: &Key, metadata: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(LABEL.len() + 32 + 4 + metadata.len());
    b.extend_from_slice(LABEL);
    b.extend_from_slice(key);
    b.extend_from_slice(&(metadata.len() as u32).to_be_bytes());
    b.extend_from_slice(metadata);
    b
}

/// Signs the announcement of `key` with `metadata` (at most
/// [`MAX_PROVIDER_METADATA`] bytes; the caller checks).
pub fn sign(signer: &Keypair, key: &Key, metadata: &[u8]) -> Vec<u8> {
    signer.sign(&signing_bytes(key, metadata)).to_vec()
}

/// Whether `signature` is `record`'s holder announcing `key` with `metadata`.
pub fn verify(record: &PeerRecord, key: &Key, metadata: &[u8], signature: &[u8]) -> bool {
    metadata.len() <= MAX_PROVIDER_METADATA
        && identity::verify(
            &record.to_wire().public_key,
            &signing_bytes(key, metadata),
            signature,
        )
}

/// A provider of a key, as a lookup found it: its verified record and the
/// metadata it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The provider's record (where to reach it).
    pub record: PeerRecord,
    /// What it says about its offer.
    pub metadata: Vec<u8>,
    signature: Vec<u8>,
}

impl Provider {
    /// A provider whose announcement of `key` was checked.
    pub fn verified(
        record: PeerRecord,
        key: &Key,
        metadata: Vec<u8>,
        signature: Vec<u8>,
    ) -> Option<Self> {
        verify(&record, key, &metadata, &signature).then_some(Provider {
            record,
            metadata,
            signature,
        })
    }

    /// Our own announcement (signed by the caller).
    pub(crate) fn own(record: PeerRecord, metadata: Vec<u8>, signature: Vec<u8>) -> Self {
        Provider {
            record,
            metadata,
            signature,
        }
    }

    /// The provider's id.
    pub fn id(&self) -> PeerId {
        self.record.id
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::ProviderRecord {
        wire::ProviderRecord {
            peer: Some(self.record.to_wire()),
            metadata: self.metadata.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// A provider from an answer, its record's shape checked and nothing verified yet.
#[derive(Debug, Clone)]
pub struct UncheckedProvider {
    /// The record.
    pub record: UncheckedRecord,
    /// The metadata.
    pub metadata: Vec<u8>,
    /// The announcement's signature.
    pub signature: Vec<u8>,
}

impl UncheckedProvider {
    /// Checks shapes only; `None` if malformed.
    pub fn parse(raw: wire::ProviderRecord) -> Option<Self> {
        if raw.metadata.len() > MAX_PROVIDER_METADATA || raw.signature.len() != 64 {
            return None;
        }
        let record = UncheckedRecord::parse(raw.peer?).ok()?;
        Some(UncheckedProvider {
            record,
            metadata: raw.metadata,
            signature: raw.signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_provider_can_announce_and_the_metadata_is_bound() {
        let holder = Keypair::from_seed([1; 32]);
        let other = Keypair::from_seed([2; 32]);
        let record = PeerRecord::sign(&holder, &["127.0.0.1:1".parse().unwrap()], 3);
        let key = [9u8; 32];
        let sig = sign(&holder, &key, b"shard=4");
        assert!(
            Provider::verified(record.clone(), &key, b"shard=4".to_vec(), sig.clone()).is_some()
        );
        // Changed metadata, another key, another signer: all refused.
        assert!(
            Provider::verified(record.clone(), &key, b"shard=5".to_vec(), sig.clone()).is_none()
        );
        assert!(Provider::verified(record.clone(), &[8; 32], b"shard=4".to_vec(), sig).is_none());
        let forged = sign(&other, &key, b"shard=4");
        assert!(Provider::verified(record.clone(), &key, b"shard=4".to_vec(), forged).is_none());
        // Oversized metadata is refused even when signed.
        let big = vec![0u8; MAX_PROVIDER_METADATA + 1];
        let sig = sign(&holder, &key, &big);
        assert!(Provider::verified(record, &key, big, sig).is_none());
    }
}
