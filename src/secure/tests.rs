//! Handshake property tests: one per property of DESIGN.md, each driven through the
//! real state machines, with dishonest peers built from the same code.
#![cfg(not(fuzzing))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use ring::rand::SystemRandom;

use crate::error::{HandshakeError, RejectReason};
use crate::identity::{Keypair, PeerId};
use crate::secure::handshake::{
    sign_auth, HandshakeConfig, InitiatorAwaitResponse, ResponderAwaitHello, LABEL_INITIATOR_SIG,
    LABEL_RESPONDER_SIG,
};
use crate::secure::{CipherSuite, Established, Handshake, NodeInfo};
use crate::wire;

fn key() -> Arc<Keypair> {
    Arc::new(Keypair::generate().unwrap())
}

fn config(network: &str) -> Arc<HandshakeConfig> {
    let mut c = HandshakeConfig::new(network);
    c.node_info.listen_addrs = vec!["127.0.0.1:4000".parse().unwrap()];
    c.node_info.channels = vec![1, 2, 3];
    Arc::new(c)
}

/// Strips the varint length prefix of one message.
fn body(msg: &[u8]) -> &[u8] {
    let prefix = msg.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    &msg[prefix..]
}

/// What each side sent, message by message, and how it ended.
struct Run {
    init: Result<Established, HandshakeError>,
    resp: Result<Established, HandshakeError>,
    from_initiator: Vec<Vec<u8>>,
    from_responder: Vec<Vec<u8>>,
}

/// Runs a handshake between two `Handshake`s, letting `tamper` rewrite each message
/// in flight (`true` = sent by the initiator).
fn run_with(
    mut a: Handshake,
    mut b: Handshake,
    mut tamper: impl FnMut(bool, usize, &mut Vec<u8>),
) -> Run {
    let rng = SystemRandom::new();
    let mut run = Run {
        init: Err(HandshakeError::Closed),
        resp: Err(HandshakeError::Closed),
        from_initiator: vec![],
        from_responder: vec![],
    };
    let (mut a_err, mut b_err) = (None, None);
    for _ in 0..4 {
        if let Some(mut m) = a.poll_transmit() {
            tamper(true, run.from_initiator.len(), &mut m);
            run.from_initiator.push(m.clone());
            if b_err.is_none() {
                b_err = b.handle_input(&m, &rng).err();
            }
        }
        if let Some(mut m) = b.poll_transmit() {
            tamper(false, run.from_responder.len(), &mut m);
            run.from_responder.push(m.clone());
            if a_err.is_none() {
                a_err = a.handle_input(&m, &rng).err();
            }
        }
    }
    run.init = a
        .take_established()
        .ok_or_else(|| a_err.unwrap_or(HandshakeError::Closed));
    run.resp = b
        .take_established()
        .ok_or_else(|| b_err.unwrap_or(HandshakeError::Closed));
    run
}

fn pair(
    ca: Arc<HandshakeConfig>,
    ka: Arc<Keypair>,
    expected: Option<PeerId>,
    cb: Arc<HandshakeConfig>,
    kb: Arc<Keypair>,
) -> (Handshake, Handshake) {
    let now = Instant::now();
    let a = Handshake::initiator(ca, ka, expected, now, &SystemRandom::new()).unwrap();
    let b = Handshake::responder(cb, kb, now);
    (a, b)
}

fn run(
    ca: Arc<HandshakeConfig>,
    ka: Arc<Keypair>,
    cb: Arc<HandshakeConfig>,
    kb: Arc<Keypair>,
) -> Run {
    let (a, b) = pair(ca, ka, None, cb, kb);
    run_with(a, b, |_, _, _| {})
}

/// Both ends can exchange sealed frames in both directions.
fn assert_talks(a: &mut Established, b: &mut Established) {
    fn one_way(x: &mut Established, y: &mut Established) {
        let mut bytes = Vec::new();
        x.sealer.seal(&mut bytes, b"ping").unwrap();
        y.opener.feed(&bytes);
        assert_eq!(y.opener.next_frame().unwrap().unwrap(), b"ping");
    }
    one_way(a, b);
    one_way(b, a);
}

