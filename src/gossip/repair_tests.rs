//! Lazy repair that costs fewer bytes: gossip offers each id to a peer once, new
//! mesh links start choked when enough are eager, and the IHAVE-to-IWANT wait
//! learns from premature IWANTs; a small message of ours goes to the links that
//! want it pushed and a few more, not to every peer.

use super::hostile_tests::{key, Harness, T};
use super::*;

fn publish(origin: u64, seq: u64) -> wire::GossipRpc {
    let mut m = message::build(Some(&key(origin)), T, seq, 0, vec![seq as u8; 100]);
    m.hops = 1;
    wire::GossipRpc {
        publish: vec![m],
        ..Default::default()
    }
}

fn ihaves_of(out: &[GossipOutput], peer: PeerId, id: &MessageId) -> usize {
    Harness::sent_to(out, peer)
        .iter()
        .flat_map(|r| r.ihave.iter())
        .filter(|i| i.ids.iter().any(|x| x.as_slice() == id))
        .count()
}

#[test]
fn gossip_offers_an_id_to_each_peer_once() {
    for once in [true, false] {
        let mut h = Harness::with(
            GossipConfig {
                gossip_offer_once: once,
                ..GossipConfig::default()
            },
            None,
        );
        let peers: Vec<PeerId> = (1..=12).map(|i| h.peer(i, &[T])).collect();
        let rpc = publish(40, 1);
        let id = message::message_id(&rpc.publish[0]);
        h.rpc(peers[0], &rpc);
        let mesh = h.r.mesh(T);
        let outside: Vec<PeerId> = peers
            .iter()
            .copied()
            .filter(|p| !mesh.contains(p))
            .collect();
        assert!(!outside.is_empty());
        h.take();
        for _ in 0..3 {
            h.now += Duration::from_millis(200);
            h.r.heartbeat(h.now);
            h.drain();
        }
        let out = h.take();
        let most = outside.iter().map(|p| ihaves_of(&out, *p, &id)).max();
        if once {
            assert_eq!(most, Some(1), "offered once to each");
        } else {
            assert!(most > Some(1), "GossipSub offers it each heartbeat");
        }
    }
}

#[test]
fn links_joining_a_mesh_with_enough_eager_links_start_choked() {
    for choke_new in [true, false] {
        let mut h = Harness::with(
            GossipConfig {
                choke_new_links: choke_new,
                ..GossipConfig::default()
            },
            None,
        );
        let peers: Vec<PeerId> = (1..=8).map(|i| h.peer(i, &[T])).collect();
        let out = h.take();
        let choked: Vec<&PeerId> = peers
            .iter()
            .filter(|p| {
                Harness::sent_to(&out, **p)
                    .iter()
                    .any(|r| !r.choke.is_empty())
            })
            .collect();
        let eager = GossipConfig::default().d_eager_min + 1;
        let mesh = h.r.mesh(T).len();
        assert!(mesh > eager);
        if choke_new {
            assert_eq!(choked.len(), mesh - eager, "all but {eager} start choked");
            assert!(choked.iter().all(|p| h.r.mesh(T).contains(p)));
        } else {
            assert!(choked.is_empty());
        }
    }
}

#[test]
fn premature_iwants_make_the_next_ones_wait_longer() {
    let mut h = Harness::new();
    let (a, b, lazy) = (h.peer(1, &[T]), h.peer(2, &[T]), h.peer(3, &[T]));
    // Copies 400 ms apart: the network runs behind.
    for seq in 100..110 {
        h.rpc(a, &publish(9, seq));
        h.now += Duration::from_millis(400);
        h.rpc(b, &publish(9, seq));
    }
    let floor = GossipConfig::default().iwant_delay;
    assert_eq!(h.r.iwant_wait.get(floor), floor);
    // An IHAVE, its IWANT, and then the eager copy beats the reply.
    let rpc = publish(9, 1);
    let id = message::message_id(&rpc.publish[0]);
    h.ihave(lazy, &[id]);
    h.take();
    h.now += floor;
    h.r.heartbeat(h.now);
    h.drain();
    assert!(
        Harness::asked(&h.take(), lazy, &id),
        "the IWANT went out after the configured delay"
    );
    h.rpc(a, &rpc);
    assert_eq!(
        h.r.iwant_wait.get(floor),
        floor * 2,
        "premature: it doubles"
    );
    // The next offer waits the longer time.
    let rpc2 = publish(9, 2);
    let id2 = message::message_id(&rpc2.publish[0]);
    h.ihave(lazy, &[id2]);
    assert!(h.r.poll_timeout() >= h.now + floor * 2);
}

