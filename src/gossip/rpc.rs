//! The size of gossip RPCs, both ways: inbound, the entries an RPC holds are counted
//! on the raw bytes before anything is decoded (so an RPC of millions of empty
//! entries costs a scan, not millions of allocations); outbound, what is queued for
//! a peer is packed into as many RPCs as it takes to stay within the same limits.

use prost::encoding::encoded_len_varint;
use prost::Message;

use crate::scan::{count_field, fields};
use crate::wire;

/// How much one gossip RPC may hold. Both sides use the same defaults; an RPC beyond
/// any of them is a protocol violation and is dropped undecoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcLimits {
    /// Encoded bytes of one RPC (the gossip channel's message limit).
    pub max_bytes: usize,
    /// Published messages in one RPC.
    pub max_publish: usize,
    /// Entries of each control kind (subscribe, unsubscribe, IHAVE, IWANT, GRAFT,
    /// PRUNE, IDONTWANT, CHOKE, UNCHOKE) and of stream heads and chunks in one RPC.
    pub max_control: usize,
    /// Message ids in all IHAVE, IWANT and IDONTWANT entries of one RPC together.
    pub max_ids: usize,
    /// Peer records in all PRUNEs of one RPC together.
    pub max_px: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_bytes: (4 << 20) + 4096,
            max_publish: 512,
            max_control: 64,
            max_ids: 5000,
            max_px: 64,
        }
    }
}

/// Why an RPC was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcShapeError {
    /// Not protobuf.
    Malformed,
    /// More bytes than the limit.
    TooLarge,
    /// More published messages than the limit.
    TooManyMessages,
    /// More control entries of one kind than the limit.
    TooManyEntries,
    /// More message ids than the limit.
    TooManyIds,
    /// More peer-exchange records than the limit.
    TooManyRecords,
}

impl std::fmt::Display for RpcShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RpcShapeError::Malformed => "malformed gossip rpc",
            RpcShapeError::TooLarge => "gossip rpc too large",
            RpcShapeError::TooManyMessages => "too many messages in one gossip rpc",
            RpcShapeError::TooManyEntries => "too many control entries in one gossip rpc",
            RpcShapeError::TooManyIds => "too many message ids in one gossip rpc",
            RpcShapeError::TooManyRecords => "too many peer records in one gossip rpc",
        })
    }
}

impl std::error::Error for RpcShapeError {}

// GossipRpc field numbers (wire/gossip.proto).
const F_PUBLISH: u64 = 1;
const F_IHAVE: u64 = 4;
const F_IWANT: u64 = 5;
const F_PRUNE: u64 = 7;
const F_IDONTWANT: u64 = 8;
const F_LAST: u64 = 12;

/// Counts the entries of an encoded `GossipRpc` against `limits` without decoding it.
/// Unknown fields are skipped (and count as control entries, so they are bounded too).
pub fn check_shape(bytes: &[u8], limits: &RpcLimits) -> Result<(), RpcShapeError> {
    if bytes.len() > limits.max_bytes {
        return Err(RpcShapeError::TooLarge);
    }
    let mut per_field = [0usize; F_LAST as usize + 1];
    let mut unknown = 0usize;
    let (mut ids, mut px) = (0usize, 0usize);
    let malformed = |_| RpcShapeError::Malformed;
    for f in fields(bytes) {
        let (field, body) = f.map_err(malformed)?;
        match field {
            1..=F_LAST => per_field[field as usize] += 1,
            _ => unknown += 1,
        }
        match (field, body) {
            (F_IHAVE, Some(b)) => ids += count_field(b, 2).map_err(malformed)?,
            (F_IWANT | F_IDONTWANT, Some(b)) => ids += count_field(b, 1).map_err(malformed)?,
            (F_PRUNE, Some(b)) => px += count_field(b, 2).map_err(malformed)?,
            _ => {}
        }
    }
    if per_field[F_PUBLISH as usize] > limits.max_publish {
        return Err(RpcShapeError::TooManyMessages);
    }
    let control = per_field[2..].iter().copied().max().unwrap_or(0);
    if control > limits.max_control || unknown > limits.max_control {
        return Err(RpcShapeError::TooManyEntries);
    }
    if ids > limits.max_ids {
        return Err(RpcShapeError::TooManyIds);
    }
    if px > limits.max_px {
        return Err(RpcShapeError::TooManyRecords);
    }
    Ok(())
}

