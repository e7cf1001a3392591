//! One router driven by hand, its peers played by the test: mesh scoring,
//! eager-link deficits, subscription bounds and repair windows under lag.

use super::tests::key;
use super::*;

fn lone_router(peers: usize) -> (Router, Vec<PeerId>, Instant) {
    let now = Instant::now();
    let config = GossipConfig {
        opportunistic_graft_every: 1,
        ..GossipConfig::default()
    };
    let mut r = Router::new(config, Some(key(0)), None, Rng::new(1), now);
    let ids: Vec<PeerId> = (1..=peers).map(|i| key(i).peer_id()).collect();
    for (i, p) in ids.iter().enumerate() {
        r.add_peer(*p, IpAddr::from([10, 0, i as u8, 1]), now);
        let sub = wire::GossipRpc {
            subscribe: vec!["t".into()],
            ..Default::default()
        }
        .encode_to_vec();
        r.handle_rpc(*p, &sub, now);
    }
    (r, ids, now)
}

#[test]
fn a_low_scoring_mesh_grafts_better_peers_opportunistically() {
    let (mut r, ids, now) = lone_router(4);
    let t = r.topics.entry("t".into()).or_default();
    t.subscribed = true;
    for p in &ids[..2] {
        t.mesh.insert(*p, Link::default());
    }
    // The mesh peers deliver nothing; the outsiders delivered plenty first.
    for p in &ids[2..] {
        r.peers.get_mut(p).unwrap().score.first_deliveries = 10.0;
    }
    r.opportunistic_graft("t", now);
    let mesh = r.mesh("t");
    assert!(ids[2..].iter().all(|p| mesh.contains(p)), "{mesh:?}");
    while let Some(out) = r.poll_output() {
        let _ = out;
    }
}

#[test]
fn an_eager_mesh_link_that_never_delivers_counts_a_deficit() {
    let (mut r, ids, _) = lone_router(3);
    let t = r.topics.entry("t".into()).or_default();
    t.subscribed = true;
    t.mesh.insert(
        ids[0],
        Link {
            first: 12,
            ..Link::default()
        },
    );
    t.mesh.insert(ids[1], Link::default());
    t.mesh.insert(
        ids[2],
        Link {
            we_choked: true,
            ..Link::default()
        },
    );
    r.score_mesh_deliveries("t");
    assert_eq!(r.peers[&ids[0]].score.mesh_deficit, 0.0);
    assert_eq!(
        r.peers[&ids[1]].score.mesh_deficit, 1.0,
        "eager link delivered nothing"
    );
    assert_eq!(
        r.peers[&ids[2]].score.mesh_deficit, 0.0,
        "choked links are lazy by design"
    );
}

#[test]
fn subscriptions_are_bounded_in_count_and_name_length() {
    let (mut r, ids, now) = lone_router(1);
    let long = wire::GossipRpc {
        subscribe: vec!["x".repeat(MAX_TOPIC_LEN + 1)],
        ..Default::default()
    };
    r.handle_rpc(ids[0], &long.encode_to_vec(), now);
    assert!(!r.peers[&ids[0]]
        .topics
        .iter()
        .any(|t| t.len() > MAX_TOPIC_LEN));
    let many = wire::GossipRpc {
        subscribe: (0..100).map(|i| format!("topic {i}")).collect(),
        ..Default::default()
    };
    r.handle_rpc(ids[0], &many.encode_to_vec(), now);
    assert!(r.peers[&ids[0]].topics.len() <= GossipConfig::default().max_topics_per_peer);
    let mut penalties = 0;
    while let Some(out) = r.poll_output() {
        if matches!(out, GossipOutput::Penalize { .. }) {
            penalties += 1;
        }
    }
    assert_eq!(penalties, 2);
}

/// Whether an IWANT for `id` from `asker` is answered after `beats` heartbeats.
fn answered_after(
    h: &mut super::hostile_tests::Harness,
    asker: PeerId,
    id: MessageId,
    beats: usize,
) -> bool {
    for _ in 0..beats {
        h.now += Duration::from_millis(200);
        h.r.heartbeat(h.now);
    }
    h.drain();
    h.take();
    h.iwant(asker, &id);
    super::hostile_tests::Harness::sent_to(&h.take(), asker)
        .iter()
        .any(|r| !r.publish.is_empty())
}

#[test]
fn a_lagging_network_keeps_messages_for_repair_longer() {
    use super::hostile_tests::{key, Harness, T};
    let msg = |seq: u64| {
        let mut m = message::build(Some(&key(9)), T, seq, 0, vec![seq as u8; 100]);
        m.hops = 1;
        wire::GossipRpc {
            publish: vec![m],
            ..Default::default()
        }
    };
    for lagging in [false, true] {
        let mut h = Harness::new();
        let (a, b, asker) = (h.peer(1, &[T]), h.peer(2, &[T]), h.peer(3, &[T]));
        if lagging {
            // Duplicates 2 s after the first copies: the network runs 2 s behind.
            for seq in 100..120 {
                h.rpc(a, &msg(seq));
                h.now += Duration::from_secs(2);
                h.rpc(b, &msg(seq));
            }
            assert!(h.r.observed_lag() > Duration::from_millis(1500));
        }
        h.rpc(a, &msg(1));
        let id = message::message_id(&msg(1).publish[0]);
        // The default cache holds 15 heartbeats (3 s); 20 heartbeats later only a
        // lagging node still has it.
        assert_eq!(
            answered_after(&mut h, asker, id, 20),
            lagging,
            "lagging {lagging}"
        );
    }
}
