//! A node under attack over loopback: each test lets the adversarial peer of
//! `tests/adversary` do one of the things the hostile-peers review found, and checks
//! that the node stays within its budget, the attacker is closed or penalized, and
//! honest peers keep being served.

mod adversary;
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use adversary::{is_banned, rss_bytes, Adversary, GOSSIP};
use common::{connected, eventually, start, wait_for, NET};
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle};
use prost::Message;

const T: &str = "hostile";

fn ip(b: u8, c: u8) -> IpAddr {
    IpAddr::from([127, 66, b, c])
}

fn gossip_of(node: &NodeHandle, want: impl Fn(&[u8]) -> bool, wait: Duration) -> bool {
    let events = node.events();
    let deadline = Instant::now() + wait;
    while let Ok(ev) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Event::Gossip(g) = ev {
            if want(&g.data) {
                return true;
            }
        }
    }
    false
}

fn mesh_has(node: &NodeHandle, peer: meshwire::PeerId) -> bool {
    eventually(Duration::from_secs(10), || {
        node.mesh_peers(T).is_ok_and(|m| m.contains(&peer))
    })
}

#[test]
fn oversized_rpcs_and_forged_publishes_cost_little_and_get_the_liar_banned() {
    let node = start(300, &[ChannelConfig::new(1)], None);
    let honest = start(301, &[ChannelConfig::new(1)], None);
    node.subscribe(T).unwrap();
    honest.subscribe(T).unwrap();
    honest
        .dial(node.listen_addrs()[0], Some(node.peer_id()))
        .unwrap();
    connected(&node.events(), honest.peer_id());
    let addr = node.listen_addrs()[0];
    let mut adv = Adversary::connect(NET, ip(1, 1), addr, &[GOSSIP], false, None);
    let rss_before = rss_bytes();

    // 4 MiB of empty GRAFT entries: two million entries, one RPC.
    let mut flood = Vec::with_capacity(4 << 20);
    while flood.len() + 2 <= 4 << 20 {
        flood.extend_from_slice(&[6 << 3 | 2, 0]);
    }
    let _ = adv.send_message(GOSSIP, &flood);
    // Five hundred forged publishes in one RPC, then again.
    let key = meshwire::Keypair::generate().unwrap();
    let forged = meshwire::wire::GossipRpc {
        publish: (0..500)
            .map(|i| {
                let mut m = meshwire::gossip::message::build(Some(&key), T, i + 1, 0, vec![1; 32]);
                m.data[0] ^= 1;
                m
            })
            .collect(),
        ..Default::default()
    };
    let _ = adv.send_message(GOSSIP, &forged.encode_to_vec());
    let _ = adv.send_message(GOSSIP, &forged.encode_to_vec());
    let heard = adv.listen(Duration::from_secs(10), false);
    assert!(
        is_banned(heard.close),
        "closed as banned: {:?}",
        heard.close
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "memory grew by {grown} bytes");
    // The banned address is refused at accept from now on.
    let again = Adversary::connect_or_refused(NET, ip(1, 1), addr);
    assert!(again.is_none(), "a banned address gets no handshake");

    // The honest peer is still served.
    honest.publish(T, b"still here".to_vec()).unwrap();
    assert!(gossip_of(
        &node,
        |d| d == b"still here",
        Duration::from_secs(10)
    ));
    node.shutdown();
    honest.shutdown();
}

