//! How queued copies become sends: shared encodings, one RPC per peer.

use super::hostile_tests::{key, Harness, T};
use super::*;

fn signed(origin: u64, seqno: u64) -> wire::GossipMessage {
    let mut m = message::build(Some(&key(origin)), T, seqno, 0, vec![seqno as u8; 900]);
    m.hops = 1;
    m
}

/// A harness whose mesh is every one of its `n` peers, all pushing in full.
fn meshed(n: u64) -> (Harness, Vec<PeerId>) {
    let mut h = Harness::with(
        GossipConfig {
            choke_new_links: false,
            ..GossipConfig::default()
        },
        None,
    );
    let peers: Vec<PeerId> = (1..=n).map(|i| h.peer(i, &[T])).collect();
    h.take();
    (h, peers)
}

/// The sends of `out` that carry messages: (peer, bytes).
fn copies(out: &[GossipOutput]) -> Vec<(PeerId, Arc<Vec<u8>>)> {
    out.iter()
        .filter_map(|o| match o {
            GossipOutput::Send { peer, bytes, .. } => Some((*peer, bytes.clone())),
            _ => None,
        })
        .filter(|(_, b)| wire::GossipRpc::decode(b.as_slice()).is_ok_and(|r| !r.publish.is_empty()))
        .collect()
}

#[test]
fn a_forward_to_several_peers_is_encoded_once_and_shared() {
    let (mut h, peers) = meshed(5);
    let mesh = h.r.mesh(T);
    let from = mesh[0];
    let rpc = wire::GossipRpc {
        publish: vec![signed(77, 1)],
        ..Default::default()
    };
    h.rpc(from, &rpc);
    let out = h.take();
    let sent = copies(&out);
    let mut to: Vec<PeerId> = sent.iter().map(|(p, _)| *p).collect();
    to.sort();
    let mut want: Vec<PeerId> = mesh.iter().copied().filter(|p| *p != from).collect();
    want.sort();
    assert_eq!(to, want, "every mesh peer but the sender, once each");
    assert!(want.len() >= 2 && peers.len() == 5);
    let first = &sent[0].1;
    assert!(
        sent.iter().all(|(_, b)| Arc::ptr_eq(b, first)),
        "one buffer for all of them"
    );
    let decoded = wire::GossipRpc::decode(first.as_slice()).unwrap();
    assert_eq!(decoded.publish.len(), 1);
    assert_eq!(decoded.publish[0].hops, 2, "a forward counts its hop");
    assert_eq!(decoded.publish[0].data, rpc.publish[0].data);
}

#[test]
fn a_peer_due_several_messages_gets_them_in_one_rpc() {
    let (mut h, _) = meshed(4);
    let mesh = h.r.mesh(T);
    let from = mesh[0];
    let rpc = wire::GossipRpc {
        publish: vec![signed(77, 1), signed(78, 1)],
        ..Default::default()
    };
    h.rpc(from, &rpc);
    let out = h.take();
    let sent = copies(&out);
    for p in mesh.iter().filter(|p| **p != from) {
        let theirs: Vec<_> = sent.iter().filter(|(q, _)| q == p).collect();
        assert_eq!(theirs.len(), 1, "one send");
        let r = wire::GossipRpc::decode(theirs[0].1.as_slice()).unwrap();
        assert_eq!(r.publish.len(), 2, "both messages in it");
    }
}
