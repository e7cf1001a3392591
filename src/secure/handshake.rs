//! The three-message authenticated key exchange, one type per expected message.
//!
//! ```text
//! initiator                                   responder
//!   InitHello{version, network, e_i, ciphers}  ─►
//!                     ◄─  RespHello{version, network, e_r, cipher, seal_r(Auth_r)}
//!   InitFinish{seal_i(Auth_i)} [+ early frames] ─►
//! ```
//!
//! Both hellos go into a transcript hash; the handshake keys come from HKDF over the
//! X25519 secret salted with it. Each `Auth` carries the Ed25519 key, the node info and
//! a signature over a role label and the transcript so far. Traffic keys come from the
//! final transcript, so they depend on ephemeral keys only (forward secrecy). Byte-level
//! details: `wire/PROTOCOL.md`.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::SecureRandom;

use crate::error::{HandshakeError, RejectReason};
use crate::identity::{self, Keypair, PeerId, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::secure::cipher::{hkdf_extract_expand, CipherSuite, DirectionKey, KEY_LEN, TAG_LEN};
use crate::secure::frame::{FrameOpener, FrameSealer, DEFAULT_MAX_PLAINTEXT, MAX_PLAINTEXT_LIMIT};
use crate::secure::node_info::NodeInfo;
use crate::secure::transcript::Transcript;
use crate::wire;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest handshake message body accepted.
pub const MAX_HANDSHAKE_MSG: usize = 4096;
/// Longest network id.
pub const MAX_NETWORK_ID_LEN: usize = 64;
/// Default time a handshake may take.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const X25519_LEN: usize = 32;
const MAX_CIPHERS: usize = 8;

pub(crate) const LABEL_RESPONDER_SIG: &[u8] = b"meshwire/v1 responder signature";
pub(crate) const LABEL_INITIATOR_SIG: &[u8] = b"meshwire/v1 initiator signature";
const LABEL_HS_I2R: &[u8] = b"meshwire hs i2r";
const LABEL_HS_R2I: &[u8] = b"meshwire hs r2i";
const LABEL_MASTER: &[u8] = b"meshwire master";
const LABEL_AP_I2R: &[u8] = b"meshwire ap i2r";
const LABEL_AP_R2I: &[u8] = b"meshwire ap r2i";

/// What both sides of a handshake need to know about this node.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Nodes of different networks refuse each other.
    pub network_id: String,
    /// Ciphers we accept, most preferred first.
    pub ciphers: Vec<CipherSuite>,
    /// What we tell peers about ourselves.
    pub node_info: NodeInfo,
    /// Largest plaintext of a sealed frame we send and accept.
    pub max_frame_plaintext: usize,
    /// Time a handshake may take before it is dropped.
    pub timeout: Duration,
}