/// Splits what is queued for one peer into RPCs that each stay within `limits`;
/// IHAVEs of one topic and all IWANT and IDONTWANT ids are merged first. Nothing is
/// dropped: a single message too large for any RPC still gets one of its own.
pub fn pack(rpc: wire::GossipRpc, limits: &RpcLimits) -> Vec<wire::GossipRpc> {
    // The common case, a small RPC within every limit, goes out as it is.
    if fits(&rpc, limits) {
        return vec![rpc];
    }
    let rpc = merge(rpc);
    let mut out = Vec::new();
    let mut packer = Packer {
        limits,
        current: wire::GossipRpc::default(),
        bytes: 0,
        ids: 0,
        px: 0,
    };
    let id_chunk = limits.max_ids.clamp(1, 500);
    let control = limits.max_control;
    for s in rpc.subscribe {
        packer.add(&mut out, 0, 0, control, |r| &mut r.subscribe, s);
    }
    for s in rpc.unsubscribe {
        packer.add(&mut out, 0, 0, control, |r| &mut r.unsubscribe, s);
    }
    for g in rpc.graft {
        packer.add(&mut out, 0, 0, control, |r| &mut r.graft, g);
    }
    for p in rpc.prune {
        let px = p.peers.len();
        packer.add(&mut out, 0, px, control, |r| &mut r.prune, p);
    }
    for c in rpc.choke {
        packer.add(&mut out, 0, 0, control, |r| &mut r.choke, c);
    }
    for u in rpc.unchoke {
        packer.add(&mut out, 0, 0, control, |r| &mut r.unchoke, u);
    }
    for h in rpc.ihave {
        for ids in id_chunks(h.ids, id_chunk) {
            let (n, topic) = (ids.len(), h.topic.clone());
            let entry = wire::IHave { topic, ids };
            packer.add(&mut out, n, 0, control, |r| &mut r.ihave, entry);
        }
    }
    for w in rpc.iwant {
        for ids in id_chunks(w.ids, id_chunk) {
            let n = ids.len();
            packer.add(
                &mut out,
                n,
                0,
                control,
                |r| &mut r.iwant,
                wire::IWant { ids },
            );
        }
    }
    for d in rpc.idontwant {
        for ids in id_chunks(d.ids, id_chunk) {
            let n = ids.len();
            let entry = wire::IDontWant { ids };
            packer.add(&mut out, n, 0, control, |r| &mut r.idontwant, entry);
        }
    }
    for h in rpc.head {
        packer.add(&mut out, 0, 0, control, |r| &mut r.head, h);
    }
    for c in rpc.chunk {
        packer.add(&mut out, 0, 0, control, |r| &mut r.chunk, c);
    }
    for m in rpc.publish {
        packer.add(&mut out, 0, 0, limits.max_publish, |r| &mut r.publish, m);
    }
    if packer.bytes > 0 {
        out.push(packer.current);
    }
    out
}

/// Whether `rpc` is within every limit already (counted, not encoded, except its size).
fn fits(rpc: &wire::GossipRpc, limits: &RpcLimits) -> bool {
    let control = [
        rpc.subscribe.len(),
        rpc.unsubscribe.len(),
        rpc.ihave.len(),
        rpc.iwant.len(),
        rpc.graft.len(),
        rpc.prune.len(),
        rpc.idontwant.len(),
        rpc.choke.len(),
        rpc.unchoke.len(),
        rpc.head.len(),
        rpc.chunk.len(),
    ];
    let ids = rpc.ihave.iter().map(|h| h.ids.len()).sum::<usize>()
        + rpc.iwant.iter().map(|w| w.ids.len()).sum::<usize>()
        + rpc.idontwant.iter().map(|d| d.ids.len()).sum::<usize>();
    let px: usize = rpc.prune.iter().map(|p| p.peers.len()).sum();
    rpc.publish.len() <= limits.max_publish
        && control.iter().all(|&n| n <= limits.max_control)
        && ids <= limits.max_ids
        && px <= limits.max_px
        && rpc.encoded_len() <= limits.max_bytes
}

/// One IHAVE per topic, one IWANT and one IDONTWANT (the ids move, no copies).
fn merge(mut rpc: wire::GossipRpc) -> wire::GossipRpc {
    let mut ihave: Vec<wire::IHave> = Vec::new();
    for h in rpc.ihave.drain(..) {
        match ihave.iter_mut().find(|x| x.topic == h.topic) {
            Some(x) => x.ids.extend(h.ids),
            None => ihave.push(h),
        }
    }
    rpc.ihave = ihave;
    if rpc.iwant.len() > 1 {
        let ids = rpc.iwant.drain(..).flat_map(|w| w.ids).collect();
        rpc.iwant = vec![wire::IWant { ids }];
    }
    if rpc.idontwant.len() > 1 {
        let ids = rpc.idontwant.drain(..).flat_map(|d| d.ids).collect();
        rpc.idontwant = vec![wire::IDontWant { ids }];
    }
    rpc
}

/// `ids` in consecutive runs of at most `n`, moved rather than copied.
fn id_chunks(mut ids: Vec<Vec<u8>>, n: usize) -> impl Iterator<Item = Vec<Vec<u8>>> {
    std::iter::from_fn(move || {
        if ids.is_empty() {
            return None;
        }
        let rest = ids.split_off(ids.len().min(n));
        Some(std::mem::replace(&mut ids, rest))
    })
}

