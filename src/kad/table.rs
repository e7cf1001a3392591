//! The routing table: 256 k-buckets of verified peer records, each with a replacement
//! cache, ping-before-evict, and IP-diversity limits against eclipse attacks.

use crate::collections::Map;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::identity::PeerId;
use crate::kad::key::{bucket_index, distance, key_of, Key};
use crate::kad::record::PeerRecord;

/// Routing table settings.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Bucket size.
    pub k: usize,
    /// Enforce the per-subnet limits below.
    pub ip_diversity: bool,
    /// Most entries from one subnet (/24, or /48 for IPv6) in one bucket.
    pub max_per_subnet_bucket: usize,
    /// Most entries from one subnet in the whole table.
    pub max_per_subnet_table: usize,
    /// How long an evict-candidate's ping may take.
    pub ping_timeout: Duration,
    /// An entry heard from within this is alive enough: a newcomer to its full
    /// bucket waits in the replacement cache without a ping. (Pinging on every
    /// newcomer made joining cost a connection per contact.)
    pub fresh_for: Duration,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            k: 20,
            ip_diversity: true,
            max_per_subnet_bucket: 2,
            max_per_subnet_table: 10,
            ping_timeout: Duration::from_secs(2),
            fresh_for: Duration::from_secs(60),
        }
    }
}

pub use crate::subnet::subnet;

fn record_subnet(r: &PeerRecord) -> Option<[u8; 6]> {
    r.addrs.first().map(|a| subnet(a.ip()))
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// New entry.
    Added,
    /// Known entry, refreshed (and its record updated if newer).
    Refreshed,
    /// The bucket is full: the record waits in the replacement cache, and the least
    /// recently seen entry should be pinged; evict it if the ping fails.
    PingLeastRecent(PeerId),
    /// Waiting in the replacement cache (a ping is already under way).
    Cached,
    /// Refused: an older record, our own key, no address, or a diversity limit.
    Refused,
}

#[derive(Debug, Clone)]
struct Entry {
    record: PeerRecord,
    last_seen: Instant,
    /// The subnet the diversity limits count it in: where it was seen from, when we
    /// know, not what its record claims.
    net: [u8; 6],
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    /// Newest last.
    replacements: Vec<Entry>,
    pinging: Option<(PeerId, Instant)>,
    last_refresh: Option<Instant>,
}

/// The routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: Key,
    config: TableConfig,
    buckets: Vec<Bucket>,
    subnets: Map<[u8; 6], usize>,
    len: usize,
    /// Buckets with an evict-ping out: none is the usual case, and then the
    /// deadline queries need no scan of all 256 buckets.
    pings_out: usize,
}

