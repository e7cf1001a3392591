//! An idle node with half-closed and reset sockets uses no CPU. In a test binary
//! of its own: it measures the CPU of the whole process, which other tests running
//! beside it would add to.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwire::{ChannelConfig, Keypair};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn half_closed_and_reset_sockets_leave_no_spinning_loop() {
    use std::io::Write;
    let node = start(260, &[ChannelConfig::new(1)], None);
    let target = node.listen_addrs()[0];
    // Half-closed in the middle of a handshake, kept open.
    let mut half = raw_tcp(target, ip("127.64.0.1")).unwrap();
    half.write_all(&[0x20, 0x08]).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    // Half-closed after a full handshake.
    let key = Arc::new(Keypair::generate().unwrap());
    let raw = raw_handshake(target, ip("127.64.0.2"), key, vec![1]).unwrap();
    raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
    // Reset.
    let reset = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    reset
        .bind(&std::net::SocketAddr::from(([127, 64, 0, 3], 0)).into())
        .unwrap();
    reset.connect(&target.into()).unwrap();
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset);
    std::thread::sleep(Duration::from_millis(200));
    let before = process_cpu_secs();
    std::thread::sleep(Duration::from_secs(2));
    let used = process_cpu_secs() - before;
    assert!(used < 0.2, "{used} CPU seconds in 2 idle seconds");
    // The node still serves others.
    let other = start(261, &[ChannelConfig::new(1)], None);
    other.dial(target, Some(node.peer_id())).unwrap();
    connected(&other.events(), node.peer_id());
    drop((half, raw));
    node.shutdown();
    other.shutdown();
}