#[test]
fn mutual_authentication_and_node_info() {
    let (ka, kb) = (key(), key());
    let (ca, cb) = (config("net"), config("net"));
    let (a, b) = pair(
        ca.clone(),
        ka.clone(),
        Some(kb.peer_id()),
        cb.clone(),
        kb.clone(),
    );
    let mut r = run_with(a, b, |_, _, _| {});
    let (mut i, mut s) = (r.init.unwrap(), r.resp.unwrap());
    assert_eq!(i.remote, kb.peer_id());
    assert_eq!(s.remote, ka.peer_id());
    assert_eq!(i.remote_info, cb.node_info);
    assert_eq!(s.remote_info, ca.node_info);
    assert_eq!(r.from_initiator.len(), 2);
    assert_eq!(r.from_responder.len(), 1);
    assert_talks(&mut i, &mut s);
    r.from_initiator.clear();
}

#[test]
fn cipher_negotiation_follows_the_initiator_and_refuses_disjoint_sets() {
    let mut ca = HandshakeConfig::new("net");
    ca.ciphers = vec![CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm];
    let cb = HandshakeConfig::new("net");
    let r = run(Arc::new(ca.clone()), key(), Arc::new(cb.clone()), key());
    let (mut i, mut s) = (r.init.unwrap(), r.resp.unwrap());
    assert_eq!(
        (i.cipher, s.cipher),
        (CipherSuite::ChaCha20Poly1305, CipherSuite::ChaCha20Poly1305)
    );
    assert_talks(&mut i, &mut s);

    ca.ciphers = vec![CipherSuite::Aes256Gcm];
    let mut cb = cb;
    cb.ciphers = vec![CipherSuite::ChaCha20Poly1305];
    let r = run(Arc::new(ca), key(), Arc::new(cb), key());
    assert_eq!(r.resp.unwrap_err(), HandshakeError::NoCommonCipher);
    assert!(matches!(
        r.init.unwrap_err(),
        HandshakeError::Rejected {
            reason: RejectReason::NoCommonCipher,
            ..
        }
    ));
}

#[test]
fn a_responder_choosing_a_cipher_we_did_not_offer_is_refused() {
    // The responder forces ChaCha although the initiator offered only AES.
    let mut ca = HandshakeConfig::new("net");
    ca.ciphers = vec![CipherSuite::Aes256Gcm];
    let (ka, kb) = (key(), key());
    let rng = SystemRandom::new();
    let (init, hello) = InitiatorAwaitResponse::start(Arc::new(ca), ka, None, &rng).unwrap();
    let mut hello_msg = wire::InitHello::decode(body(&hello)).unwrap();
    hello_msg.ciphers = vec![wire::Cipher::Chacha20Poly1305 as i32];
    let (_, reply) = ResponderAwaitHello::new(config("net"), kb)
        .handle_hello(&hello_msg.encode_to_vec(), &rng)
        .unwrap();
    assert_eq!(
        init.handle_response(body(&reply)).unwrap_err(),
        HandshakeError::NoCommonCipher
    );
}

#[test]
fn dialer_expecting_another_peer_aborts_without_revealing_itself() {
    let (ka, kb, other) = (key(), key(), key());
    let (a, b) = pair(
        config("net"),
        ka,
        Some(other.peer_id()),
        config("net"),
        kb.clone(),
    );
    let r = run_with(a, b, |_, _, _| {});
    assert_eq!(
        r.init.unwrap_err(),
        HandshakeError::UnexpectedPeer {
            expected: other.peer_id(),
            got: kb.peer_id()
        }
    );
    // Only the hello went out: the initiator's sealed identity was never sent.
    assert_eq!(r.from_initiator.len(), 1);
    assert_eq!(r.resp.unwrap_err(), HandshakeError::Closed);
}

