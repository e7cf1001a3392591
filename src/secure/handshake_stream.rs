//! The handshake over a byte stream: splits length-delimited messages, feeds them to
//! the typestate handshake and tracks the deadline. Reads no clock and no socket.

use std::sync::Arc;
use std::time::Instant;

use ring::rand::SecureRandom;

use crate::error::HandshakeError;
use crate::identity::{Keypair, PeerId};
use crate::secure::handshake::{
    reject_reply, Established, HandshakeConfig, InitiatorAwaitResponse, ResponderAwaitFinish,
    ResponderAwaitHello, MAX_HANDSHAKE_MSG,
};

/// Longest varint length prefix of a handshake message.
const MAX_PREFIX_LEN: usize = 3;

enum Stage {
    InitiatorAwaitResponse(InitiatorAwaitResponse),
    ResponderAwaitHello(ResponderAwaitHello),
    ResponderAwaitFinish(ResponderAwaitFinish),
    Done,
    Failed(HandshakeError),
}

/// One side of a handshake on a byte stream.
///
/// Feed received bytes to [`Handshake::handle_input`], send what
/// [`Handshake::poll_transmit`] returns, wake at [`Handshake::poll_timeout`] and call
/// [`Handshake::handle_timeout`]. When [`Handshake::take_established`] returns the
/// session, bytes not consumed by `handle_input` belong to it.
pub struct Handshake {
    stage: Stage,
    config: Arc<HandshakeConfig>,
    message: Vec<u8>,
    out: Vec<u8>,
    deadline: Instant,
    established: Option<Established>,
}

impl Handshake {
    /// Starts the dialing side; `expected` is the peer we meant to reach, if known.
    pub fn initiator(
        config: Arc<HandshakeConfig>,
        keypair: Arc<Keypair>,
        expected: Option<PeerId>,
        now: Instant,
        rng: &dyn SecureRandom,
    ) -> Result<Self, HandshakeError> {
        let deadline = now + config.timeout;
        let (state, hello) = InitiatorAwaitResponse::start(config.clone(), keypair, expected, rng)?;
        Ok(Handshake {
            stage: Stage::InitiatorAwaitResponse(state),
            config,
            message: Vec::new(),
            out: hello,
            deadline,
            established: None,
        })
    }

    /// Starts the accepting side.
    pub fn responder(config: Arc<HandshakeConfig>, keypair: Arc<Keypair>, now: Instant) -> Self {
        Handshake {
            stage: Stage::ResponderAwaitHello(ResponderAwaitHello::new(config.clone(), keypair)),
            deadline: now + config.timeout,
            config,
            message: Vec::new(),
            out: Vec::new(),
            established: None,
        }
    }

    /// Takes received bytes; returns how many belong to the handshake. Stops at the end
    /// of the last handshake message, so the rest of `data` is session data.
    pub fn handle_input(
        &mut self,
        data: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<usize, HandshakeError> {
        let mut consumed = 0;
        while consumed < data.len() {
            match &self.stage {
                Stage::Failed(err) => return Err(err.clone()),
                Stage::Done => break,
                _ => {}
            }
            consumed += match self.take_message_bytes(&data[consumed..]) {
                Ok(n) => n,
                Err(err) => return Err(self.fail(err)),
            };
            if let Some(body_start) = self.complete_message() {
                let body = std::mem::take(&mut self.message);
                if let Err(err) = self.dispatch(&body[body_start..], rng) {
                    return Err(self.fail(err));
                }
            }
        }
        Ok(consumed)
    }

    /// The stream ended: an error unless the handshake already finished.
    pub fn handle_eof(&mut self) -> Result<(), HandshakeError> {
        match self.stage {
            Stage::Done => Ok(()),
            Stage::Failed(ref err) => Err(err.clone()),
            _ => Err(self.fail(HandshakeError::Closed)),
        }
    }

    /// Bytes to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// When [`Handshake::handle_timeout`] must be called; `None` once finished or failed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.stage {
            Stage::Done | Stage::Failed(_) => None,
            _ => Some(self.deadline),
        }
    }

    /// Fails the handshake if `now` is past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(self.fail(HandshakeError::Timeout)),
            _ => Ok(()),
        }
    }

    /// The session, once, after the handshake finished.
    pub fn take_established(&mut self) -> Option<Established> {
        self.established.take()
    }

    /// Whether the handshake finished successfully.
    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    fn fail(&mut self, err: HandshakeError) -> HandshakeError {
        self.stage = Stage::Failed(err.clone());
        self.message = Vec::new();
        err
    }

    /// Moves bytes of the current message from `data` into `self.message`, never past
    /// its end and never past the size limit.
    fn take_message_bytes(&mut self, data: &[u8]) -> Result<usize, HandshakeError> {
        let mut taken = 0;
        while taken < data.len() {
            match parse_prefix(&self.message)? {
                None => {
                    self.message.push(data[taken]);
                    taken += 1;
                }
                Some((prefix_len, body_len)) => {
                    let missing = prefix_len + body_len - self.message.len();
                    let n = missing.min(data.len() - taken);
                    self.message.extend_from_slice(&data[taken..taken + n]);
                    taken += n;
                    break;
                }
            }
        }
        // A prefix completed by the last byte pushed is checked here.
        parse_prefix(&self.message)?;
        Ok(taken)
    }

    /// The offset of the body if `self.message` holds a whole message.
    fn complete_message(&self) -> Option<usize> {
        match parse_prefix(&self.message) {
            Ok(Some((prefix, len))) if self.message.len() == prefix + len => Some(prefix),
            _ => None,
        }
    }

    fn dispatch(&mut self, body: &[u8], rng: &dyn SecureRandom) -> Result<(), HandshakeError> {
        match std::mem::replace(&mut self.stage, Stage::Failed(HandshakeError::Poisoned)) {
            Stage::InitiatorAwaitResponse(state) => {
                let (established, finish) = state.handle_response(body)?;
                self.out.extend_from_slice(&finish);
                self.finish(established);
            }
            Stage::ResponderAwaitHello(state) => match state.handle_hello(body, rng) {
                Ok((next, reply)) => {
                    self.out.extend_from_slice(&reply);
                    self.stage = Stage::ResponderAwaitFinish(next);
                }
                Err(err) => {
                    if let Some(reject) = reject_reply(&err, &self.config) {
                        self.out.extend_from_slice(&reject);
                    }
                    return Err(err);
                }
            },
            Stage::ResponderAwaitFinish(state) => {
                let established = state.handle_finish(body)?;
                self.finish(established);
            }
            Stage::Done | Stage::Failed(_) => return Err(HandshakeError::Poisoned),
        }
        Ok(())
    }

    fn finish(&mut self, established: Established) {
        self.established = Some(established);
        self.stage = Stage::Done;
    }
}

/// Parses a varint length prefix: `None` while incomplete, `(prefix_len, body_len)` once
/// complete; a length over the limit is refused before anything is allocated for it.
fn parse_prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, HandshakeError> {
    let mut len: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_PREFIX_LEN).enumerate() {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if len > MAX_HANDSHAKE_MSG as u64 {
                return Err(HandshakeError::MessageTooLarge {
                    len,
                    max: MAX_HANDSHAKE_MSG,
                });
            }
            return Ok(Some((i + 1, len as usize)));
        }
    }
    if buf.len() >= MAX_PREFIX_LEN {
        // Three continuation bytes already mean at least 2^21 > MAX_HANDSHAKE_MSG.
        return Err(HandshakeError::MessageTooLarge {
            len,
            max: MAX_HANDSHAKE_MSG,
        });
    }
    Ok(None)
}
