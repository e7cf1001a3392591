//! The mio loop: the only place that touches sockets and the clock.
//!
//! One loop thread serves any number of nodes. Sockets live in a slab indexed by
//! their mio token; deadlines live in a heap with lazy invalidation; commands arrive
//! on a bounded crossbeam channel and wake the loop through a `mio::Waker`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::driver::node_slot::NodeSlot;
use crate::driver::socket;
use crate::driver::{LoopCommand, WakeState};
use crate::node::core::{ConnId, Io, IoBudget};

mod timers;
use timers::Timer;

pub(crate) const WAKER: Token = Token(0);
/// Bytes read from and written to one socket before other sockets and the command
/// queue get a turn. Without a write bound, a peer that drains as fast as we seal
/// keeps the socket writable and one call sealing for milliseconds while an urgent
/// message waits in the command queue behind it; a large read batch holds back the
/// events it decoded first. (T2 loaded p99: 8.5-9.7 ms with 1 MiB reads and
/// unbounded writes, 1.4-3.6 ms with these; the queue share was the larger part.)
const IO_BUDGET: IoBudget = IoBudget {
    read: 256 * 1024,
    write: 128 * 1024,
};
/// Commands handled per loop turn before sockets get a turn.
const COMMAND_BUDGET: usize = 4096;
/// Connections accepted from one listener per loop turn, so a flood of new
/// connections cannot keep established ones from being served.
const ACCEPT_BUDGET: usize = 32;

enum Kind {
    Listener(TcpListener),
    Conn {
        stream: TcpStream,
        id: ConnId,
        /// The socket may have bytes we have not read yet.
        readable: bool,
        /// The peer closed its side or the socket failed: read until the EOF or the
        /// error, however short a read was.
        closing: bool,
        /// Our dial, its TCP connect not yet complete.
        connecting: bool,
    },
}

/// A socket as the core's byte pipe; reads stop (without a syscall) once the
/// socket said it has nothing more until the next readiness event.
struct SocketIo<'a> {
    stream: &'a mut TcpStream,
    readable: &'a mut bool,
    closing: bool,
}

impl Io for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !*self.readable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let r = self.stream.read(buf);
        match &r {
            Ok(0) => *self.readable = false,
            // A read that did not fill the buffer emptied the socket: the next byte
            // to arrive raises a new (edge-triggered) event, so asking again now
            // would only return WouldBlock, one syscall per read in two (P1 64:
            // 83k recvfrom for 42k sendto). Not once the peer closed: its FIN came
            // with an event we already consumed.
            Ok(n) if *n < buf.len() && !self.closing => *self.readable = false,
            Err(e) if e.kind() != io::ErrorKind::Interrupted => *self.readable = false,
            _ => {}
        }
        r
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
}

struct Sock {
    node: usize,
    kind: Kind,
    timer: Option<Instant>,
}

pub(crate) struct Reactor {
    poll: Poll,
    shared: Arc<WakeState>,
    commands: Receiver<LoopCommand>,
    sockets: Vec<Option<Sock>>,
    free: Vec<usize>,
    nodes: Vec<Option<NodeSlot>>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Sockets to service again this turn (budget left them readable).
    again: Vec<usize>,
    /// Listeners to accept from again (budget left connections waiting).
    accept_again: Vec<usize>,
    /// Nodes whose connections were serviced this turn: their outputs wait.
    dirty: Vec<usize>,
    stop: bool,
}

