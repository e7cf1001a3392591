//! Helpers shared by the loopback integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use meshwire::{ChannelConfig, Event, NodeBuilder, NodeHandle, PeerId, Runtime};

pub const NET: &str = "meshwire-test";

/// The i-th node's own loopback address, spread over many /24s.
pub fn addr(i: usize) -> SocketAddr {
    let i = i + 1;
    SocketAddr::from(([127, 10 + (i / 250) as u8, (i % 250) as u8, 1], 0))
}

pub fn builder(i: usize, channels: &[ChannelConfig]) -> NodeBuilder {
    let mut b = NodeBuilder::new(NET)
        .listen(addr(i))
        .rng_seed(i as u64)
        .kad(None);
    for c in channels {
        b = b.channel(c.clone());
    }
    b
}

pub fn start(i: usize, channels: &[ChannelConfig], rt: Option<&Runtime>) -> NodeHandle {
    let b = builder(i, channels);
    match rt {
        Some(rt) => b.start_on(rt).expect("start node"),
        None => b.start().expect("start node"),
    }
}

/// Waits for the first event that `pick` accepts.
pub fn wait_for<T>(
    rx: &Receiver<Event>,
    timeout: Duration,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => {
                if let Some(t) = pick(ev) {
                    return t;
                }
            }
            Err(_) => panic!("timed out waiting for an event"),
        }
    }
}

pub fn connected(rx: &Receiver<Event>, peer: PeerId) {
    wait_for(rx, Duration::from_secs(10), |ev| match ev {
        Event::PeerConnected { peer: p, .. } if p == peer => Some(()),
        _ => None,
    })
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// CPU seconds (user + system) of this process so far.
pub fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A peer driven by hand from the public sans-IO pieces, for adversarial tests.
pub struct RawPeer {
    pub stream: std::net::TcpStream,
    pub session: meshwire::secure::Established,
    pub key: std::sync::Arc<meshwire::Keypair>,
}

/// A TCP connection to `target` from the local IP `from`.
pub fn raw_tcp(target: SocketAddr, from: std::net::IpAddr) -> std::io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

/// Completes a handshake with the node at `target` as `key`, announcing `channels`.
pub fn raw_handshake(
    target: SocketAddr,
    from: std::net::IpAddr,
    key: std::sync::Arc<meshwire::Keypair>,
    channels: Vec<u32>,
) -> Result<RawPeer, String> {
    use meshwire::secure::{Handshake, HandshakeConfig};
    use std::io::{Read, Write};
    let mut stream = raw_tcp(target, from).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut config = HandshakeConfig::new(NET);
    config.node_info.channels = channels;
    let rng = ring::rand::SystemRandom::new();
    let mut hs = Handshake::initiator(
        std::sync::Arc::new(config),
        key.clone(),
        None,
        Instant::now(),
        &rng,
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).map_err(|e| e.to_string())?;
        }
        if let Some(session) = hs.take_established() {
            return Ok(RawPeer {
                stream,
                session,
                key,
            });
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        hs.handle_input(&buf[..n], &rng)
            .map_err(|e| e.to_string())?;
    }
}

impl RawPeer {
    /// Seals `plaintext` as one frame and writes it.
    pub fn send_frame(&mut self, plaintext: &[u8]) {
        use std::io::Write;
        let mut out = Vec::new();
        self.session.sealer.seal(&mut out, plaintext).unwrap();
        let _ = self.stream.write_all(&out);
    }

    /// Reads until the node closes the connection; true if it did within the timeout.
    pub fn closed_by_peer(&mut self, timeout: Duration) -> bool {
        use std::io::Read;
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
        false
    }
}
