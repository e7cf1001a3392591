//! Streamed (cut-through) messages through one router: forwarded chunk by chunk,
//! every chunk checked, bounded before the signature, and what a hostile or
//! careless peer can do with them.

use super::hostile_tests::{idontwants, key, Harness, T};
use super::*;

const CHUNK: usize = 16 * 1024 - 64;

struct Stream {
    head: wire::StreamHead,
    chunks: Vec<Arc<Vec<u8>>>,
    data: Vec<u8>,
    id: MessageId,
}

fn stream_of(origin: u64, seqno: u64, len: usize, first: u8) -> Stream {
    let mut data: Vec<u8> = (0..len).map(|i| (i * 7 + seqno as usize) as u8).collect();
    data[0] = first;
    let (head, chunks) = stream::build(&key(origin), T, seqno, 0, &data, CHUNK);
    let id = stream::head_id(&head);
    Stream {
        head,
        chunks,
        data,
        id,
    }
}

fn head_rpc(head: &wire::StreamHead) -> wire::GossipRpc {
    wire::GossipRpc {
        head: vec![head.clone()],
        ..Default::default()
    }
}

/// The chunk indices `out` sent to `peer`, in order.
fn chunks_to(out: &[GossipOutput], peer: PeerId) -> Vec<u32> {
    Harness::sent_to(out, peer)
        .iter()
        .flat_map(|r| r.chunk.iter().map(|c| c.index))
        .collect()
}

fn heads_to(out: &[GossipOutput], peer: PeerId) -> Vec<wire::StreamHead> {
    Harness::sent_to(out, peer)
        .into_iter()
        .flat_map(|r| r.head)
        .collect()
}