#[test]
fn wrong_network_id_is_refused_with_a_clear_error_on_both_sides() {
    let r = run(config("mainnet"), key(), config("testnet"), key());
    assert_eq!(
        r.resp.unwrap_err(),
        HandshakeError::NetworkMismatch {
            ours: "testnet".into(),
            theirs: "mainnet".into()
        }
    );
    assert_eq!(
        r.init.unwrap_err(),
        HandshakeError::Rejected {
            reason: RejectReason::Network,
            version: 1,
            network_id: "testnet".into()
        }
    );
    assert_eq!(r.from_initiator.len(), 1, "no data after the refused hello");
}

#[test]
fn wrong_protocol_version_is_refused() {
    let rng = SystemRandom::new();
    let (_, hello) = InitiatorAwaitResponse::start(config("net"), key(), None, &rng).unwrap();
    let mut msg = wire::InitHello::decode(body(&hello)).unwrap();
    msg.version = 2;
    let err = ResponderAwaitHello::new(config("net"), key())
        .handle_hello(&msg.encode_to_vec(), &rng)
        .err()
        .unwrap();
    assert_eq!(err, HandshakeError::VersionMismatch { ours: 1, theirs: 2 });
}

/// Runs an honest initiator against a responder whose `Auth` is built by `forge`.
fn against_forged_responder(
    forge: impl FnOnce(&mut crate::secure::transcript::Transcript, &Keypair, &NodeInfo) -> wire::Auth,
) -> HandshakeError {
    let rng = SystemRandom::new();
    let (init, hello) = InitiatorAwaitResponse::start(config("net"), key(), None, &rng).unwrap();
    let (_, reply) = ResponderAwaitHello::new(config("net"), key())
        .handle_hello_with(body(&hello), &rng, forge)
        .unwrap();
    init.handle_response(body(&reply))
        .expect_err("forged responder accepted")
}

/// Runs an honest responder against an initiator whose `Auth` is built by `forge`.
fn against_forged_initiator(
    forge: impl FnOnce(&mut crate::secure::transcript::Transcript, &Keypair, &NodeInfo) -> wire::Auth,
) -> HandshakeError {
    let rng = SystemRandom::new();
    let (init, hello) = InitiatorAwaitResponse::start(config("net"), key(), None, &rng).unwrap();
    let (resp, reply) = ResponderAwaitHello::new(config("net"), key())
        .handle_hello(body(&hello), &rng)
        .unwrap();
    let (_, finish) = init.handle_response_with(body(&reply), forge).unwrap();
    resp.handle_finish(body(&finish))
        .expect_err("forged initiator accepted")
}

#[test]
fn bad_signature_is_refused_by_both_roles() {
    let flip = |mut auth: wire::Auth| {
        auth.signature[10] ^= 1;
        auth
    };
    let err = against_forged_responder(|t, k, i| flip(sign_auth(t, k, i, LABEL_RESPONDER_SIG)));
    assert_eq!(err, HandshakeError::BadSignature);
    let err = against_forged_initiator(|t, k, i| flip(sign_auth(t, k, i, LABEL_INITIATOR_SIG)));
    assert_eq!(err, HandshakeError::BadSignature);
}

#[test]
fn claiming_another_nodes_key_is_refused() {
    // The forger signs with its own key but presents a victim's public key.
    let victim = key();
    let err = against_forged_responder(|t, k, i| {
        let mut auth = sign_auth(t, k, i, LABEL_RESPONDER_SIG);
        auth.public_key = victim.public_key().to_vec();
        auth
    });
    assert_eq!(err, HandshakeError::BadSignature);
}

#[test]
fn node_info_is_covered_by_the_signature() {
    let err = against_forged_responder(|t, k, i| {
        let mut auth = sign_auth(t, k, i, LABEL_RESPONDER_SIG);
        let mut info = i.clone();
        info.listen_addrs = vec!["10.0.0.1:1".parse().unwrap()];
        auth.node_info = info.encode();
        auth
    });
    assert_eq!(err, HandshakeError::BadSignature);
}

