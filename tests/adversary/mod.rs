//! A hostile peer built from the library's own sans-IO pieces: it completes a real
//! handshake over loopback, then writes whatever sealed frames, packets and RPCs a
//! test tells it to, and reads (or refuses to read) what comes back.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire::identity::Keypair;
use meshwire::mux::packet::{self, PacketRef};
use meshwire::secure::{FrameOpener, FrameSealer, Handshake, HandshakeConfig};
use meshwire::wire::CloseReason;
use meshwire::PeerId;
use socket2::{Domain, Protocol, Socket, Type};

/// The gossip and DHT channels, as `wire/PROTOCOL.md` gives them.
pub const GOSSIP: u32 = 0xffff_0002;
pub const KAD: u32 = 0xffff_0001;

pub struct Adversary {
    pub stream: TcpStream,
    pub key: Arc<Keypair>,
    sealer: FrameSealer,
    opener: FrameOpener,
    pub remote: PeerId,
}

/// What the node said back.
#[derive(Debug, Default)]
pub struct Heard {
    /// Whole fragments seen, per channel: (channel, eof, data).
    pub msgs: Vec<(u32, bool, Vec<u8>)>,
    pub pings: Vec<u64>,
    pub close: Option<i32>,
    /// The node ended the TCP stream.
    pub eof: bool,
}

/// A connected socket from `local` (its own loopback address) with a small receive
/// buffer, so not reading fills the window quickly.
pub fn socket_from(local: IpAddr, to: SocketAddr, recv_buffer: Option<usize>) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    if let Some(n) = recv_buffer {
        s.set_recv_buffer_size(n).expect("rcvbuf");
    }
    s.bind(&SocketAddr::new(local, 0).into()).expect("bind");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: TcpStream = s.into();
    stream.set_nodelay(true).ok();
    stream
}

impl Adversary {
    /// Dials `to` from `local` and completes the handshake as `network`, announcing
    /// `channels` (and lookup-only, if asked).
    pub fn connect(
        network: &str,
        local: IpAddr,
        to: SocketAddr,
        channels: &[u32],
        lookup_only: bool,
        recv_buffer: Option<usize>,
    ) -> Adversary {
        let rng = ring::rand::SystemRandom::new();
        let mut config = HandshakeConfig::new(network);
        config.node_info.channels = channels.to_vec();
        config.node_info.lookup_only = lookup_only;
        let key = Arc::new(Keypair::generate().expect("key"));
        let mut hs =
            Handshake::initiator(Arc::new(config), key.clone(), None, Instant::now(), &rng)
                .expect("initiator");
        let mut stream = socket_from(local, to, recv_buffer);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut early = Vec::new();
        while !hs.is_done() {
            if let Some(out) = hs.poll_transmit() {
                stream.write_all(&out).expect("write handshake");
            }
            if hs.is_done() {
                break;
            }
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).expect("read handshake");
            assert!(n > 0, "node closed during the handshake");
            let used = hs.handle_input(&buf[..n], &rng).expect("handshake");
            early.extend_from_slice(&buf[used..n]);
        }
        if let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).expect("write finish");
        }
        let est = hs.take_established().expect("established");
        let mut adv = Adversary {
            stream,
            key,
            sealer: est.sealer,
            opener: est.opener,
            remote: est.remote,
        };
        adv.opener.feed(&early);
        // Credit on every channel we announced, once and for all.
        let mut credit = Vec::new();
        for &c in channels {
            packet::put_credit(&mut credit, c, 1 << 30);
        }
        adv.send_packets(&credit).expect("credit");
        adv
    }

    /// Tries a handshake; `None` if the node drops the connection before answering.
    pub fn connect_or_refused(network: &str, local: IpAddr, to: SocketAddr) -> Option<()> {
        let rng = ring::rand::SystemRandom::new();
        let key = Arc::new(Keypair::generate().expect("key"));
        let config = Arc::new(HandshakeConfig::new(network));
        let mut hs = Handshake::initiator(config, key, None, Instant::now(), &rng).ok()?;
        let mut stream = socket_from(local, to, None);
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(&hs.poll_transmit()?).ok()?;
        let mut buf = [0u8; 8192];
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => Some(()),
            _ => None,
        }
    }

    /// Seals `packets` (already length-delimited `Packet`s) into frames and writes them.
    pub fn send_packets(&mut self, packets: &[u8]) -> std::io::Result<()> {
        let mut wire = Vec::new();
        self.sealer.seal(&mut wire, packets).expect("seal");
        self.stream.write_all(&wire)
    }

    /// Sends `data` as one message on `channel`, in 16 KiB fragments.
    pub fn send_message(&mut self, channel: u32, data: &[u8]) -> std::io::Result<()> {
        let mut offset = 0;
        loop {
            let end = (offset + 16 * 1024).min(data.len());
            let eof = end == data.len();
            let total = if offset == 0 && !eof {
                data.len() as u64
            } else {
                0
            };
            let mut p = Vec::new();
            packet::put_msg(
                &mut p,
                channel,
                eof,
                &data[offset..end],
                total,
                meshwire::mux::Tag::Plain,
            );
            self.send_packets(&p)?;
            if eof {
                return Ok(());
            }
            offset = end;
        }
    }

    /// The first fragment of a message that never completes.
    pub fn send_first_fragment(&mut self, channel: u32, prefix: &[u8], total: u64) {
        let mut p = Vec::new();
        packet::put_msg(
            &mut p,
            channel,
            false,
            prefix,
            total,
            meshwire::mux::Tag::Plain,
        );
        self.send_packets(&p).expect("first fragment");
    }

    /// Reads for up to `wait`, answering pings (so the node keeps us) unless `mute`.
    pub fn listen(&mut self, wait: Duration, mute: bool) -> Heard {
        let mut heard = Heard::default();
        let deadline = Instant::now() + wait;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        while Instant::now() < deadline && heard.close.is_none() && !heard.eof {
            let mut buf = vec![0u8; 64 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => heard.eof = true,
                Ok(n) => {
                    self.opener.feed(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => heard.eof = true,
            }
            let mut pongs = Vec::new();
            while let Ok(Some(frame)) = self.opener.next_frame() {
                for p in packet::packets(frame) {
                    match p {
                        Ok(PacketRef::Ping(n)) => {
                            heard.pings.push(n);
                            pongs.push(n);
                        }
                        Ok(PacketRef::Msg {
                            channel, eof, data, ..
                        }) => heard.msgs.push((channel, eof, data.to_vec())),
                        Ok(PacketRef::Close(r)) => heard.close = Some(r),
                        _ => {}
                    }
                }
            }
            if !mute {
                for n in pongs {
                    let mut p = Vec::new();
                    packet::put_pong(&mut p, n);
                    let _ = self.send_packets(&p);
                }
            }
        }
        heard
    }

    /// Whether the node closed on us within `wait` (a Close packet or EOF).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let h = self.listen(wait, false);
        h.close.is_some() || h.eof
    }
}

/// Whether a close reason says "banned".
pub fn is_banned(reason: Option<i32>) -> bool {
    reason == Some(CloseReason::Banned as i32)
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