fn delivered(out: &[GossipOutput]) -> Vec<GossipEvent> {
    out.iter()
        .filter_map(|o| match o {
            GossipOutput::Deliver(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

/// The chunk buffers sent to `peer`.
fn chunk_buffers(out: &[GossipOutput], peer: PeerId) -> Vec<Arc<Vec<u8>>> {
    out.iter()
        .filter_map(|o| match o {
            GossipOutput::Send { peer: p, bytes, .. } if *p == peer => Some(bytes.clone()),
            _ => None,
        })
        .filter(|b| wire::GossipRpc::decode(b.as_slice()).is_ok_and(|r| !r.chunk.is_empty()))
        .collect()
}

#[test]
fn a_relay_forwards_each_checked_chunk_before_the_message_is_complete() {
    let config = GossipConfig {
        stream_eager: 2,
        ..GossipConfig::default()
    };
    let mut h = Harness::with(config, None);
    let up = h.peer(1, &[T]);
    let downs: Vec<PeerId> = (2..=5).map(|i| h.peer(i, &[T])).collect();
    h.take();
    let s = stream_of(1, 1, 100_000, 0);
    assert_eq!(s.chunks.len(), 7);
    h.rpc(up, &head_rpc(&s.head));
    let out = h.take();
    let (eager, later): (Vec<PeerId>, Vec<PeerId>) =
        downs.iter().partition(|p| !heads_to(&out, **p).is_empty());
    assert_eq!(
        eager.len(),
        2,
        "the head goes on at once to stream_eager peers"
    );
    assert!(heads_to(&out, eager[0]).iter().all(|h| h.hops == 2));
    for p in &downs {
        assert_eq!(
            idontwants(&out, *p),
            1,
            "the whole mesh is told not to send it"
        );
    }
    assert_eq!(idontwants(&out, up), 0);
    assert!(delivered(&out).is_empty());
    let mut sent = Vec::new();
    for (i, c) in s.chunks.iter().enumerate() {
        h.raw(up, c);
        let out = h.take();
        for p in &eager {
            assert_eq!(
                chunks_to(&out, *p),
                vec![i as u32],
                "chunk {i} forwarded on arrival"
            );
        }
        let (a, b) = (chunk_buffers(&out, eager[0]), chunk_buffers(&out, eager[1]));
        assert!(Arc::ptr_eq(&a[0], &b[0]), "one buffer for every link");
        if i + 1 < s.chunks.len() {
            assert!(later.iter().all(|p| chunks_to(&out, *p).is_empty()));
        }
        sent.extend(out);
    }
    let got = delivered(&sent);
    assert_eq!(got.len(), 1, "delivered once, when complete");
    assert_eq!(got[0].data, s.data);
    assert_eq!((got[0].hops, got[0].origin), (1, Some(up)));
    for p in &later {
        assert_eq!(
            heads_to(&sent, *p).len(),
            1,
            "the rest get it whole when complete"
        );
        assert_eq!(chunks_to(&sent, *p), (0..7).collect::<Vec<u32>>());
    }
    assert!(
        chunks_to(&sent, up).is_empty(),
        "nothing back to the sender"
    );
    assert_eq!(h.r.assembling.bytes(), 0, "the assembly is freed");
    assert_eq!(
        h.r.signature_checks(),
        1,
        "one signature for the whole message"
    );
}

#[test]
fn a_chunk_that_does_not_match_its_hash_costs_its_sender_and_goes_nowhere() {
    let mut h = Harness::new();
    let up = h.peer(1, &[T]);
    let liar = h.peer(2, &[T]);
    let down = h.peer(3, &[T]);
    h.take();
    let s = stream_of(9, 1, 50_000, 0);
    h.rpc(up, &head_rpc(&s.head));
    // A second head of the same message: its sender is told to stop (again: the
    // mesh was told when the first head came).
    h.rpc(liar, &head_rpc(&s.head));
    let out = h.take();
    assert_eq!(idontwants(&out, liar), 2);
    let mut bad = wire::GossipRpc::decode(s.chunks[0].as_slice()).unwrap();
    bad.chunk[0].data[10] ^= 0xff;
    h.rpc(liar, &bad);
    let out = h.take();
    assert_eq!(Harness::penalties(&out, liar), vec![Penalty::BadChunk]);
    assert!(
        chunks_to(&out, down).is_empty(),
        "the forgery is not passed on"
    );
    // The genuine chunks still complete it, from any holder.
    h.raw(liar, &s.chunks[0]);
    for c in &s.chunks[1..] {
        h.raw(up, c);
    }
    let out = h.take();
    assert_eq!(chunks_to(&out, down).len(), s.chunks.len());
    let got = delivered(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, s.data);
    assert!(Harness::penalties(&out, up).is_empty());
}

#[test]
fn a_forged_or_malformed_head_is_refused_before_anything_is_hushed_or_kept() {
    let mut h = Harness::new();
    let liar = h.peer(1, &[T]);
    let other = h.peer(2, &[T]);
    h.take();
    let s = stream_of(9, 1, 50_000, 0);
    let mut forged = s.head.clone();
    forged.chunk_hashes[0] ^= 1;
    h.rpc(liar, &head_rpc(&forged));
    let out = h.take();
    assert_eq!(Harness::penalties(&out, liar), vec![Penalty::BadSignature]);
    assert_eq!(idontwants(&out, other), 0, "a forged head hushes nobody");
    assert!(heads_to(&out, other).is_empty());
    let checks = h.r.signature_checks();
    let mut short = s.head.clone();
    short.chunk_hashes.truncate(32);
    h.rpc(liar, &head_rpc(&short));
    let mut huge = s.head.clone();
    huge.size = 1 << 40;
    h.rpc(liar, &head_rpc(&huge));
    let out = h.take();
    assert_eq!(
        Harness::penalties(&out, liar),
        vec![Penalty::MalformedStream, Penalty::OversizedMessage]
    );
    assert_eq!(
        h.r.signature_checks(),
        checks,
        "shape checked before the signature"
    );
    assert_eq!(h.r.assembling.bytes(), 0);
    // The genuine head is still taken: the forgeries did not mark the id.
    h.rpc(other, &head_rpc(&s.head));
    assert_eq!(heads_to(&h.take(), liar).len(), 1);
}

#[test]
fn streams_are_bounded_in_bytes_before_their_signature_is_checked() {
    let config = GossipConfig {
        max_assembly_bytes: 250_000,
        ..GossipConfig::default()
    };
    let mut h = Harness::with(config, None);
    let up = h.peer(1, &[T]);
    let other = h.peer(2, &[T]);
    h.take();
    let streams: Vec<Stream> = (1..=3).map(|o| stream_of(10 + o, 1, 100_000, 0)).collect();
    for s in &streams {
        h.rpc(up, &head_rpc(&s.head));
    }
    let out = h.take();
    assert_eq!(h.r.signature_checks(), 2, "the third is not even checked");
    assert_eq!(h.r.metrics()[T].streams_deferred, 1);
    assert_eq!(idontwants(&out, other), 2);
    assert_eq!(h.r.assembling.bytes(), 200_000);
    // Chunks of the deferred one are dropped; once room is made it is taken.
    for c in &streams[2].chunks {
        h.raw(up, c);
    }
    assert!(delivered(&h.take()).is_empty());
    for c in &streams[0].chunks {
        h.raw(up, c);
    }
    h.rpc(up, &head_rpc(&streams[2].head));
    for c in &streams[2].chunks {
        h.raw(up, c);
    }
    let got = delivered(&h.take());
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].data, streams[2].data);
}

#[test]
fn a_rejected_stream_costs_only_its_origin_and_holds_back_its_next_one() {
    let validator: Validator = Arc::new(|_, data: &[u8]| {
        if data[0] == 0xee {
            Validation::Reject
        } else {
            Validation::Accept
        }
    });
    let mut h = Harness::with(GossipConfig::default(), Some(validator));
    let relay = h.peer(1, &[T]);
    let down = h.peer(2, &[T]);
    let origin = h.peer(9, &[T]);
    h.take();
    let bad = stream_of(9, 1, 40_000, 0xee);
    h.rpc(relay, &head_rpc(&bad.head));
    for c in &bad.chunks {
        h.raw(relay, c);
    }
    let out = h.take();
    assert_eq!(
        chunks_to(&out, down).len(),
        3,
        "cut-through forwards before validation"
    );
    assert!(delivered(&out).is_empty());
    assert!(
        Harness::penalties(&out, relay).is_empty(),
        "the relay could not know"
    );
    assert_eq!(h.r.metrics()[T].rejected, 1);
    // The origin's next stream waits for the validator before it goes on.
    let next = stream_of(9, 2, 40_000, 0);
    h.rpc(relay, &head_rpc(&next.head));
    h.raw(relay, &next.chunks[0]);
    let out = h.take();
    assert!(heads_to(&out, down).is_empty() && chunks_to(&out, down).is_empty());
    for c in &next.chunks[1..] {
        h.raw(relay, c);
    }
    let out = h.take();
    assert_eq!(delivered(&out).len(), 1);
    assert_eq!(heads_to(&out, down).len(), 1, "sent on whole once accepted");
    assert_eq!(chunks_to(&out, down), vec![0, 1, 2]);
    // Straight from the origin, a rejected stream costs the origin.
    let third = stream_of(9, 3, 40_000, 0xee);
    h.rpc(origin, &head_rpc(&third.head));
    for c in &third.chunks {
        h.raw(origin, c);
    }
    assert_eq!(
        Harness::penalties(&h.take(), origin),
        vec![Penalty::InvalidMessage]
    );
}

#[test]
fn a_stalled_stream_is_fetched_elsewhere_and_a_silent_announcer_pays() {
    let mut h = Harness::new();
    let silent = h.peer(1, &[T]);
    let slow = h.peer(2, &[T]);
    let holder = h.peer(3, &[T]);
    h.take();
    let a = stream_of(9, 1, 40_000, 0);
    let b = stream_of(9, 2, 40_000, 0);
    h.rpc(silent, &head_rpc(&a.head));
    h.rpc(slow, &head_rpc(&b.head));
    h.raw(slow, &b.chunks[0]);
    h.take();
    h.now += GossipConfig::default().announce_timeout + Duration::from_millis(1);
    h.r.heartbeat(h.now);
    h.drain();
    let out = h.take();
    assert_eq!(
        Harness::penalties(&out, silent),
        vec![Penalty::BrokenAnnouncement]
    );
    assert!(
        Harness::penalties(&out, slow).is_empty(),
        "a slow sender is not a liar"
    );
    let wanted: Vec<Vec<u8>> = Harness::sent_to(&out, holder)
        .into_iter()
        .flat_map(|r| r.iwant)
        .flat_map(|w| w.ids)
        .collect();
    assert!(wanted.contains(&a.id.to_vec()) && wanted.contains(&b.id.to_vec()));
    assert_eq!(h.r.metrics()[T].streams_expired, 2);
    assert_eq!(h.r.assembling.bytes(), 0);
}

#[test]
fn a_large_publish_goes_to_a_few_mesh_peers_and_an_iwant_shares_its_buffers() {
    let mut h = Harness::new();
    let peers: Vec<PeerId> = (1..=30).map(|i| h.peer(i, &[T])).collect();
    h.r.heartbeat(h.now + Duration::from_secs(1));
    h.drain();
    h.take();
    let mesh = h.r.mesh(T);
    assert!(mesh.len() < peers.len());
    let data = vec![5u8; 100_000];
    let id = h.r.publish(T, data, h.now).unwrap();
    h.drain();
    let out = h.take();
    let got_head: Vec<PeerId> = peers
        .iter()
        .copied()
        .filter(|p| !heads_to(&out, *p).is_empty())
        .collect();
    let publish = GossipConfig::default().stream_publish;
    assert_eq!(got_head.len(), publish, "published to a few, not flooded");
    assert!(got_head.iter().all(|p| mesh.contains(p)), "of the mesh");
    let first = chunk_buffers(&out, got_head[0]);
    assert_eq!(first.len(), 7);
    let asker = *peers.iter().find(|p| !mesh.contains(p)).unwrap();
    h.iwant(asker, &id);
    let out = h.take();
    assert_eq!(heads_to(&out, asker).len(), 1);
    let answer = chunk_buffers(&out, asker);
    assert_eq!(answer.len(), 7);
    assert!(answer.iter().zip(&first).all(|(a, b)| Arc::ptr_eq(a, b)));
}

#[test]
fn chunks_of_another_version_of_a_message_cost_no_one_and_go_nowhere() {
    let mut h = Harness::new();
    let up = h.peer(1, &[T]);
    let other = h.peer(2, &[T]);
    let down = h.peer(3, &[T]);
    h.take();
    // An origin that signs two messages under one seqno: one id, other chunks.
    let a = stream_of(9, 1, 40_000, 0);
    let b = stream_of(9, 1, 40_000, 1);
    assert_eq!(a.id, b.id);
    h.rpc(up, &head_rpc(&a.head));
    h.rpc(other, &head_rpc(&b.head));
    h.raw(other, &b.chunks[0]);
    let out = h.take();
    assert!(
        Harness::penalties(&out, other).is_empty(),
        "an honest relay of the other version is not a liar"
    );
    assert!(
        chunks_to(&out, down).is_empty(),
        "and its chunk is not passed on"
    );
    for c in &a.chunks {
        h.raw(up, c);
    }
    let got = delivered(&h.take());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, a.data);
}

#[test]
fn a_deferred_stream_waits_for_its_verdict_within_the_deferred_bound() {
    let config = GossipConfig {
        deferred_validation: true,
        max_deferred_bytes: 150_000,
        ..GossipConfig::default()
    };
    let mut h = Harness::with(config, None);
    let up = h.peer(1, &[T]);
    let other = h.peer(2, &[T]);
    h.take();
    let (first, second) = (stream_of(11, 1, 100_000, 0), stream_of(12, 1, 100_000, 0));
    for s in [&first, &second] {
        h.rpc(up, &head_rpc(&s.head));
        for c in &s.chunks {
            h.raw(up, c);
        }
    }
    // The first waits for its verdict, delivered; the second finds no room.
    let got = delivered(&h.take());
    assert_eq!(got.len(), 1);
    assert!(got[0].needs_verdict && got[0].data == first.data);
    assert_eq!(h.r.awaiting_verdict(), 1);
    assert_eq!(h.r.metrics()[T].verdicts_no_room, 1);
    // Accepted: cached, so it can be served.
    assert!(h.r.report_validation(first.id, Validation::Accept, h.now));
    h.drain();
    h.take();
    h.iwant(other, &first.id);
    assert_eq!(heads_to(&h.take(), other).len(), 1, "served from the cache");
}

fn withdrawals(out: &[GossipOutput]) -> Vec<(PeerId, MessageId)> {
    out.iter()
        .filter_map(|o| match o {
            GossipOutput::Withdraw { peer, id } => Some((*peer, *id)),
            _ => None,
        })
        .collect()
}

/// Publishes a 100 kB stream; returns the message, the peers its chunks went to,
/// and one peer they did not.
fn published_stream(h: &mut Harness) -> (MessageId, Vec<PeerId>, PeerId) {
    let peers: Vec<PeerId> = (1..=10).map(|i| h.peer(i, &[T])).collect();
    h.r.heartbeat(h.now + Duration::from_secs(1));
    h.drain();
    h.take();
    let id = h.r.publish(T, vec![9u8; 100_000], h.now).unwrap();
    h.drain();
    let out = h.take();
    let with_chunks: Vec<PeerId> = peers
        .iter()
        .copied()
        .filter(|p| !chunk_buffers(&out, *p).is_empty())
        .collect();
    assert!(!with_chunks.is_empty());
    // Every chunk send names its message, so the mux can drop it while it waits.
    assert!(out.iter().all(|o| match o {
        GossipOutput::Send {
            bytes, chunk_of, ..
        } => {
            let is_chunk =
                wire::GossipRpc::decode(bytes.as_slice()).is_ok_and(|r| !r.chunk.is_empty());
            is_chunk == (*chunk_of == Some(id))
        }
        _ => true,
    }));
    let other = *peers.iter().find(|p| !with_chunks.contains(p)).unwrap();
    (id, with_chunks, other)
}

#[test]
fn chunks_queued_for_a_peer_that_has_the_message_are_withdrawn_once() {
    let mut h = Harness::new();
    let (id, with_chunks, other) = published_stream(&mut h);
    let target = with_chunks[0];
    let dontwant = wire::GossipRpc {
        idontwant: vec![wire::IDontWant {
            ids: vec![id.to_vec()],
        }],
        ..Default::default()
    };
    h.rpc(target, &dontwant);
    assert_eq!(withdrawals(&h.take()), vec![(target, id)]);
    // Said again, or by a peer we queued nothing for: nothing to withdraw.
    h.rpc(target, &dontwant);
    h.rpc(other, &dontwant);
    assert!(withdrawals(&h.take()).is_empty());
    // An IHAVE counts as having it too.
    let ihave = wire::GossipRpc {
        ihave: vec![wire::IHave {
            topic: T.to_string(),
            ids: vec![id.to_vec()],
        }],
        ..Default::default()
    };
    assert!(with_chunks.len() >= 2, "published whole to more than one");
    let second = with_chunks[1];
    h.rpc(second, &ihave);
    assert_eq!(withdrawals(&h.take()), vec![(second, id)]);
}

#[test]
fn without_withdrawal_queued_chunks_stay_as_in_gossipsub_v1_2() {
    let config = GossipConfig {
        withdraw_chunks: false,
        ..GossipConfig::default()
    };
    let mut h = Harness::with(config, None);
    let (id, with_chunks, _) = published_stream(&mut h);
    let dontwant = wire::GossipRpc {
        idontwant: vec![wire::IDontWant {
            ids: vec![id.to_vec()],
        }],
        ..Default::default()
    };
    h.rpc(with_chunks[0], &dontwant);
    assert!(withdrawals(&h.take()).is_empty());
}