#[test]
fn a_signature_made_for_the_other_role_is_refused() {
    // Reflection: a valid signature over the right transcript, but with the label of
    // the other role, must not authenticate.
    let err = against_forged_responder(|t, k, i| sign_auth(t, k, i, LABEL_INITIATOR_SIG));
    assert_eq!(err, HandshakeError::BadSignature);
    let err = against_forged_initiator(|t, k, i| sign_auth(t, k, i, LABEL_RESPONDER_SIG));
    assert_eq!(err, HandshakeError::BadSignature);
}

#[test]
fn a_hello_reflected_back_to_its_sender_is_refused() {
    // A's own hello goes to A's responder, whose answer goes back to A.
    let ka = key();
    let (a, b) = pair(config("net"), ka.clone(), None, config("net"), ka);
    let r = run_with(a, b, |_, _, _| {});
    assert_eq!(r.init.unwrap_err(), HandshakeError::SelfConnection);
}

#[test]
fn a_recorded_handshake_replayed_into_a_new_session_fails() {
    let (ka, kb) = (key(), key());
    let recorded = run(config("net"), ka.clone(), config("net"), kb.clone());
    assert!(recorded.init.is_ok() && recorded.resp.is_ok());

    // The attacker replays the initiator's hello and finish to a fresh responder.
    let rng = SystemRandom::new();
    let mut b = Handshake::responder(config("net"), kb.clone(), Instant::now());
    b.handle_input(&recorded.from_initiator[0], &rng).unwrap();
    assert!(b.poll_transmit().is_some());
    assert_eq!(
        b.handle_input(&recorded.from_initiator[1], &rng)
            .unwrap_err(),
        HandshakeError::DecryptFailed
    );
    assert!(b.take_established().is_none());

    // And the responder's answer to a fresh initiator.
    let mut a = Handshake::initiator(config("net"), ka, None, Instant::now(), &rng).unwrap();
    let _hello = a.poll_transmit(); // its own hello, not sent: a replayed answer comes instead
    assert_eq!(
        a.handle_input(&recorded.from_responder[0], &rng)
            .unwrap_err(),
        HandshakeError::DecryptFailed
    );
}

#[test]
fn every_session_has_fresh_traffic_keys() {
    // Same two identities, same plaintext: ciphertexts differ because only the
    // ephemeral exchange feeds the traffic keys.
    let (ka, kb) = (key(), key());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = run(config("net"), ka.clone(), config("net"), kb.clone());
        let mut i = r.init.unwrap();
        let mut out = Vec::new();
        i.sealer.seal(&mut out, b"same plaintext").unwrap();
        assert!(!seen.contains(&out));
        seen.push(out);
    }
}

#[test]
fn the_initiators_identity_is_never_sent_in_clear() {
    let (ka, kb) = (key(), key());
    let r = run(config("net"), ka.clone(), config("net"), kb.clone());
    assert!(r.init.is_ok() && r.resp.is_ok());
    let sent: Vec<u8> = r.from_initiator.concat();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&sent, ka.public_key()));
    assert!(!contains(&sent, ka.peer_id().as_bytes()));
    // The responder's identity is sealed too.
    let sent: Vec<u8> = r.from_responder.concat();
    assert!(!contains(&sent, kb.public_key()));
}

/// Known X25519 public values of small order, and zero (RFC 7748 §6.1; libsodium's list).
fn low_order_points() -> Vec<[u8; 32]> {
    let mut points = vec![[0u8; 32]];
    let mut one = [0u8; 32];
    one[0] = 1;
    points.push(one);
    points.push([
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ]);
    points.push([
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ]);
    // p - 1, p and p + 1 (non-canonical encodings of -1, 0 and 1).
    for low in [0xec, 0xed, 0xee] {
        let mut p = [0xffu8; 32];
        p[0] = low;
        p[31] = 0x7f;
        points.push(p);
    }
    points
}