impl HandshakeConfig {
    /// A config for `network_id` with the defaults.
    pub fn new(network_id: impl Into<String>) -> Self {
        HandshakeConfig {
            network_id: network_id.into(),
            ciphers: CipherSuite::default_preference(),
            node_info: NodeInfo {
                version: concat!("meshwire/", env!("CARGO_PKG_VERSION")).to_string(),
                ..NodeInfo::default()
            },
            max_frame_plaintext: DEFAULT_MAX_PLAINTEXT,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Checks the config against the limits a peer will apply to it.
    pub fn validate(&self) -> Result<(), HandshakeError> {
        if self.network_id.len() > MAX_NETWORK_ID_LEN {
            return Err(HandshakeError::Malformed("network id too long"));
        }
        if self.ciphers.is_empty() || self.ciphers.len() > MAX_CIPHERS {
            return Err(HandshakeError::NoCommonCipher);
        }
        if !(1..=MAX_PLAINTEXT_LIMIT).contains(&self.max_frame_plaintext) {
            return Err(HandshakeError::Malformed(
                "max frame plaintext out of range",
            ));
        }
        self.node_info.validate()
    }
}

/// The result of a finished handshake: who the peer is and the session's two halves.
pub struct Established {
    /// The authenticated remote id.
    pub remote: PeerId,
    /// What the remote said about itself.
    pub remote_info: NodeInfo,
    /// The negotiated cipher.
    pub cipher: CipherSuite,
    /// Seals frames we send.
    pub sealer: FrameSealer,
    /// Opens frames we receive.
    pub opener: FrameOpener,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("remote", &self.remote)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// Keys both sides derive once the hellos are exchanged.
struct HandshakeKeys {
    i2r: [u8; KEY_LEN],
    r2i: [u8; KEY_LEN],
    master: [u8; KEY_LEN],
}

impl HandshakeKeys {
    fn derive(transcript: &Transcript, shared: &[u8]) -> Self {
        let salt = transcript.hash();
        HandshakeKeys {
            i2r: hkdf_extract_expand(&salt, shared, &[LABEL_HS_I2R]),
            r2i: hkdf_extract_expand(&salt, shared, &[LABEL_HS_R2I]),
            master: hkdf_extract_expand(&salt, shared, &[LABEL_MASTER]),
        }
    }

    /// Traffic keys `(i2r, r2i)` from the final transcript.
    fn traffic(&self, transcript: &Transcript) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
        let salt = transcript.hash();
        (
            hkdf_extract_expand(&salt, &self.master, &[LABEL_AP_I2R]),
            hkdf_extract_expand(&salt, &self.master, &[LABEL_AP_R2I]),
        )
    }
}

// ---------------------------------------------------------------- initiator

/// The initiator after sending `InitHello`, waiting for the responder's message.
pub struct InitiatorAwaitResponse {
    config: Arc<HandshakeConfig>,
    keypair: Arc<Keypair>,
    expected: Option<PeerId>,
    ephemeral: EphemeralPrivateKey,
    transcript: Transcript,
}

impl InitiatorAwaitResponse {
    /// Starts a handshake; returns the state and the length-delimited `InitHello` to send.
    pub fn start(
        config: Arc<HandshakeConfig>,
        keypair: Arc<Keypair>,
        expected: Option<PeerId>,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let (ephemeral, public) = new_ephemeral(rng)?;
        let hello = wire::InitHello {
            version: PROTOCOL_VERSION,
            network_id: config.network_id.clone(),
            ephemeral: public.to_vec(),
            ciphers: config.ciphers.iter().map(|c| c.to_wire() as i32).collect(),
        };
        let mut transcript = Transcript::new();
        absorb_init_hello(&mut transcript, &hello);
        let state = InitiatorAwaitResponse {
            config,
            keypair,
            expected,
            ephemeral,
            transcript,
        };
        Ok((state, hello.encode_length_delimited_to_vec()))
    }

    /// Handles the responder's message body; on success returns the session and the
    /// length-delimited `InitFinish` to send (frames sealed with the session may follow it).
    pub fn handle_response(self, body: &[u8]) -> Result<(Established, Vec<u8>), HandshakeError> {
        self.handle_response_with(body, |t, k, info| {
            sign_auth(t, k, info, LABEL_INITIATOR_SIG)
        })
    }

    /// [`Self::handle_response`] with the step that builds our `Auth` given, so tests
    /// can play a dishonest initiator.
    pub(crate) fn handle_response_with(
        self,
        body: &[u8],
        make_auth: impl FnOnce(&mut Transcript, &Keypair, &NodeInfo) -> wire::Auth,
    ) -> Result<(Established, Vec<u8>), HandshakeError> {
        let msg = wire::ResponderMessage::decode(body)
            .map_err(|_| HandshakeError::Malformed("responder message"))?;
        let hello = match msg.msg {
            Some(wire::responder_message::Msg::Hello(hello)) => hello,
            Some(wire::responder_message::Msg::Reject(reject)) => {
                return Err(rejected(reject));
            }
            None => return Err(HandshakeError::Malformed("empty responder message")),
        };
        let InitiatorAwaitResponse {
            config,
            keypair,
            expected,
            ephemeral,
            mut transcript,
        } = self;
        check_prologue(&config, hello.version, &hello.network_id)?;
        let cipher = CipherSuite::from_wire(hello.cipher)
            .filter(|c| config.ciphers.contains(c))
            .ok_or(HandshakeError::NoCommonCipher)?;
        absorb_resp_hello(&mut transcript, &hello);
        let keys = HandshakeKeys::derive(&transcript, &agree(ephemeral, &hello.ephemeral)?);

        // The responder's identity.
        let auth = open_auth(cipher, keys.r2i, hello.sealed_auth)?;
        let (remote, remote_info) = verify_auth(&mut transcript, &auth, LABEL_RESPONDER_SIG)?;
        if remote == keypair.peer_id() {
            return Err(HandshakeError::SelfConnection);
        }
        if let Some(expected) = expected {
            if expected != remote {
                return Err(HandshakeError::UnexpectedPeer {
                    expected,
                    got: remote,
                });
            }
        }

        // Our identity, sealed.
        let auth = make_auth(&mut transcript, &keypair, &config.node_info);
        let finish = wire::InitFinish {
            sealed_auth: seal_auth(cipher, keys.i2r, &auth)?,
        };
        let (i2r, r2i) = keys.traffic(&transcript);
        let max = config.max_frame_plaintext;
        let established = Established {
            remote,
            remote_info,
            cipher,
            sealer: FrameSealer::new(DirectionKey::new(cipher, i2r), max),
            opener: FrameOpener::new(DirectionKey::new(cipher, r2i), max),
        };
        Ok((established, finish.encode_length_delimited_to_vec()))
    }
}

// ---------------------------------------------------------------- responder

/// The responder before the initiator's hello.
pub struct ResponderAwaitHello {
    config: Arc<HandshakeConfig>,
    keypair: Arc<Keypair>,
}

/// The responder after sending `RespHello`, waiting for `InitFinish`.
pub struct ResponderAwaitFinish {
    config: Arc<HandshakeConfig>,
    keypair: Arc<Keypair>,
    cipher: CipherSuite,
    keys: HandshakeKeys,
    transcript: Transcript,
}

impl ResponderAwaitHello {
    /// A responder for one accepted connection.
    pub fn new(config: Arc<HandshakeConfig>, keypair: Arc<Keypair>) -> Self {
        ResponderAwaitHello { config, keypair }
    }

    /// Handles an `InitHello` body; returns the next state and the length-delimited
    /// `RespHello` to send. On a version, network or cipher mismatch, [`reject_reply`]
    /// gives the message that tells the initiator why.
    pub fn handle_hello(
        self,
        body: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<(ResponderAwaitFinish, Vec<u8>), HandshakeError> {
        self.handle_hello_with(body, rng, |t, k, info| {
            sign_auth(t, k, info, LABEL_RESPONDER_SIG)
        })
    }

    /// [`Self::handle_hello`] with the step that builds our `Auth` given, so tests can
    /// play a dishonest responder.
    pub(crate) fn handle_hello_with(
        self,
        body: &[u8],
        rng: &dyn SecureRandom,
        make_auth: impl FnOnce(&mut Transcript, &Keypair, &NodeInfo) -> wire::Auth,
    ) -> Result<(ResponderAwaitFinish, Vec<u8>), HandshakeError> {
        let hello =
            wire::InitHello::decode(body).map_err(|_| HandshakeError::Malformed("init hello"))?;
        let ResponderAwaitHello { config, keypair } = self;
        check_prologue(&config, hello.version, &hello.network_id)?;
        if hello.ciphers.len() > MAX_CIPHERS {
            return Err(HandshakeError::Malformed("too many ciphers offered"));
        }
        // Cheap checks before any key generation, agreement or signature.
        if hello.ephemeral.len() != X25519_LEN {
            return Err(HandshakeError::BadEphemeralKey);
        }
        // The initiator's preference wins among the ciphers we accept.
        let cipher = hello
            .ciphers
            .iter()
            .filter_map(|&c| CipherSuite::from_wire(c))
            .find(|c| config.ciphers.contains(c))
            .ok_or(HandshakeError::NoCommonCipher)?;

        let mut transcript = Transcript::new();
        absorb_init_hello(&mut transcript, &hello);
        let (ephemeral, public) = new_ephemeral(rng)?;
        let mut reply = wire::RespHello {
            version: PROTOCOL_VERSION,
            network_id: config.network_id.clone(),
            ephemeral: public.to_vec(),
            cipher: cipher.to_wire() as i32,
            sealed_auth: Vec::new(),
        };
        absorb_resp_hello(&mut transcript, &reply);
        let keys = HandshakeKeys::derive(&transcript, &agree(ephemeral, &hello.ephemeral)?);

        let auth = make_auth(&mut transcript, &keypair, &config.node_info);
        reply.sealed_auth = seal_auth(cipher, keys.r2i, &auth)?;
        let msg = wire::ResponderMessage {
            msg: Some(wire::responder_message::Msg::Hello(reply)),
        };
        let state = ResponderAwaitFinish {
            config,
            keypair,
            cipher,
            keys,
            transcript,
        };
        Ok((state, msg.encode_length_delimited_to_vec()))
    }
}

impl ResponderAwaitFinish {
    /// Handles the `InitFinish` body; on success the session is up.
    pub fn handle_finish(self, body: &[u8]) -> Result<Established, HandshakeError> {
        let finish =
            wire::InitFinish::decode(body).map_err(|_| HandshakeError::Malformed("init finish"))?;
        let ResponderAwaitFinish {
            config,
            keypair,
            cipher,
            keys,
            mut transcript,
        } = self;
        let auth = open_auth(cipher, keys.i2r, finish.sealed_auth)?;
        let (remote, remote_info) = verify_auth(&mut transcript, &auth, LABEL_INITIATOR_SIG)?;
        if remote == keypair.peer_id() {
            return Err(HandshakeError::SelfConnection);
        }
        let (i2r, r2i) = keys.traffic(&transcript);
        let max = config.max_frame_plaintext;
        Ok(Established {
            remote,
            remote_info,
            cipher,
            sealer: FrameSealer::new(DirectionKey::new(cipher, r2i), max),
            opener: FrameOpener::new(DirectionKey::new(cipher, i2r), max),
        })
    }
}

/// The length-delimited `HandshakeReject` a responder sends for errors the initiator
/// should hear about; `None` for errors that deserve silence.
pub fn reject_reply(err: &HandshakeError, config: &HandshakeConfig) -> Option<Vec<u8>> {
    let reason = match err {
        HandshakeError::VersionMismatch { .. } => wire::RejectReason::Version,
        HandshakeError::NetworkMismatch { .. } => wire::RejectReason::Network,
        HandshakeError::NoCommonCipher => wire::RejectReason::NoCommonCipher,
        _ => return None,
    };
    let msg = wire::ResponderMessage {
        msg: Some(wire::responder_message::Msg::Reject(
            wire::HandshakeReject {
                reason: reason as i32,
                version: PROTOCOL_VERSION,
                network_id: config.network_id.clone(),
            },
        )),
    };
    Some(msg.encode_length_delimited_to_vec())
}

// ---------------------------------------------------------------- shared steps

fn check_prologue(
    config: &HandshakeConfig,
    version: u32,
    network_id: &str,
) -> Result<(), HandshakeError> {
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    if network_id.len() > MAX_NETWORK_ID_LEN {
        return Err(HandshakeError::Malformed("network id too long"));
    }
    if network_id != config.network_id {
        return Err(HandshakeError::NetworkMismatch {
            ours: config.network_id.clone(),
            theirs: network_id.to_string(),
        });
    }
    Ok(())
}

fn rejected(reject: wire::HandshakeReject) -> HandshakeError {
    let reason = match wire::RejectReason::try_from(reject.reason) {
        Ok(wire::RejectReason::Version) => RejectReason::Version,
        Ok(wire::RejectReason::Network) => RejectReason::Network,
        Ok(wire::RejectReason::NoCommonCipher) => RejectReason::NoCommonCipher,
        _ => RejectReason::Other,
    };
    let mut network_id = reject.network_id;
    if network_id.len() > MAX_NETWORK_ID_LEN {
        network_id.clear();
    }
    HandshakeError::Rejected {
        reason,
        version: reject.version,
        network_id,
    }
}

fn absorb_init_hello(t: &mut Transcript, hello: &wire::InitHello) {
    t.absorb_u32(hello.version);
    t.absorb(hello.network_id.as_bytes());
    t.absorb(&hello.ephemeral);
    let ciphers: Vec<u8> = hello
        .ciphers
        .iter()
        .flat_map(|c| (*c as u32).to_be_bytes())
        .collect();
    t.absorb(&ciphers);
}

fn absorb_resp_hello(t: &mut Transcript, hello: &wire::RespHello) {
    t.absorb_u32(hello.version);
    t.absorb(hello.network_id.as_bytes());
    t.absorb(&hello.ephemeral);
    t.absorb_u32(hello.cipher as u32);
}

fn new_ephemeral(
    rng: &dyn SecureRandom,
) -> Result<(EphemeralPrivateKey, [u8; X25519_LEN]), HandshakeError> {
    let private = EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| HandshakeError::Rng)?;
    let public = private
        .compute_public_key()
        .map_err(|_| HandshakeError::Rng)?;
    let mut out = [0u8; X25519_LEN];
    out.copy_from_slice(public.as_ref());
    Ok((private, out))
}

/// X25519 with the peer's key; refuses malformed keys and all-zero (low-order) results.
fn agree(private: EphemeralPrivateKey, peer: &[u8]) -> Result<[u8; 32], HandshakeError> {
    if peer.len() != X25519_LEN {
        return Err(HandshakeError::BadEphemeralKey);
    }
    let shared = agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |s| {
        let mut out = [0u8; 32];
        out.copy_from_slice(s);
        out
    })
    .map_err(|_| HandshakeError::BadEphemeralKey)?;
    // ring refuses an all-zero secret too; checking here keeps the property ours.
    if shared.iter().all(|&b| b == 0) {
        return Err(HandshakeError::BadEphemeralKey);
    }
    Ok(shared)
}

/// Builds our `Auth`: absorbs key and node info, signs label + transcript hash,
/// absorbs the signature.
pub(crate) fn sign_auth(
    t: &mut Transcript,
    keypair: &Keypair,
    info: &NodeInfo,
    label: &[u8],
) -> wire::Auth {
    let node_info = info.encode();
    t.absorb(keypair.public_key());
    t.absorb(&node_info);
    let signature = keypair.sign(&signed_message(label, &t.hash()));
    t.absorb(&signature);
    wire::Auth {
        public_key: keypair.public_key().to_vec(),
        signature: signature.to_vec(),
        node_info,
    }
}

/// Checks the peer's `Auth` the same way [`sign_auth`] built it.
fn verify_auth(
    t: &mut Transcript,
    auth: &wire::Auth,
    label: &[u8],
) -> Result<(PeerId, NodeInfo), HandshakeError> {
    if auth.public_key.len() != PUBLIC_KEY_LEN {
        return Err(HandshakeError::BadPublicKey);
    }
    if auth.signature.len() != SIGNATURE_LEN {
        return Err(HandshakeError::BadSignature);
    }
    t.absorb(&auth.public_key);
    t.absorb(&auth.node_info);
    if !identity::verify(
        &auth.public_key,
        &signed_message(label, &t.hash()),
        &auth.signature,
    ) {
        return Err(HandshakeError::BadSignature);
    }
    t.absorb(&auth.signature);
    let info = NodeInfo::decode(&auth.node_info)?;
    Ok((PeerId::from_public_key(&auth.public_key), info))
}

pub(crate) fn signed_message(label: &[u8], transcript_hash: &[u8; 32]) -> Vec<u8> {
    [label, transcript_hash.as_slice()].concat()
}

/// Seals `auth` under a handshake key; each handshake key seals exactly one message.
fn seal_auth(
    cipher: CipherSuite,
    key: [u8; KEY_LEN],
    auth: &wire::Auth,
) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = auth.encode_to_vec();
    let tag = DirectionKey::new(cipher, key)
        .seal(&[], &mut buf)
        .map_err(|_| HandshakeError::Malformed("auth too large to seal"))?;
    buf.extend_from_slice(&tag);
    Ok(buf)
}

fn open_auth(
    cipher: CipherSuite,
    key: [u8; KEY_LEN],
    mut sealed: Vec<u8>,
) -> Result<wire::Auth, HandshakeError> {
    if sealed.len() < TAG_LEN {
        return Err(HandshakeError::DecryptFailed);
    }
    let len = DirectionKey::new(cipher, key)
        .open(&[], &mut sealed)
        .map_err(|_| HandshakeError::DecryptFailed)?;
    wire::Auth::decode(&sealed[..len]).map_err(|_| HandshakeError::Malformed("auth"))
}
