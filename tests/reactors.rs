//! Reactors over real loopback TCP: each sees every peer, its own channels'
//! messages between that peer's arrival and departure, in order, nothing lost.

mod common;

use std::time::Duration;

use common::*;
use meshwire::{ChannelConfig, Event, NodeHandle, ReactorError, ReactorEvent};

const VOTES: u32 = 1;
const PARTS: u32 = 2;
const TXS: u32 = 3;

fn chans() -> Vec<ChannelConfig> {
    [VOTES, PARTS, TXS]
        .map(|c| {
            ChannelConfig::new(c)
                .max_message_size(4096)
                .recv_window(16 * 1024)
                .send_queue_capacity(32)
        })
        .to_vec()
}

fn pair(i: usize) -> (NodeHandle, NodeHandle) {
    let a = builder(i, &chans()).start().unwrap();
    let b = builder(i + 1, &chans()).start().unwrap();
    (a, b)
}

fn next(r: &meshwire::Reactor) -> ReactorEvent {
    r.recv_timeout(Duration::from_secs(10)).expect("an event")
}

#[test]
fn two_reactors_each_see_every_peer_and_only_their_channels_in_order() {
    let (a, b) = pair(720);
    let consensus = b.reactor(&[VOTES, PARTS], 64).unwrap();
    let mempool = b.reactor(&[TXS], 64).unwrap();
    assert_eq!(
        b.reactor(&[PARTS], 8).unwrap_err(),
        ReactorError::ChannelTaken(PARTS)
    );
    assert_eq!(
        b.reactor(&[99], 8).unwrap_err(),
        ReactorError::UnknownChannel(99)
    );
    let ea = a.events();
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    for i in 0..5u8 {
        a.send(b.peer_id(), VOTES, vec![i]).unwrap();
        a.send(b.peer_id(), TXS, vec![100 + i]).unwrap();
        a.send(b.peer_id(), PARTS, vec![200 + i]).unwrap();
    }
    // Both hear of the peer first (events() clones would have split this).
    for r in [&consensus, &mempool] {
        match next(r) {
            ReactorEvent::PeerAdded(info) => {
                assert_eq!(info.id, a.peer_id());
                assert!(info.channels.contains(&VOTES));
            }
            other => panic!("first event {other:?}"),
        }
    }
    let mut votes = Vec::new();
    let mut parts = Vec::new();
    while votes.len() + parts.len() < 10 {
        match next(&consensus) {
            ReactorEvent::Message {
                channel: VOTES,
                data,
                ..
            } => votes.push(data[0]),
            ReactorEvent::Message {
                channel: PARTS,
                data,
                ..
            } => parts.push(data[0]),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(votes, vec![0, 1, 2, 3, 4]);
    assert_eq!(parts, vec![200, 201, 202, 203, 204]);
    let txs: Vec<u8> = (0..5)
        .map(|_| match next(&mempool) {
            ReactorEvent::Message {
                channel: TXS, data, ..
            } => data[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(txs, vec![100, 101, 102, 103, 104]);
    // A reactor made now hears of the connected peer before anything else.
    drop(mempool);
    let late = b.reactor(&[TXS], 8).expect("the channel is free again");
    assert!(matches!(next(&late), ReactorEvent::PeerAdded(p) if p.id == a.peer_id()));
    // The peer leaves: both hear it, after its messages.
    a.shutdown();
    for r in [&consensus, &late] {
        match next(r) {
            ReactorEvent::PeerRemoved { peer, .. } => assert_eq!(peer, a.peer_id()),
            other => panic!("{other:?}"),
        }
    }
    // The shared queue still has the lifecycle events and no reactor's messages.
    let shared: Vec<Event> = b.events().try_iter().collect();
    assert!(shared
        .iter()
        .any(|e| matches!(e, Event::PeerConnected { .. })));
    assert!(!shared.iter().any(|e| matches!(e, Event::Message { .. })));
    b.shutdown();
}

#[test]
fn a_stalled_reactor_throttles_its_senders_and_loses_nothing_or_the_order() {
    let (a, b) = pair(730);
    let consensus = b.reactor(&[VOTES], 1).unwrap();
    let ea = a.events();
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    // 200 x 1 KiB, far past the 16 KiB window and the queue of one, while the
    // reactor reads nothing.
    let mut sent = 0u32;
    while sent < 200 {
        let mut data = vec![0u8; 1024];
        data[..4].copy_from_slice(&sent.to_le_bytes());
        match a.send_timeout(
            b.peer_id(),
            VOTES,
            data,
            Default::default(),
            Duration::from_millis(200),
        ) {
            Ok(()) => sent += 1,
            Err(meshwire::SendError::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < 200, "the sender was throttled");
    let mut got = Vec::new();
    assert!(matches!(next(&consensus), ReactorEvent::PeerAdded(_)));
    while (got.len() as u32) < sent {
        match next(&consensus) {
            ReactorEvent::Message { data, .. } => {
                got.push(u32::from_le_bytes(data[..4].try_into().unwrap()))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
    a.shutdown();
    assert!(matches!(next(&consensus), ReactorEvent::PeerRemoved { .. }));
    b.shutdown();
}

#[test]
fn a_stalled_topic_queue_holds_up_neither_other_topics_nor_loses_its_own() {
    let node = |i: usize| {
        let n = meshwire::NodeBuilder::new(NET)
            .listen(addr(i))
            .rng_seed(i as u64)
            .kad(None)
            .channel(ChannelConfig::new(VOTES))
            .start()
            .unwrap();
        n.subscribe("txs").unwrap();
        n.subscribe("blocks").unwrap();
        n
    };
    let (a, b) = (node(740), node(741));
    let txs = b.gossip_queue("txs", 4).unwrap();
    assert_eq!(
        b.gossip_queue("txs", 4).unwrap_err(),
        ReactorError::TopicTaken("txs".into())
    );
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    connected(&eb, a.peer_id());
    assert!(eventually(Duration::from_secs(10), || a
        .mesh_peers("txs")
        .is_ok_and(|m| m.contains(&b.peer_id()))
        && a.mesh_peers("blocks")
            .is_ok_and(|m| m.contains(&b.peer_id()))));
    for i in 0..100u32 {
        a.publish("txs", format!("tx {i}").into_bytes()).unwrap();
    }
    for i in 0..10u32 {
        a.publish("blocks", format!("block {i}").into_bytes())
            .unwrap();
    }
    // Nobody reads the transactions, yet every block arrives on the shared queue.
    let mut blocks = 0;
    while blocks < 10 {
        if let Event::Gossip(g) = eb.recv_timeout(Duration::from_secs(10)).expect("a block") {
            assert_eq!(g.topic, "blocks", "a transaction on the shared queue");
            blocks += 1;
        }
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        match txs
            .recv_timeout(Duration::from_secs(10))
            .expect("a transaction")
        {
            Event::Gossip(g) => got.push(String::from_utf8(g.data).unwrap()),
            other => panic!("{other:?}"),
        }
    }
    got.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("tx {i}")).collect();
    want.sort();
    assert_eq!(got, want, "each transaction exactly once");
    a.shutdown();
    b.shutdown();
}