#[test]
fn a_first_fragment_announcing_someone_elses_message_censors_nothing() {
    // publisher -- relay -- node, and the attacker in the node's mesh.
    let node = start(310, &[ChannelConfig::new(1)], None);
    let relay = start(311, &[ChannelConfig::new(1)], None);
    let publisher = start(312, &[ChannelConfig::new(1)], None);
    for n in [&node, &relay, &publisher] {
        n.subscribe(T).unwrap();
    }
    relay
        .dial(node.listen_addrs()[0], Some(node.peer_id()))
        .unwrap();
    publisher
        .dial(relay.listen_addrs()[0], Some(relay.peer_id()))
        .unwrap();
    let mut adv = Adversary::connect(
        NET,
        ip(2, 1),
        node.listen_addrs()[0],
        &[GOSSIP],
        false,
        None,
    );
    let subscribe = meshwire::wire::GossipRpc {
        subscribe: vec![T.into()],
        ..Default::default()
    };
    adv.send_message(GOSSIP, &subscribe.encode_to_vec())
        .unwrap();
    assert!(mesh_has(&node, adv.key.peer_id()));
    assert!(mesh_has(&node, relay.peer_id()));
    assert!(mesh_has(&relay, publisher.peer_id()));

    // The attacker learns the publisher's sequence number from one message ...
    publisher.publish(T, b"first".to_vec()).unwrap();
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.is_none() && Instant::now() < deadline {
        for (ch, _, data) in adv.listen(Duration::from_millis(200), false).msgs {
            if ch != GOSSIP {
                continue;
            }
            if let Ok(rpc) = meshwire::wire::GossipRpc::decode(data.as_slice()) {
                seen = rpc.publish.into_iter().find(|m| m.data == b"first");
            }
        }
    }
    let first = seen.expect("the attacker sees the first message");
    // ... and announces the next one with a first fragment it never finishes.
    let fake = meshwire::wire::GossipMessage {
        origin_key: first.origin_key.clone(),
        seqno: first.seqno + 1,
        topic: T.into(),
        data: vec![0; 1 << 20],
        ..Default::default()
    };
    let rpc = meshwire::wire::GossipRpc {
        publish: vec![fake],
        ..Default::default()
    }
    .encode_to_vec();
    adv.send_first_fragment(GOSSIP, &rpc[..1024], rpc.len() as u64);
    adv.listen(Duration::from_millis(300), false);
    // The real message still reaches the node: late, from the relay, by IWANT.
    let big = vec![7u8; 64 * 1024];
    publisher.publish(T, big.clone()).unwrap();
    let events = node.events();
    let got = wait_for(&events, Duration::from_secs(15), |ev| match ev {
        Event::Gossip(g) if g.data == big => Some(g.from),
        _ => None,
    });
    assert_eq!(got, relay.peer_id());
    for n in [node, relay, publisher] {
        n.shutdown();
    }
}

#[test]
fn a_lookup_only_connection_carries_the_dht_and_nothing_else() {
    const APP: u32 = 9;
    let node = NodeBuilder::new(NET)
        .listen(common::addr(320))
        .channel(ChannelConfig::new(APP))
        .start()
        .unwrap();
    let mut adv = Adversary::connect(
        NET,
        ip(3, 1),
        node.listen_addrs()[0],
        &[adversary::KAD],
        true,
        None,
    );
    let events = node.events();
    // Announcing a 4 MiB message on the gossip channel reserves nothing: refused.
    adv.send_first_fragment(GOSSIP, &[0u8; 64], 4 << 20);
    let heard = adv.listen(Duration::from_secs(5), false);
    assert!(
        heard.close.is_some() || heard.eof,
        "closed at the first packet"
    );
    // An application message on another lookup-only connection is never delivered.
    let mut adv = Adversary::connect(
        NET,
        ip(3, 2),
        node.listen_addrs()[0],
        &[adversary::KAD],
        true,
        None,
    );
    let _ = adv.send_message(APP, b"not for you");
    assert!(adv.closed_within(Duration::from_secs(5)));
    let delivered = std::iter::from_fn(|| events.recv_timeout(Duration::from_millis(200)).ok())
        .any(|ev| matches!(ev, Event::Message { .. } | Event::PeerConnected { .. }));
    assert!(!delivered, "no announcement, no message");
    node.shutdown();
}