#[test]
fn all_zero_and_low_order_ephemeral_keys_are_refused() {
    let rng = SystemRandom::new();
    for point in low_order_points() {
        // At the responder.
        let (_, hello) = InitiatorAwaitResponse::start(config("net"), key(), None, &rng).unwrap();
        let mut msg = wire::InitHello::decode(body(&hello)).unwrap();
        msg.ephemeral = point.to_vec();
        let err = ResponderAwaitHello::new(config("net"), key())
            .handle_hello(&msg.encode_to_vec(), &rng)
            .err()
            .unwrap();
        assert_eq!(err, HandshakeError::BadEphemeralKey, "point {point:02x?}");

        // At the initiator.
        let (init, hello) =
            InitiatorAwaitResponse::start(config("net"), key(), None, &rng).unwrap();
        let (_, reply) = ResponderAwaitHello::new(config("net"), key())
            .handle_hello(body(&hello), &rng)
            .unwrap();
        let mut msg = wire::ResponderMessage::decode(body(&reply)).unwrap();
        if let Some(wire::responder_message::Msg::Hello(h)) = &mut msg.msg {
            h.ephemeral = point.to_vec();
        }
        let err = init.handle_response(&msg.encode_to_vec()).err().unwrap();
        assert_eq!(err, HandshakeError::BadEphemeralKey, "point {point:02x?}");
    }
    // Wrong lengths too.
    let (_, hello) = InitiatorAwaitResponse::start(config("net"), key(), None, &rng).unwrap();
    let mut msg = wire::InitHello::decode(body(&hello)).unwrap();
    msg.ephemeral.pop();
    let err = ResponderAwaitHello::new(config("net"), key())
        .handle_hello(&msg.encode_to_vec(), &rng)
        .err()
        .unwrap();
    assert_eq!(err, HandshakeError::BadEphemeralKey);
}

#[test]
fn truncation_at_every_byte_offset_never_establishes() {
    let rng = SystemRandom::new();
    let (ka, kb) = (key(), key());
    let honest = run(config("net"), ka.clone(), config("net"), kb.clone());
    assert!(honest.init.is_ok());
    // Each message, cut at every offset, then end of stream.
    let messages = [
        (true, honest.from_initiator[0].clone()),
        (false, vec![]),
        (true, vec![]),
    ];
    // Message 1 to a responder.
    for cut in 0..messages[0].1.len() {
        let mut b = Handshake::responder(config("net"), kb.clone(), Instant::now());
        assert_eq!(b.handle_input(&messages[0].1[..cut], &rng), Ok(cut));
        assert!(b.poll_transmit().is_none(), "answered a cut hello ({cut})");
        assert_eq!(b.handle_eof(), Err(HandshakeError::Closed));
    }
    // Message 2 to an initiator and message 3 to a responder, from fresh live runs.
    let (mut a, mut b) = pair(config("net"), ka.clone(), None, config("net"), kb.clone());
    let m1 = a.poll_transmit().unwrap();
    b.handle_input(&m1, &rng).unwrap();
    let m2 = b.poll_transmit().unwrap();
    for cut in 0..m2.len() {
        let (mut a2, _) = pair(config("net"), ka.clone(), None, config("net"), kb.clone());
        let _hello = a2.poll_transmit();
        // A message 2 for another hello: any prefix must not establish.
        a2.handle_input(&m2[..cut], &rng).ok();
        assert!(a2.take_established().is_none());
        assert!(a2.handle_eof().is_err());
    }
    a.handle_input(&m2, &rng).unwrap();
    let m3 = a.poll_transmit().unwrap();
    for cut in 0..m3.len() {
        // A fresh responder state cannot be rebuilt for b's transcript, so cut b's input.
        let mut partial = Handshake::responder(config("net"), kb.clone(), Instant::now());
        partial.handle_input(&m1, &rng).unwrap();
        partial.handle_input(&m3[..cut], &rng).ok();
        assert!(
            partial.take_established().is_none(),
            "cut {cut} established"
        );
        assert!(partial.handle_eof().is_err());
    }
    assert_eq!(b.handle_input(&m3, &rng), Ok(m3.len()));
    assert!(b.take_established().is_some());
}

