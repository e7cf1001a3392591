//! Turning what is queued into encoded sends: one encoding of a message shared by
//! every peer it goes to on its own, per-peer RPCs for everything else.

use super::*;

impl Router {
    /// Queues full copies of `msg` for `peers`. Encoded at the next flush: once for
    /// all of them that get nothing else in that flush, so a forward to eight peers
    /// is neither cloned nor encoded eight times.
    pub(super) fn push_copies(&mut self, msg: wire::GossipMessage, peers: Vec<PeerId>) {
        if !peers.is_empty() {
            self.copies.push((msg, peers));
        }
    }

    /// Encodes what was queued, per peer in as many RPCs as the limits need; a copy
    /// queued with [`Router::push_copies`] for a peer that gets nothing else shares
    /// one encoding with the other such peers.
    pub(super) fn flush(&mut self, now: Instant) {
        let deadline = now + self.config.forward_deadline;
        let copies = std::mem::take(&mut self.copies);
        // A peer in more than one batch of copies, or with an RPC of its own, gets
        // them in that one RPC: one send, not one per message.
        // With a single batch (a flush after one message) every peer is in one.
        let mut batches: Map<PeerId, usize> = Map::default();
        if copies.len() > 1 {
            for (_, peers) in &copies {
                for p in peers {
                    *batches.entry(*p).or_default() += 1;
                }
            }
        }
        let mut shared: Vec<(Vec<PeerId>, Arc<Vec<u8>>)> = Vec::new();
        for (msg, peers) in copies {
            let (alone, merged): (Vec<PeerId>, Vec<PeerId>) = peers.into_iter().partition(|p| {
                batches.get(p).is_none_or(|n| *n == 1) && !self.pending.contains_key(p)
            });
            for p in merged {
                self.rpc(p).publish.push(msg.clone());
            }
            let alone: Vec<PeerId> = alone
                .into_iter()
                .filter(|p| self.peers.contains_key(p))
                .collect();
            if alone.is_empty() {
                continue;
            }
            let rpc = wire::GossipRpc {
                publish: vec![msg],
                ..Default::default()
            };
            for part in rpc::pack(rpc, &self.config.rpc_limits) {
                shared.push((alone.clone(), Arc::new(part.encode_to_vec())));
            }
        }
        for (peers, bytes) in shared {
            for peer in peers {
                self.outputs.push_back(GossipOutput::Send {
                    peer,
                    bytes: bytes.clone(),
                    deadline,
                    chunk_of: None,
                });
            }
        }
        let mut pending: Vec<(PeerId, wire::GossipRpc)> = self.pending.drain().collect();
        pending.sort_by_key(|(p, _)| *p);
        for (peer, rpc) in pending {
            if !self.peers.contains_key(&peer) {
                continue;
            }
            for part in rpc::pack(rpc, &self.config.rpc_limits) {
                self.outputs.push_back(GossipOutput::Send {
                    peer,
                    bytes: Arc::new(part.encode_to_vec()),
                    deadline,
                    chunk_of: None,
                });
            }
        }
        // Chunks after the RPCs above: a peer always has a stream's head first.
        for (peer, id, bytes) in std::mem::take(&mut self.chunk_sends) {
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.chunks_queued.back() != Some(&id) {
                    if p.chunks_queued.len() >= MAX_CHUNKS_QUEUED {
                        p.chunks_queued.pop_front();
                    }
                    p.chunks_queued.push_back(id);
                }
                self.outputs.push_back(GossipOutput::Send {
                    peer,
                    bytes,
                    deadline,
                    chunk_of: Some(id),
                });
            }
        }
    }
}
