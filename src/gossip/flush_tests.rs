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

/// A send: to whom, and its bytes.
type Sent = (PeerId, Arc<Vec<u8>>);

/// A mesh peer of a router meshed with `n` peers sends it `msgs` in one RPC:
/// the other mesh peers, and the sends that carry messages, (peer, bytes).
fn forward(n: u64, msgs: Vec<wire::GossipMessage>) -> (Vec<PeerId>, Vec<Sent>) {
    let (mut h, _) = meshed(n);
    let mesh = h.r.mesh(T);
    let from = mesh[0];
    let rpc = wire::GossipRpc {
        publish: msgs,
        ..Default::default()
    };
    h.rpc(from, &rpc);
    let sent = copies(&h.take());
    let mut others: Vec<PeerId> = mesh.into_iter().filter(|p| *p != from).collect();
    others.sort();
    assert!(others.len() >= 2, "a forward to several peers");
    (others, sent)
}

/// The sends of `out` that carry messages: (peer, bytes).
fn copies(out: &[GossipOutput]) -> Vec<Sent> {
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
    let msg = signed(77, 1);
    let (want, sent) = forward(5, vec![msg.clone()]);
    let mut to: Vec<PeerId> = sent.iter().map(|(p, _)| *p).collect();
    to.sort();
    assert_eq!(to, want, "every mesh peer but the sender, once each");
    let first = &sent[0].1;
    assert!(
        sent.iter().all(|(_, b)| Arc::ptr_eq(b, first)),
        "one buffer for all of them"
    );
    let decoded = wire::GossipRpc::decode(first.as_slice()).unwrap();
    assert_eq!(decoded.publish.len(), 1);
    assert_eq!(decoded.publish[0].hops, 2, "a forward counts its hop");
    assert_eq!(decoded.publish[0].data, msg.data);
}

#[test]
fn a_peer_due_several_messages_gets_them_in_one_rpc() {
    let (others, sent) = forward(4, vec![signed(77, 1), signed(78, 1)]);
    for p in &others {
        let theirs: Vec<_> = sent.iter().filter(|(q, _)| q == p).collect();
        assert_eq!(theirs.len(), 1, "one send");
        let r = wire::GossipRpc::decode(theirs[0].1.as_slice()).unwrap();
        assert_eq!(r.publish.len(), 2, "both messages in it");
    }
}