#[test]
fn tampering_with_any_bit_of_any_message_never_yields_a_mismatched_session() {
    let (ka, kb) = (key(), key());
    let honest = run(config("net"), ka.clone(), config("net"), kb.clone());
    let sizes = [
        (true, 0, honest.from_initiator[0].len()),
        (false, 0, honest.from_responder[0].len()),
        (true, 1, honest.from_initiator[1].len()),
    ];
    let mut failures = 0;
    for (from_init, index, len) in sizes {
        for bit in 0..len * 8 {
            let (a, b) = pair(config("net"), ka.clone(), None, config("net"), kb.clone());
            let r = run_with(a, b, |sender, i, m| {
                if sender == from_init && i == index && bit / 8 < m.len() {
                    m[bit / 8] ^= 1 << (bit % 8);
                }
            });
            match (r.init, r.resp) {
                (Ok(mut i), Ok(mut s)) => {
                    // Only an encoding change that decodes to the same values may pass,
                    // and then both sides must hold the same keys and identities.
                    assert_eq!((i.remote, s.remote), (kb.peer_id(), ka.peer_id()));
                    assert_talks(&mut i, &mut s);
                }
                _ => failures += 1,
            }
        }
    }
    assert!(failures > 0);
}

#[test]
fn early_data_after_the_last_message_is_left_for_the_session() {
    let rng = SystemRandom::new();
    let (mut a, mut b) = pair(config("net"), key(), None, config("net"), key());
    b.handle_input(&a.poll_transmit().unwrap(), &rng).unwrap();
    a.handle_input(&b.poll_transmit().unwrap(), &rng).unwrap();
    let mut i = a.take_established().unwrap();
    let mut bytes = a.poll_transmit().unwrap();
    let finish_len = bytes.len();
    i.sealer.seal(&mut bytes, b"early").unwrap();
    assert_eq!(b.handle_input(&bytes, &rng), Ok(finish_len));
    let mut s = b.take_established().unwrap();
    s.opener.feed(&bytes[finish_len..]);
    assert_eq!(s.opener.next_frame().unwrap().unwrap(), b"early");
}

#[test]
fn handshake_deadline_is_reported_and_enforced() {
    let mut c = HandshakeConfig::new("net");
    c.timeout = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut b = Handshake::responder(Arc::new(c), key(), t0);
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(b.handle_timeout(t0 + Duration::from_secs(9)), Ok(()));
    assert_eq!(
        b.handle_timeout(t0 + Duration::from_secs(10)),
        Err(HandshakeError::Timeout)
    );
    assert_eq!(b.poll_timeout(), None);
    assert!(b.handle_input(b"x", &SystemRandom::new()).is_err());
}

#[test]
fn oversized_or_garbage_messages_are_refused_before_allocation() {
    let rng = SystemRandom::new();
    let mut b = Handshake::responder(config("net"), key(), Instant::now());
    // Varint 0xffff_ffff: refused on the prefix alone.
    let err = b
        .handle_input(&[0xff, 0xff, 0xff, 0xff, 0x0f], &rng)
        .unwrap_err();
    assert!(matches!(err, HandshakeError::MessageTooLarge { .. }));
    let mut b = Handshake::responder(config("net"), key(), Instant::now());
    let request = b"GET /index.html HTTP/1.1\r\nHost: example.org\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n";
    let err = b.handle_input(request, &rng).unwrap_err();
    assert!(matches!(
        err,
        HandshakeError::Malformed(_) | HandshakeError::MessageTooLarge { .. }
    ));
}
