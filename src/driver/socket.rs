//! Sockets through socket2: listeners, non-blocking dials and per-connection options.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::SocketOptions;

/// A non-blocking listener with `SO_REUSEADDR` and the configured backlog.
pub(crate) fn listen(addr: SocketAddr, opts: &SocketOptions) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Starts a non-blocking connect to `addr`, from `local` if given (so a node with
/// its own address dials from it).
pub(crate) fn connect(
    addr: SocketAddr,
    local: Option<IpAddr>,
    opts: &SocketOptions,
) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    apply_buffers(&SockRef::from(&socket), opts)?;
    if let Some(ip) = local.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Options for an accepted connection.
pub(crate) fn configure_accepted(
    stream: &mio::net::TcpStream,
    opts: &SocketOptions,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    apply_buffers(&SockRef::from(stream), opts)
}

fn apply_buffers(sock: &SockRef<'_>, opts: &SocketOptions) -> io::Result<()> {
    if let Some(n) = opts.send_buffer {
        sock.set_send_buffer_size(n)?;
    }
    if let Some(n) = opts.recv_buffer {
        sock.set_recv_buffer_size(n)?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(n) = opts.notsent_lowat {
        sock.set_tcp_notsent_lowat(n)?;
    }
    // A peer that vanishes or advertises a zero window forever is noticed by the
    // kernel too, not only by our keepalive and stall timers.
    if let Some(idle) = opts.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(std::time::Duration::from_secs(10));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let ka = ka.with_retries(3);
        sock.set_tcp_keepalive(&ka)?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(t) = opts.user_timeout {
        sock.set_tcp_user_timeout(Some(t))?;
    }
    Ok(())
}

/// EINPROGRESS, which a non-blocking connect returns on Linux and the BSDs alike
/// as 115 / 36; std maps neither to a stable `ErrorKind`.
fn libc_einprogress() -> i32 {
    if cfg!(target_os = "linux") {
        115
    } else {
        36
    }
}

/// `addr` as peers can dial it: an unspecified IP (`0.0.0.0`, `::`) becomes the
/// address of the interface the default route leaves by (found by connecting a UDP
/// socket, which sends nothing), or loopback when there is no route. The port stays.
pub(crate) fn dialable(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let (any, probe, loopback): (SocketAddr, SocketAddr, std::net::IpAddr) = if addr.is_ipv4() {
        (
            "0.0.0.0:0".parse().expect("literal"),
            "192.0.2.1:9".parse().expect("literal"),
            std::net::Ipv4Addr::LOCALHOST.into(),
        )
    } else {
        (
            "[::]:0".parse().expect("literal"),
            "[2001:db8::1]:9".parse().expect("literal"),
            std::net::Ipv6Addr::LOCALHOST.into(),
        )
    };
    let ip = std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(probe).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(loopback);
    SocketAddr::new(ip, addr.port())
}