#[test]
fn forty_peers_that_stop_reading_lose_their_slots() {
    const BULK: u32 = 5;
    let node = NodeBuilder::new(NET)
        .listen(common::addr(330))
        .channel(ChannelConfig::new(BULK).max_message_size(4 << 20))
        .keepalive(Duration::from_secs(1), Duration::from_secs(2))
        .kad(None)
        .gossip(None)
        .start()
        .unwrap();
    let addr = node.listen_addrs()[0];
    let events = node.events();
    // Forty peers with tiny receive windows take every inbound slot, then read nothing.
    let advs: Vec<Adversary> = (0..40)
        .map(|i| Adversary::connect(NET, ip(10 + i, 1), addr, &[BULK], false, Some(4096)))
        .collect();
    assert!(eventually(Duration::from_secs(10), || node.peers().len() == 40));
    // The application fills their queues; nothing can drain.
    for _ in 0..4 {
        let _ = node.broadcast(BULK, vec![0u8; 1 << 20]);
    }
    let start = Instant::now();
    let mut gone = 0;
    while gone < 40 && start.elapsed() < Duration::from_secs(30) {
        if let Ok(Event::PeerDisconnected { .. }) = events.recv_timeout(Duration::from_secs(1)) {
            gone += 1;
        }
    }
    assert_eq!(gone, 40, "every stalled peer was dropped");
    // Keepalive (1 s + 2 s) plus linger (2 s) plus slack.
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // The slots are free again for an honest peer.
    let honest = start_on_ip(331);
    honest.dial(addr, Some(node.peer_id())).unwrap();
    connected(&events, honest.peer_id());
    drop(advs);
    node.shutdown();
    honest.shutdown();
}

fn start_on_ip(i: usize) -> NodeHandle {
    NodeBuilder::new(NET)
        .listen(common::addr(i))
        .channel(ChannelConfig::new(5).max_message_size(4 << 20))
        .kad(None)
        .gossip(None)
        .start()
        .unwrap()
}

#[test]
fn a_slow_application_throttles_gossip_senders_and_loses_nothing() {
    let mut b = common::builder(340, &[ChannelConfig::new(1)]);
    b.config_mut().event_queue = 8;
    let node = b.start().unwrap();
    let publisher = start(341, &[ChannelConfig::new(1)], None);
    node.subscribe(T).unwrap();
    publisher.subscribe(T).unwrap();
    let events = node.events();
    publisher
        .dial(node.listen_addrs()[0], Some(node.peer_id()))
        .unwrap();
    connected(&events, publisher.peer_id());
    assert!(mesh_has(&publisher, node.peer_id()));
    // 900 x 16 KiB = 14 MiB, more than the gossip channel's receive window (8 MiB).
    const N: usize = 900;
    const SIZE: usize = 16 * 1024;
    for i in 0..N {
        let mut data = vec![0u8; SIZE];
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        publisher.publish(T, data).unwrap();
    }
    // The application sleeps: what waits for it stays within the credit the node
    // granted (the window's worth of messages), the rest waits at the sender.
    // The gossip channel's window: twice its largest RPC (4 MiB + 4 KiB).
    let window = 2 * ((4 << 20) + 4096);
    let bound = (window / SIZE + 64) as u64;
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        most = most.max(node.metrics().unwrap().waiting_events);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(most > 0, "the application did fall behind");
    assert!(
        most <= bound,
        "{most} events waiting, credit allows {bound}"
    );
    // Then it takes everything: all of it arrives.
    let mut got = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < N && Instant::now() < deadline {
        if let Ok(Event::Gossip(g)) = events.recv_timeout(Duration::from_secs(1)) {
            got.insert(u64::from_le_bytes(g.data[..8].try_into().unwrap()));
        }
    }
    assert_eq!(got.len(), N);
    let m = node.metrics().unwrap();
    assert_eq!(m.drops.get("event_queue_full"), None);
    node.shutdown();
    publisher.shutdown();
}

#[test]
fn a_publish_that_reaches_no_peer_is_reported() {
    let node = start(350, &[ChannelConfig::new(1)], None);
    node.subscribe(T).unwrap();
    let events = node.events();
    let id = node.publish(T, b"nobody hears this".to_vec()).unwrap();
    let failed = wait_for(&events, Duration::from_secs(5), |ev| match ev {
        Event::PublishFailed { id: failed, .. } => Some(failed),
        _ => None,
    });
    assert_eq!(failed, id);
    node.shutdown();
}