impl RoutingTable {
    /// An empty table around `local`.
    pub fn new(local: PeerId, config: TableConfig) -> Self {
        RoutingTable {
            local: key_of(&local),
            config,
            buckets: vec![Bucket::default(); 256],
            subnets: Map::default(),
            len: 0,
            pings_out: 0,
        }
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or refreshes a peer we heard from directly, `seen` being the address its
    /// connection comes from (the diversity limits count that, not the record's
    /// claim; the record's first address when unknown). A peer that shows up from
    /// another subnet is checked against the limits again.
    pub fn insert(&mut self, record: PeerRecord, seen: Option<IpAddr>, now: Instant) -> Insert {
        let Some(index) = bucket_index(&self.local, &key_of(&record.id)) else {
            return Insert::Refused;
        };
        let Some(net) = seen.map(subnet).or_else(|| record_subnet(&record)) else {
            return Insert::Refused;
        };
        let k = self.config.k;
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket.entries.iter().position(|e| e.record.id == record.id) {
            let mut entry = bucket.entries.remove(pos);
            if record.seq < entry.record.seq {
                bucket.entries.push(entry);
                return Insert::Refused;
            }
            if entry.net != net {
                // Moved subnets: a remove and an add, under the limits again.
                self.unaccount(Some(entry.net));
                if !self.diversity_allows(index, net) {
                    self.len -= 1;
                    return Insert::Refused;
                }
                *self.subnets.entry(net).or_default() += 1;
                entry.net = net;
            }
            entry.last_seen = now;
            if record.seq > entry.record.seq {
                entry.record = record;
            }
            self.buckets[index].entries.push(entry);
            return Insert::Refreshed;
        }
        if !self.diversity_allows(index, net) {
            return Insert::Refused;
        }
        let bucket = &mut self.buckets[index];
        let entry = Entry {
            record,
            last_seen: now,
            net,
        };
        if bucket.entries.len() < k {
            bucket.entries.push(entry);
            *self.subnets.entry(net).or_default() += 1;
            self.len += 1;
            return Insert::Added;
        }
        // Full: keep the newcomer in the replacement cache (newest last, bounded).
        bucket
            .replacements
            .retain(|e| e.record.id != entry.record.id);
        bucket.replacements.push(entry);
        if bucket.replacements.len() > k {
            bucket.replacements.remove(0);
        }
        let fresh =
            now.saturating_duration_since(bucket.entries[0].last_seen) < self.config.fresh_for;
        if bucket.pinging.is_some() || fresh {
            return Insert::Cached;
        }
        let lrs = bucket.entries[0].record.id;
        bucket.pinging = Some((lrs, now + self.config.ping_timeout));
        self.pings_out += 1;
        Insert::PingLeastRecent(lrs)
    }

    fn diversity_allows(&self, index: usize, net: [u8; 6]) -> bool {
        if !self.config.ip_diversity {
            return true;
        }
        let in_bucket = self.buckets[index]
            .entries
            .iter()
            .filter(|e| e.net == net)
            .count();
        let in_table = self.subnets.get(&net).copied().unwrap_or(0);
        in_bucket < self.config.max_per_subnet_bucket && in_table < self.config.max_per_subnet_table
    }

    fn unaccount(&mut self, net: Option<[u8; 6]>) {
        if let Some(net) = net {
            if let Some(n) = self.subnets.get_mut(&net) {
                *n -= 1;
                if *n == 0 {
                    self.subnets.remove(&net);
                }
            }
        }
    }

    /// The answer to a ping of an evict-candidate: alive keeps it (as most recently
    /// seen), dead evicts it in favour of the newest replacement.
    pub fn ping_result(&mut self, peer: PeerId, alive: bool, now: Instant) {
        let Some(index) = bucket_index(&self.local, &key_of(&peer)) else {
            return;
        };
        let bucket = &mut self.buckets[index];
        if bucket.pinging.is_some_and(|(p, _)| p == peer) {
            bucket.pinging = None;
            self.pings_out -= 1;
        }
        if alive {
            if let Some(pos) = bucket.entries.iter().position(|e| e.record.id == peer) {
                let mut e = bucket.entries.remove(pos);
                e.last_seen = now;
                bucket.entries.push(e);
            }
        } else {
            self.remove(&peer);
        }
    }

    /// Pings that took too long count as failures; returns the peers evicted.
    pub fn expire_pings(&mut self, now: Instant) -> Vec<PeerId> {
        if self.pings_out == 0 {
            return Vec::new();
        }
        let overdue: Vec<PeerId> = self
            .buckets
            .iter()
            .filter_map(|b| b.pinging.filter(|(_, d)| *d <= now).map(|(p, _)| p))
            .collect();
        for p in &overdue {
            self.ping_result(*p, false, now);
        }
        overdue
    }

    /// The earliest evict-ping deadline.
    pub fn next_ping_deadline(&self) -> Option<Instant> {
        if self.pings_out == 0 {
            return None;
        }
        self.buckets
            .iter()
            .filter_map(|b| b.pinging.map(|(_, d)| d))
            .min()
    }

    /// Removes `peer`, promoting the newest replacement that fits the limits.
    pub fn remove(&mut self, peer: &PeerId) {
        let Some(index) = bucket_index(&self.local, &key_of(peer)) else {
            return;
        };
        let bucket = &mut self.buckets[index];
        let Some(pos) = bucket.entries.iter().position(|e| e.record.id == *peer) else {
            bucket.replacements.retain(|e| e.record.id != *peer);
            return;
        };
        let gone = bucket.entries.remove(pos);
        self.len -= 1;
        self.unaccount(Some(gone.net));
        while let Some(candidate) = self.buckets[index].replacements.pop() {
            let net = candidate.net;
            if self.diversity_allows(index, net) {
                self.buckets[index].entries.push(candidate);
                *self.subnets.entry(net).or_default() += 1;
                self.len += 1;
                break;
            }
        }
    }

    /// The record of `peer`, if in the table.
    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        let index = bucket_index(&self.local, &key_of(peer))?;
        self.buckets[index]
            .entries
            .iter()
            .find(|e| e.record.id == *peer)
            .map(|e| &e.record)
    }

