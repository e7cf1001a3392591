//! A copy or an IHAVE counts as IDONTWANT, and IHAVEs on links choked both ways
//! wait for company.

use super::hostile_tests::{key, Harness, T};
use super::*;

fn signed(origin: u64, seqno: u64, len: usize) -> wire::GossipMessage {
    let mut m = message::build(Some(&key(origin)), T, seqno, 0, vec![seqno as u8; len]);
    m.hops = 1;
    m
}

fn publish(m: &wire::GossipMessage) -> wire::GossipRpc {
    wire::GossipRpc {
        publish: vec![m.clone()],
        ..Default::default()
    }
}

/// What `peer` was sent: (messages, IHAVE ids, IDONTWANT ids).
fn got(out: &[GossipOutput], peer: PeerId) -> (usize, Vec<Vec<u8>>, usize) {
    let rpcs = Harness::sent_to(out, peer);
    let msgs = rpcs.iter().map(|r| r.publish.len()).sum();
    let ihaves = rpcs
        .iter()
        .flat_map(|r| r.ihave.iter().flat_map(|i| i.ids.clone()))
        .collect();
    let dontwant = rpcs
        .iter()
        .map(|r| r.idontwant.iter().map(|d| d.ids.len()).sum::<usize>())
        .sum();
    (msgs, ihaves, dontwant)
}

#[test]
fn a_peer_that_offered_a_message_gets_no_copy_and_no_one_gets_an_idontwant() {
    let mut h = Harness::new();
    let (a, b, c) = (h.peer(1, &[T]), h.peer(2, &[T]), h.peer(3, &[T]));
    let m = signed(50, 1, 2048);
    let id = message::message_id(&m);
    h.ihave(b, &[id]);
    h.take();
    h.rpc(a, &publish(&m));
    let out = h.take();
    assert_eq!(got(&out, b), (0, vec![], 0), "b offered it: it has it");
    assert_eq!(
        got(&out, c),
        (1, vec![], 0),
        "the copy itself says we have it"
    );
    assert_eq!(got(&out, a).0, 0);
    // And b's copy of a later message keeps us from sending it back to b.
    let m2 = signed(50, 2, 2048);
    h.rpc(b, &publish(&m2));
    let out = h.take();
    assert_eq!(got(&out, b).0, 0);
    assert_eq!(got(&out, a).0, 1);
}

#[test]
fn the_explicit_idontwant_of_gossipsub_stays_when_asked_for() {
    let config = GossipConfig {
        implied_dontwant: false,
        ..GossipConfig::default()
    };
    let mut h = Harness::with(config, None);
    let (a, c) = (h.peer(1, &[T]), h.peer(3, &[T]));
    h.take();
    h.rpc(a, &publish(&signed(50, 1, 2048)));
    let out = h.take();
    assert_eq!(got(&out, c).0, 1);
    assert_eq!(
        got(&out, c).2,
        1,
        "GossipSub v1.2 sends IDONTWANT for large messages"
    );
}

#[test]
fn ihaves_on_links_choked_both_ways_go_out_together_without_what_the_peer_has() {
    let mut h = Harness::new();
    let a = h.peer(1, &[T]);
    let (c, d) = (h.peer(3, &[T]), h.peer(4, &[T]));
    let choke = wire::GossipRpc {
        choke: vec![wire::Choke { topic: T.into() }],
        ..Default::default()
    };
    for p in [c, d] {
        h.rpc(p, &choke);
        if let Some(l) = h.r.topics.get_mut(T).and_then(|t| t.mesh.get_mut(&p)) {
            l.we_choked = true;
        }
    }
    h.take();
    let msgs: Vec<_> = (1..=3).map(|s| signed(50, s, 512)).collect();
    let ids: Vec<MessageId> = msgs.iter().map(message::message_id).collect();
    for m in &msgs {
        h.rpc(a, &publish(m));
    }
    let out = h.take();
    assert_eq!(
        got(&out, c),
        (0, vec![], 0),
        "held back, not sent one by one"
    );
    // d shows it has the second one meanwhile.
    h.ihave(d, &[ids[1]]);
    h.take();
    h.now += h.r.config.ihave_batch;
    h.r.heartbeat(h.now);
    h.drain();
    let out = h.take();
    let rpcs_c = Harness::sent_to(&out, c);
    let ihaves_c: Vec<_> = rpcs_c.iter().flat_map(|r| r.ihave.clone()).collect();
    assert_eq!(ihaves_c.len(), 1, "one IHAVE for the topic");
    assert_eq!(ihaves_c[0].ids.len(), 3);
    let d_ids = got(&out, d).1;
    assert_eq!(d_ids, vec![ids[0].to_vec(), ids[2].to_vec()]);
    // Nothing is held any more.
    h.now += h.r.config.ihave_batch;
    h.r.heartbeat(h.now);
    h.drain();
    assert!(got(&h.take(), c).1.is_empty());
}

#[test]
fn held_ihaves_leave_with_their_peer_and_pushing_links_get_theirs_at_once() {
    let mut h = Harness::new();
    let a = h.peer(1, &[T]);
    let (c, e) = (h.peer(3, &[T]), h.peer(5, &[T]));
    let choke = wire::GossipRpc {
        choke: vec![wire::Choke { topic: T.into() }],
        ..Default::default()
    };
    // c: choked both ways; e: only e choked us (it still pushes to us).
    h.rpc(c, &choke);
    h.rpc(e, &choke);
    if let Some(l) = h.r.topics.get_mut(T).and_then(|t| t.mesh.get_mut(&c)) {
        l.we_choked = true;
    }
    h.take();
    let m = signed(50, 1, 512);
    h.rpc(a, &publish(&m));
    let out = h.take();
    assert_eq!(got(&out, e).1, vec![message::message_id(&m).to_vec()]);
    assert!(got(&out, c).1.is_empty());
    assert!(h.r.lazy.contains_key(&c));
    h.r.remove_peer(&c);
    assert!(h.r.lazy.is_empty(), "a gone peer's held IHAVEs go with it");
    h.now += h.r.config.ihave_batch;
    h.r.heartbeat(h.now);
    h.drain();
    assert!(got(&h.take(), c).1.is_empty());
}
