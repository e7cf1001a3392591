//! Provider records: who offers a key (a service, a partition), with a TTL and
//! bounded storage per key and in total.

use crate::collections::Map;
use std::time::{Duration, Instant};

use crate::identity::PeerId;
use crate::kad::key::Key;
use crate::kad::provider::Provider;

/// A bounded store of provider records.
#[derive(Debug, Clone)]
pub struct ProviderStore {
    by_key: Map<Key, Vec<(Provider, Instant)>>,
    per_key: usize,
    total_max: usize,
    total: usize,
    /// Keys each provider is stored for (first come, first served no longer lets
    /// one peer take the whole store).
    per_peer: Map<PeerId, usize>,
    per_peer_max: usize,
}

impl ProviderStore {
    /// A store holding at most `per_key` providers per key, `total` in all, and
    /// `per_peer` keys for any one provider.
    pub fn new(per_key: usize, total: usize, per_peer: usize) -> Self {
        ProviderStore {
            by_key: Map::default(),
            per_key,
            total_max: total,
            total: 0,
            per_peer: Map::default(),
            per_peer_max: per_peer,
        }
    }

    /// Adds or renews `provider` for `key` until `now + ttl`; `false` if full.
    pub fn add(&mut self, key: Key, provider: Provider, ttl: Duration, now: Instant) -> bool {
        let expires = now + ttl;
        let id = provider.id();
        let list = self.by_key.entry(key).or_default();
        if let Some(slot) = list.iter_mut().find(|(p, _)| p.id() == id) {
            // The latest announcement wins (its metadata may have changed), unless
            // it comes with an older record.
            if provider.record.seq >= slot.0.record.seq {
                slot.0 = provider;
            }
            slot.1 = slot.1.max(expires);
            return true;
        }
        let held = self.per_peer.get(&id).copied().unwrap_or(0);
        if list.len() >= self.per_key || self.total >= self.total_max || held >= self.per_peer_max {
            if list.is_empty() {
                self.by_key.remove(&key);
            }
            return false;
        }
        *self.per_peer.entry(id).or_default() += 1;
        list.push((provider, expires));
        self.total += 1;
        true
    }

    /// Live providers of `key`.
    pub fn get(&self, key: &Key, now: Instant) -> Vec<Provider> {
        self.by_key
            .get(key)
            .map(|l| {
                l.iter()
                    .filter(|(_, e)| *e > now)
                    .map(|(p, _)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops expired records.
    pub fn expire(&mut self, now: Instant) {
        let mut removed = 0;
        let per_peer = &mut self.per_peer;
        self.by_key.retain(|_, list| {
            list.retain(|(p, e)| {
                let live = *e > now;
                if !live {
                    removed += 1;
                    if let Some(n) = per_peer.get_mut(&p.id()) {
                        *n -= 1;
                        if *n == 0 {
                            per_peer.remove(&p.id());
                        }
                    }
                }
                live
            });
            !list.is_empty()
        });
        self.total -= removed;
    }

    /// Records stored.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether `peer` provides `key`.
    pub fn provides(&self, key: &Key, peer: &PeerId, now: Instant) -> bool {
        self.get(key, now).iter().any(|p| p.id() == *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::kad::record::PeerRecord;

    /// A provider (the store checks no signatures: what reaches it was checked).
    fn rec() -> Provider {
        let key = Keypair::generate().unwrap();
        let record = PeerRecord::sign(&key, &["10.0.0.1:1".parse().unwrap()], 1);
        Provider::own(record, Vec::new(), Vec::new())
    }

    #[test]
    fn providers_expire_at_their_ttl_and_storage_is_bounded() {
        let now = Instant::now();
        let mut s = ProviderStore::new(2, 3, 10);
        let (a, b, c) = (rec(), rec(), rec());
        assert!(s.add([1; 32], a.clone(), Duration::from_secs(10), now));
        assert!(s.add([1; 32], b.clone(), Duration::from_secs(20), now));
        assert!(
            !s.add([1; 32], c.clone(), Duration::from_secs(20), now),
            "per-key bound"
        );
        assert!(s.add([2; 32], c.clone(), Duration::from_secs(20), now));
        assert!(
            !s.add([3; 32], rec(), Duration::from_secs(20), now),
            "total bound"
        );
        assert_eq!(s.get(&[1; 32], now + Duration::from_secs(9)).len(), 2);
        assert_eq!(
            s.get(&[1; 32], now + Duration::from_secs(10)),
            vec![b.clone()]
        );
        s.expire(now + Duration::from_secs(10));
        assert_eq!(s.len(), 2);
        // Renewal extends the TTL.
        assert!(s.add([1; 32], b.clone(), Duration::from_secs(100), now));
        s.expire(now + Duration::from_secs(50));
        assert!(s.provides(&[1; 32], &b.id(), now + Duration::from_secs(50)));
        assert!(!s.provides(&[2; 32], &c.id(), now + Duration::from_secs(50)));
    }

    #[test]
    fn one_provider_cannot_take_the_whole_store() {
        let now = Instant::now();
        let mut s = ProviderStore::new(20, 10_000, 64);
        let greedy = rec();
        let stored = (0..1000u32)
            .filter(|i| {
                let mut key = [0u8; 32];
                key[..4].copy_from_slice(&i.to_be_bytes());
                s.add(key, greedy.clone(), Duration::from_secs(3600), now)
            })
            .count();
        assert_eq!(stored, 64);
        assert!(s.add([0xee; 32], rec(), Duration::from_secs(10), now));
        s.expire(now + Duration::from_secs(3601));
        assert!(s.is_empty());
        assert!(s.add([0xef; 32], greedy, Duration::from_secs(10), now));
    }
}