    /// The `n` known records closest to `key`.
    pub fn closest(&self, key: &Key, n: usize) -> Vec<PeerRecord> {
        self.closest_refs(key, n).into_iter().cloned().collect()
    }

    /// The `n` records closest to `key`, nearest first, borrowed (nothing cloned
    /// but the `n` chosen, by the caller).
    pub fn closest_refs(&self, key: &Key, n: usize) -> Vec<&PeerRecord> {
        let mut all: Vec<(Key, &PeerRecord)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|e| (distance(&key_of(&e.record.id), key), &e.record))
            .collect();
        if n == 0 {
            return Vec::new();
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n - 1, |a| a.0);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.0);
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// Every record, bucket by bucket (farthest bucket first).
    pub fn records(&self) -> impl Iterator<Item = &PeerRecord> {
        self.buckets
            .iter()
            .rev()
            .flat_map(|b| b.entries.iter().map(|e| &e.record))
    }

    /// Non-empty bucket indices and their sizes.
    pub fn bucket_sizes(&self) -> Vec<(usize, usize)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty())
            .map(|(i, b)| (i, b.entries.len()))
            .collect()
    }

    /// Buckets to refresh: from the nearest non-empty one outwards, those not
    /// refreshed within `every`.
    pub fn stale_buckets(&self, now: Instant, every: Duration) -> Vec<usize> {
        let Some(nearest) = self.buckets.iter().position(|b| !b.entries.is_empty()) else {
            return Vec::new();
        };
        (nearest..256)
            .filter(|&i| {
                self.buckets[i]
                    .last_refresh
                    .is_none_or(|t| now.saturating_duration_since(t) >= every)
            })
            .collect()
    }

    /// Marks bucket `index` as refreshed.
    pub fn refreshed(&mut self, index: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(index) {
            b.last_refresh = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use std::net::SocketAddr;

    fn rec(ip: &str) -> PeerRecord {
        let key = Keypair::generate().unwrap();
        let addr: SocketAddr = format!("{ip}:4000").parse().unwrap();
        PeerRecord::sign(&key, &[addr], 1)
    }

    fn table(diversity: bool) -> RoutingTable {
        let local = Keypair::generate().unwrap().peer_id();
        RoutingTable::new(
            local,
            TableConfig {
                ip_diversity: diversity,
                ..TableConfig::default()
            },
        )
    }

    #[test]
    fn a_full_bucket_pings_its_least_recent_entry_before_evicting() {
        let mut t = table(false);
        let now = Instant::now();
        // Fill the farthest bucket (half of all keys land there) with 20 entries.
        let mut in_far = Vec::new();
        while in_far.len() < 21 {
            let r = rec("10.0.0.1");
            if bucket_index(&t.local, &key_of(&r.id)) == Some(255) {
                in_far.push(r);
            }
        }
        let then = now;
        for r in &in_far[..20] {
            assert_eq!(t.insert(r.clone(), None, then), Insert::Added);
        }
        // While the least recent entry was heard from lately, a newcomer only waits.
        assert_eq!(t.insert(in_far[20].clone(), None, then), Insert::Cached);
        let now = then + TableConfig::default().fresh_for;
        let lrs = in_far[0].id;
        assert_eq!(
            t.insert(in_far[20].clone(), None, now),
            Insert::PingLeastRecent(lrs)
        );
        // Alive: the newcomer stays a replacement, the old entry stays.
        t.ping_result(lrs, true, now);
        assert!(t.get(&lrs).is_some() && t.get(&in_far[20].id).is_none());
        // Dead: evicted, and the replacement takes its place.
        let next_lrs = in_far[1].id;
        assert_eq!(
            t.insert(in_far[20].clone(), None, now),
            Insert::PingLeastRecent(next_lrs)
        );
        t.ping_result(next_lrs, false, now);
        assert!(t.get(&next_lrs).is_none() && t.get(&in_far[20].id).is_some());
        assert_eq!(t.len(), 20);
    }

    #[test]
    fn an_unanswered_evict_ping_expires_into_an_eviction() {
        let mut t = table(false);
        let now = Instant::now();
        let mut far = Vec::new();
        while far.len() < 21 {
            let r = rec("10.0.0.1");
            if bucket_index(&t.local, &key_of(&r.id)) == Some(255) {
                far.push(r);
            }
        }
        for r in &far[..20] {
            t.insert(r.clone(), None, now);
        }
        let now = now + TableConfig::default().fresh_for;
        t.insert(far[20].clone(), None, now);
        assert_eq!(t.next_ping_deadline(), Some(now + Duration::from_secs(2)));
        assert_eq!(
            t.expire_pings(now + Duration::from_secs(2)),
            vec![far[0].id]
        );
        assert!(t.get(&far[20].id).is_some());
    }

    #[test]
    fn two_hundred_entries_from_one_subnet_take_two_per_bucket_and_ten_overall() {
        let mut t = table(true);
        let now = Instant::now();
        for i in 0..200 {
            t.insert(rec(&format!("10.1.2.{}", i % 250 + 1)), None, now);
        }
        assert_eq!(t.len(), 10);
        assert!(
            t.bucket_sizes().iter().all(|&(_, n)| n <= 2),
            "{:?}",
            t.bucket_sizes()
        );
        // Other subnets are unaffected.
        assert_eq!(t.insert(rec("10.9.9.9"), None, now), Insert::Added);
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let mut t = table(false);
        let now = Instant::now();
        let key = Keypair::generate().unwrap();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        t.insert(PeerRecord::sign(&key, &[b], 5), None, now);
        assert_eq!(
            t.insert(PeerRecord::sign(&key, &[a], 4), None, now),
            Insert::Refused
        );
        assert_eq!(t.get(&key.peer_id()).unwrap().addrs, vec![b]);
        assert_eq!(
            t.insert(PeerRecord::sign(&key, &[a], 6), None, now),
            Insert::Refreshed
        );
        assert_eq!(t.get(&key.peer_id()).unwrap().addrs, vec![a]);
    }

    #[test]
    fn closest_returns_the_nearest_by_xor() {
        let mut t = table(false);
        let now = Instant::now();
        let recs: Vec<_> = (0..100).map(|_| rec("10.0.0.1")).collect();
        for r in &recs {
            t.insert(r.clone(), None, now);
        }
        let target = [0x33u8; 32];
        let got: Vec<PeerId> = t.closest(&target, 5).iter().map(|r| r.id).collect();
        let mut present: Vec<&PeerRecord> =
            recs.iter().filter(|r| t.get(&r.id).is_some()).collect();
        present.sort_by_key(|r| distance(&key_of(&r.id), &target));
        let want: Vec<PeerId> = present.iter().take(5).map(|r| r.id).collect();
        assert_eq!(got, want);
    }
}