struct Packer<'a> {
    limits: &'a RpcLimits,
    current: wire::GossipRpc,
    bytes: usize,
    ids: usize,
    px: usize,
}

impl Packer<'_> {
    /// Appends `item` to the field `field` picks, starting a new RPC first when it
    /// would not fit.
    #[allow(clippy::too_many_arguments)]
    fn add<T: Message>(
        &mut self,
        out: &mut Vec<wire::GossipRpc>,
        ids: usize,
        px: usize,
        max_count: usize,
        field: impl Fn(&mut wire::GossipRpc) -> &mut Vec<T>,
        item: T,
    ) {
        let len = item.encoded_len();
        // Key (one byte for fields 1..=15), length prefix, body.
        let cost = 1 + encoded_len_varint(len as u64) + len;
        let count = field(&mut self.current).len();
        let full = self.bytes > 0
            && (self.bytes + cost > self.limits.max_bytes
                || count >= max_count
                || self.ids + ids > self.limits.max_ids
                || self.px + px > self.limits.max_px);
        if full {
            out.push(std::mem::take(&mut self.current));
            self.bytes = 0;
            self.ids = 0;
            self.px = 0;
        }
        field(&mut self.current).push(item);
        self.bytes += cost;
        self.ids += ids;
        self.px += px;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, len: usize) -> wire::GossipMessage {
        wire::GossipMessage {
            origin_key: vec![1; 32],
            seqno: seq,
            topic: "t".into(),
            data: vec![7; len],
            ..Default::default()
        }
    }

    #[test]
    fn millions_of_empty_entries_are_refused_on_a_scan() {
        let limits = RpcLimits::default();
        // Two million empty GRAFT entries: 4 MB of bytes, refused without decoding.
        let mut bytes = Vec::new();
        for _ in 0..2_000_000 {
            bytes.extend_from_slice(&[6 << 3 | 2, 0]);
        }
        assert_eq!(
            check_shape(&bytes, &limits),
            Err(RpcShapeError::TooManyEntries)
        );
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            bytes.extend_from_slice(&[1 << 3 | 2, 0]);
        }
        assert_eq!(
            check_shape(&bytes, &limits),
            Err(RpcShapeError::TooManyMessages)
        );
        // One IHAVE with 100,000 empty ids.
        let ihave = wire::IHave {
            topic: "t".into(),
            ids: vec![Vec::new(); 100_000],
        };
        let rpc = wire::GossipRpc {
            ihave: vec![ihave],
            ..Default::default()
        };
        assert_eq!(
            check_shape(&rpc.encode_to_vec(), &limits),
            Err(RpcShapeError::TooManyIds)
        );
        let prune = wire::Prune {
            topic: "t".into(),
            peers: vec![wire::PeerRecord::default(); 100],
            backoff_secs: 1,
        };
        let rpc = wire::GossipRpc {
            prune: vec![prune],
            ..Default::default()
        };
        assert_eq!(
            check_shape(&rpc.encode_to_vec(), &limits),
            Err(RpcShapeError::TooManyRecords)
        );
        assert_eq!(
            check_shape(&[0xff; 3], &limits),
            Err(RpcShapeError::Malformed)
        );
    }

    #[test]
    fn packing_splits_to_fit_every_limit_and_loses_nothing() {
        let limits = RpcLimits {
            max_bytes: 100_000,
            ..RpcLimits::default()
        };
        let rpc = wire::GossipRpc {
            publish: (0..10)
                .map(|i| msg(i, 30_000))
                .chain([msg(99, 200_000)])
                .collect(),
            ihave: (0..700)
                .map(|i| wire::IHave {
                    topic: "t".into(),
                    ids: vec![vec![i as u8, (i >> 8) as u8]],
                })
                .collect(),
            graft: (0..100)
                .map(|i| wire::Graft {
                    topic: format!("g{i}"),
                })
                .collect(),
            ..Default::default()
        };
        let packed = pack(rpc, &limits);
        let mut seqs = Vec::new();
        let (mut ids, mut grafts) = (0, 0);
        for r in &packed {
            let bytes = r.encode_to_vec();
            let oversized_single = r.publish.len() == 1 && r.publish[0].data.len() > 100_000;
            if !oversized_single {
                check_shape(&bytes, &limits).unwrap();
            }
            assert_eq!(bytes.len(), r.encoded_len());
            seqs.extend(r.publish.iter().map(|m| m.seqno));
            ids += r.ihave.iter().map(|h| h.ids.len()).sum::<usize>();
            grafts += r.graft.len();
            assert!(r.ihave.len() <= 1 + limits.max_control);
        }
        seqs.sort();
        assert_eq!(seqs, (0..10).chain([99]).collect::<Vec<_>>());
        assert_eq!(ids, 700, "IHAVEs of one topic merged and all kept");
        assert_eq!(grafts, 100);
    }
}