#[test]
fn a_promise_broken_by_a_peer_that_left_is_asked_of_the_next_offerer() {
    let mut h = Harness::new();
    let (first, second) = (h.peer(1, &[T]), h.peer(2, &[T]));
    let rpc = publish(9, 1);
    let id = message::message_id(&rpc.publish[0]);
    h.ihave(first, &[id]);
    h.ihave(second, &[id]);
    h.now += Duration::from_millis(10);
    h.r.heartbeat(h.now);
    h.drain();
    let asks = |out: &[GossipOutput], p: PeerId| Harness::asked(out, p, &id);
    let out = h.take();
    assert!(
        asks(&out, first) && !asks(&out, second),
        "one IWANT, to the first"
    );
    // The first offerer leaves before answering: the next heartbeat asks the second.
    h.r.remove_peer(&first);
    h.now += Duration::from_millis(200);
    h.r.heartbeat(h.now);
    h.drain();
    assert!(asks(&h.take(), second), "asked of the other offerer");
    assert_eq!(
        h.r.peers[&second].score.broken_promises, 0.0,
        "nobody pays for a peer that left"
    );
    // Answered: nothing is left waiting.
    h.rpc(second, &rpc);
    assert!(h.r.promises.is_empty() && h.r.alternates.is_empty());
}

#[test]
fn a_small_publish_goes_to_links_that_want_it_and_a_few_more() {
    for extra in [0usize, 2, usize::MAX] {
        let mut h = Harness::with(
            GossipConfig {
                flood_publish_extra: extra,
                flood_publish_max_size: 1500,
                choke_new_links: false,
                ..GossipConfig::default()
            },
            None,
        );
        let peers: Vec<PeerId> = (1..=14).map(|i| h.peer(i, &[T])).collect();
        let mesh = h.r.mesh(T);
        // Three mesh peers ask us for IHAVE only.
        let chokers: Vec<PeerId> = mesh.iter().take(3).copied().collect();
        let choke = wire::GossipRpc {
            choke: vec![wire::Choke { topic: T.into() }],
            ..Default::default()
        };
        for p in &chokers {
            h.rpc(*p, &choke);
        }
        h.take();
        h.r.publish(T, vec![7; 1000], h.now).unwrap();
        h.drain();
        let out = h.take();
        let got: Vec<PeerId> = peers
            .iter()
            .copied()
            .filter(|p| {
                Harness::sent_to(&out, *p)
                    .iter()
                    .any(|r| !r.publish.is_empty())
            })
            .collect();
        let eager: Vec<PeerId> = mesh
            .iter()
            .copied()
            .filter(|p| !chokers.contains(p))
            .collect();
        assert!(eager.iter().all(|p| got.contains(p)), "every eager link");
        if extra == usize::MAX {
            assert_eq!(got.len(), peers.len(), "GossipSub floods every peer");
        } else {
            assert_eq!(
                got.len(),
                eager.len() + extra,
                "eager links and {extra} more"
            );
        }
        // Above flood_publish_max_size: the whole mesh, choked links too, no one else.
        h.r.publish(T, vec![8; 2000], h.now).unwrap();
        h.drain();
        let out = h.take();
        let mut got: Vec<PeerId> = peers
            .iter()
            .copied()
            .filter(|p| {
                Harness::sent_to(&out, *p)
                    .iter()
                    .any(|r| !r.publish.is_empty())
            })
            .collect();
        let mut mesh = mesh;
        mesh.sort();
        got.sort();
        assert_eq!(got, mesh, "the mesh and only the mesh");
    }
}
