//! Two and twenty nodes exchanging messages on several channels over loopback TCP.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use meshwire::{ChannelConfig, Event, PeerId, Runtime, SendError};

fn channels() -> Vec<ChannelConfig> {
    vec![
        ChannelConfig::new(1).priority(5),
        ChannelConfig::new(2).priority(1).max_message_size(1 << 20),
        ChannelConfig::new(3),
    ]
}

#[test]
fn two_nodes_exchange_messages_on_several_channels() {
    let a = start(0, &channels(), None);
    let b = start(1, &channels(), None);
    let (ea, eb) = (a.events(), b.events());
    a.dial(b.listen_addrs()[0], Some(b.peer_id())).unwrap();
    connected(&ea, b.peer_id());
    connected(&eb, a.peer_id());
    assert_eq!(a.peers().len(), 1);
    assert_eq!(
        a.send(PeerId::from_bytes([9; 32]), 1, vec![1]),
        Err(SendError::UnknownPeer)
    );
    assert_eq!(
        a.send(b.peer_id(), 7, vec![1]),
        Err(SendError::UnknownChannel(7))
    );
    assert!(matches!(
        a.send(b.peer_id(), 1, vec![0; 5 << 20]),
        Err(SendError::TooLarge { .. })
    ));

    for i in 0..100u32 {
        let ch = 1 + i % 3;
        let len = if ch == 2 { 100_000 } else { 10 + i as usize };
        a.send(b.peer_id(), ch, vec![i as u8; len]).unwrap();
        b.send(a.peer_id(), ch, vec![i as u8; len]).unwrap();
    }
    for (rx, from) in [(&eb, a.peer_id()), (&ea, b.peer_id())] {
        let mut per_channel: HashMap<u32, Vec<u8>> = HashMap::new();
        for _ in 0..100 {
            let (ch, first) = wait_for(rx, Duration::from_secs(10), |ev| match ev {
                Event::Message {
                    peer,
                    channel,
                    data,
                } if peer == from => Some((channel, data[0])),
                _ => None,
            });
            per_channel.entry(ch).or_default().push(first);
        }
        // In order within each channel.
        for (ch, firsts) in per_channel {
            let expected: Vec<u8> = (0..100u32)
                .filter(|i| 1 + i % 3 == ch)
                .map(|i| i as u8)
                .collect();
            assert_eq!(firsts, expected, "channel {ch}");
        }
    }
    let m = a.metrics().unwrap();
    assert_eq!(m.outbound, 1);
    assert!(m.channels[&2].sent_msgs >= 33);
    assert!(m.to_prometheus().contains("meshwire_peers_outbound 1"));
    a.shutdown();
    wait_for(&eb, Duration::from_secs(10), |ev| match ev {
        Event::PeerDisconnected { peer, .. } if peer == a.peer_id() => Some(()),
        _ => None,
    });
    b.shutdown();
}

#[test]
fn twenty_nodes_on_one_loop_thread_all_talk_to_all() {
    let rt = Runtime::new().unwrap();
    let nodes: Vec<_> = (0..20)
        .map(|i| start(100 + i, &channels(), Some(&rt)))
        .collect();
    let events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    // A ring plus chords: every node dials the next 3.
    for (i, n) in nodes.iter().enumerate() {
        for k in 1..=3 {
            let j = (i + k) % nodes.len();
            n.dial(nodes[j].listen_addrs()[0], Some(nodes[j].peer_id()))
                .unwrap();
        }
    }
    assert!(eventually(Duration::from_secs(20), || nodes
        .iter()
        .all(|n| n.peers().len() == 6)));
    // Each node broadcasts on channel 3; every neighbour receives it.
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.broadcast(3, format!("hello from {i}").into_bytes())
                .unwrap(),
            6
        );
    }
    for (i, rx) in events.iter().enumerate() {
        let mut got = 0;
        while got < 6 {
            wait_for(rx, Duration::from_secs(10), |ev| match ev {
                Event::Message {
                    channel: 3, data, ..
                } => Some(data),
                _ => None,
            });
            got += 1;
        }
        assert_eq!(got, 6, "node {i}");
    }
    for n in &nodes {
        n.shutdown();
    }
}