impl Reactor {
    pub(crate) fn new(poll: Poll, shared: Arc<WakeState>, commands: Receiver<LoopCommand>) -> Self {
        Reactor {
            poll,
            shared,
            commands,
            // Token 0 is the waker.
            sockets: vec![None],
            free: Vec::new(),
            nodes: Vec::new(),
            timers: BinaryHeap::new(),
            again: Vec::new(),
            accept_again: Vec::new(),
            dirty: Vec::new(),
            stop: false,
        }
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.stop {
            let now = Instant::now();
            let timeout = if self.again.is_empty() && self.accept_again.is_empty() {
                self.timers
                    .peek()
                    .map(|Reverse((t, _))| t.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            let mut work: Vec<usize> = std::mem::take(&mut self.again);
            for token in std::mem::take(&mut self.accept_again) {
                self.accept(token, now);
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    self.drain_commands();
                    continue;
                }
                let token = token.0;
                match self.sockets.get_mut(token).and_then(|s| s.as_mut()) {
                    Some(Sock {
                        kind: Kind::Listener(_),
                        ..
                    }) => self.accept(token, now),
                    Some(Sock {
                        kind:
                            Kind::Conn {
                                readable, closing, ..
                            },
                        ..
                    }) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            *readable = true;
                        }
                        if event.is_read_closed() || event.is_error() {
                            *closing = true;
                        }
                        work.push(token);
                    }
                    None => {}
                }
            }
            self.fire_timers(now, &mut work);
            // A socket both left over from the last turn and ready again is one job.
            work.sort_unstable();
            work.dedup();
            // Each connection is read at the time it is read, not at the batch's
            // start: under load a batch takes long, and what the cores stamp with
            // `now` (one-way delays, RTTs, deadlines) would be early by that much.
            for token in work {
                self.service(token, Instant::now());
            }
            // Outputs of the connections serviced: events, wakes of other connections.
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            let now = Instant::now();
            for node in dirty {
                self.after_node(node, now);
            }
        }
    }

    // ------------------------------------------------------------ commands

    fn drain_commands(&mut self) {
        self.shared.wake_pending.store(false, Ordering::Release);
        for _ in 0..COMMAND_BUDGET {
            match self.commands.try_recv() {
                // Each at its own time: a command sent while this loop runs (in
                // answer to a reply it just gave) must not start a lookup's clock
                // or a deadline before it was sent.
                Ok(cmd) => self.command(cmd, Instant::now()),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.stop = true;
                    return;
                }
            }
        }
        // More waiting: come back without sleeping.
        let _ = self.shared.waker.wake();
    }

    fn command(&mut self, cmd: LoopCommand, now: Instant) {
        match cmd {
            LoopCommand::AddNode {
                slot,
                listeners,
                ready,
            } => {
                let index = self
                    .nodes
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or_else(|| {
                        self.nodes.push(None);
                        self.nodes.len() - 1
                    });
                let mut slot = *slot;
                let mut result = Ok(index);
                for mut listener in listeners {
                    let token = self.alloc_token();
                    if let Err(e) = self.poll.registry().register(
                        &mut listener,
                        Token(token),
                        Interest::READABLE,
                    ) {
                        result = Err(e);
                        self.free.push(token);
                        continue;
                    }
                    slot.listeners.push(token);
                    self.sockets[token] = Some(Sock {
                        node: index,
                        kind: Kind::Listener(listener),
                        timer: None,
                    });
                }
                self.nodes[index] = Some(slot);
                let _ = ready.send(result);
                self.after_node(index, now);
            }
            LoopCommand::Node(index, cmd) => {
                if let Some(slot) = self.nodes.get_mut(index).and_then(|n| n.as_mut()) {
                    slot.handle_command(cmd, now);
                    self.after_node(index, now);
                }
            }
            LoopCommand::Request {
                index,
                request,
                cmd,
                reply,
            } => {
                if let Some(slot) = self.nodes.get_mut(index).and_then(|n| n.as_mut()) {
                    slot.expect_reply(request, reply);
                    slot.handle_command(cmd, now);
                    self.after_node(index, now);
                }
            }
            LoopCommand::AddQueue {
                index,
                queue,
                ready,
            } => {
                let result = match self.nodes.get_mut(index).and_then(|n| n.as_mut()) {
                    Some(slot) => slot.add_queue(queue),
                    None => Err(crate::node::reactor::ReactorError::Closed),
                };
                let _ = ready.send(result);
                self.after_node(index, now);
            }
            LoopCommand::Stop => self.stop = true,
        }
    }

    // ------------------------------------------------------------ sockets

    fn alloc_token(&mut self) -> usize {
        alloc_token(&mut self.sockets, &mut self.free)
    }

    fn accept(&mut self, token: usize, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Sock {
                node,
                kind: Kind::Listener(listener),
                ..
            }) = self.sockets[token].as_ref()
            else {
                return;
            };
            let node = *node;
            let (stream, addr) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the listener stays; try later.
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                return;
            };
            let Some(id) = slot.core.handle_accepted(addr, now) else {
                drop(stream);
                continue;
            };
            if let Err(e) = socket::configure_accepted(&stream, &slot.socket) {
                log::debug!("socket options for {addr}: {e}");
            }
            if let Some(t) = self.add_conn(node, id, stream, true, now) {
                self.service(t, now);
            }
        }
        // Budget used up: more may be waiting, and edge-triggered polling will not
        // say so again.
        self.accept_again.push(token);
    }

    fn dial(
        &mut self,
        node: usize,
        id: ConnId,
        addr: std::net::SocketAddr,
        local: Option<std::net::IpAddr>,
        now: Instant,
    ) {
        let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
            return;
        };
        let stream = match socket::connect(addr, local, &slot.socket) {
            Ok(s) => s,
            Err(e) => {
                slot.core.handle_dial_failed(id, e.kind(), now);
                return;
            }
        };
        if let Some(t) = self.add_conn(node, id, stream, false, now) {
            self.schedule_sock(t);
        }
    }

    /// Registers a connection's socket with the poll; if that fails, the node hears
    /// of it as a failed connection.
    fn add_conn(
        &mut self,
        node: usize,
        id: ConnId,
        mut stream: TcpStream,
        readable: bool,
        now: Instant,
    ) -> Option<usize> {
        let t = alloc_token(&mut self.sockets, &mut self.free);
        let registered = self.poll.registry().register(
            &mut stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        );
        let slot = self.nodes.get_mut(node).and_then(|n| n.as_mut())?;
        if let Err(e) = registered {
            log::warn!("cannot register a socket: {e}");
            self.free.push(t);
            slot.core.handle_dial_failed(id, e.kind(), now);
            return None;
        }
        slot.tokens.insert(id, t);
        self.sockets[t] = Some(Sock {
            node,
            kind: Kind::Conn {
                stream,
                id,
                readable,
                closing: false,
                connecting: !readable,
            },
            timer: None,
        });
        Some(t)
    }

    /// Reads, processes and writes one connection; drops it when finished.
    fn service(&mut self, token: usize, now: Instant) {
        let Some(sock) = self.sockets.get_mut(token).and_then(|s| s.as_mut()) else {
            return;
        };
        let node = sock.node;
        let Kind::Conn {
            stream,
            id,
            readable,
            closing,
            connecting,
        } = &mut sock.kind
        else {
            return;
        };
        let id = *id;
        let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
            return;
        };
        let core = &mut slot.core;

        if *connecting {
            let failed = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failed {
                core.handle_dial_failed(id, e.kind(), now);
                self.drop_socket(token);
                self.after_node(node, now);
                return;
            }
            core.handle_connected(id);
            *connecting = false;
            *readable = true;
        }

        let mut io = SocketIo {
            stream,
            readable,
            closing: *closing,
        };
        let outcome = core.handle_io(id, &mut io, IO_BUDGET, now);
        if outcome.more_input || outcome.more_output {
            self.again.push(token);
        }
        if outcome.finished {
            if let Some(Sock {
                kind: Kind::Conn { stream, .. },
                ..
            }) = self.sockets.get_mut(token).and_then(|s| s.as_mut())
            {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            self.drop_socket(token);
            self.after_node(node, now);
        } else {
            self.schedule_sock(token);
            self.dirty.push(node);
        }
    }

    fn drop_socket(&mut self, token: usize) {
        if let Some(sock) = self.sockets.get_mut(token).and_then(|s| s.take()) {
            match sock.kind {
                Kind::Conn { mut stream, id, .. } => {
                    let _ = self.poll.registry().deregister(&mut stream);
                    if let Some(slot) = self.nodes.get_mut(sock.node).and_then(|n| n.as_mut()) {
                        slot.tokens.remove(&id);
                    }
                }
                Kind::Listener(mut l) => {
                    let _ = self.poll.registry().deregister(&mut l);
                }
            }
            self.free.push(token);
        }
    }

    // ------------------------------------------------------------ node follow-up

    /// After a node changed: hand on its outputs, start its dials, service the
    /// connections it woke, reschedule.
    fn after_node(&mut self, node: usize, now: Instant) {
        // Each connection is serviced at most once here: one that wakes again (it
        // still has output, or its peer drained what it wrote) waits for the next
        // turn, after the commands and the other sockets, instead of writing on
        // for as long as its peer keeps up.
        let mut serviced: Vec<usize> = Vec::new();
        loop {
            let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                return;
            };
            let work = slot.drain();
            if work.is_empty() {
                break;
            }
            let mut tokens: Vec<usize> = work
                .wakes
                .iter()
                .filter_map(|id| slot.tokens.get(id).copied())
                .collect();
            for (conn, addr, local) in work.dials {
                self.dial(node, conn, addr, local, now);
            }
            let mut seen = std::collections::HashSet::new();
            tokens.retain(|t| seen.insert(*t));
            for t in tokens {
                if serviced.contains(&t) {
                    self.again.push(t);
                } else {
                    serviced.push(t);
                    self.service(t, now);
                }
            }
        }
        let Some(slot) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
            return;
        };
        if slot.finished {
            let listeners = std::mem::take(&mut slot.listeners);
            self.nodes[node] = None;
            for t in listeners {
                self.drop_socket(t);
            }
            if self.shared.stop_when_empty && self.nodes.iter().all(Option::is_none) {
                self.stop = true;
            }
            return;
        }
        self.schedule_node(node, now);
    }
}

fn alloc_token(sockets: &mut Vec<Option<Sock>>, free: &mut Vec<usize>) -> usize {
    free.pop().unwrap_or_else(|| {
        sockets.push(None);
        sockets.len() - 1
    })
}
