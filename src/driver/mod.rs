//! The I/O driver: a mio loop thread that serves one or more nodes.

pub(crate) mod node_slot;
pub(crate) mod reactor;
pub(crate) mod socket;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::error::SendError;
use mio::{Poll, Waker};
use parking_lot::Mutex;

use crate::driver::node_slot::{NodeSlot, Replier};
use crate::node::command::{Command, RequestId};

/// Capacity of a runtime's command queue.
const COMMAND_QUEUE: usize = 65_536;

pub(crate) enum LoopCommand {
    AddNode {
        slot: Box<NodeSlot>,
        listeners: Vec<mio::net::TcpListener>,
        ready: Sender<io::Result<usize>>,
    },
    Node(usize, Command),
    /// A command whose reply goes to `reply`.
    Request {
        index: usize,
        request: RequestId,
        cmd: Command,
        reply: Replier,
    },
    /// A reactor or topic queue of node `index`; the outcome goes to `ready`.
    AddQueue {
        index: usize,
        queue: crate::node::delivery::NewQueue,
        ready: Sender<Result<(), crate::node::reactor::ReactorError>>,
    },
    Stop,
}

/// What the loop thread shares with its submitters: only the wake-up state, so the
/// loop holds no command sender and sees the queue disconnect when all handles go.
pub(crate) struct WakeState {
    pub(crate) waker: Waker,
    pub(crate) wake_pending: AtomicBool,
    pub(crate) stop_when_empty: bool,
}

impl WakeState {
    fn wake(&self) {
        // One wake per batch: the loop clears the flag before draining.
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

pub(crate) struct RuntimeShared {
    pub(crate) wake: Arc<WakeState>,
    commands: Sender<LoopCommand>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for RuntimeShared {
    fn drop(&mut self) {
        let _ = self.commands.try_send(LoopCommand::Stop);
        let _ = self.wake.waker.wake();
    }
}

impl RuntimeShared {
    /// Queues a command without blocking; `false` if the queue is full or the loop gone.
    // The refused command goes back to the caller by value on this rare path; boxing
    // it would cost an allocation on every send instead.
    #[allow(clippy::result_large_err)]
    pub(crate) fn submit(&self, cmd: LoopCommand) -> Result<(), LoopCommand> {
        match self.commands.try_send(cmd) {
            Ok(()) => {
                self.wake.wake();
                Ok(())
            }
            Err(TrySendError::Full(cmd)) | Err(TrySendError::Disconnected(cmd)) => Err(cmd),
        }
    }

    /// Queues a command, waiting until `deadline` for room.
    pub(crate) fn submit_until(
        &self,
        cmd: LoopCommand,
        deadline: std::time::Instant,
    ) -> Result<(), SendError> {
        match self.commands.send_deadline(cmd, deadline) {
            Ok(()) => {
                self.wake.wake();
                Ok(())
            }
            Err(SendTimeoutError::Timeout(_)) => Err(SendError::TimedOut),
            Err(SendTimeoutError::Disconnected(_)) => Err(SendError::Closed),
        }
    }

    /// Queues a command, waiting for room (used for setup and shutdown, not sends).
    pub(crate) fn submit_blocking(&self, cmd: LoopCommand) -> bool {
        let ok = self.commands.send(cmd).is_ok();
        if ok {
            self.wake.wake();
        }
        ok
    }
}

/// A mio event loop on its own thread that can host many nodes.
///
/// A node started with [`crate::NodeBuilder::start`] gets a runtime of its own; many
/// nodes (a test network, a benchmark) can share one with
/// [`crate::NodeBuilder::start_on`]. The loop stops when the `Runtime` is dropped
/// (shared) or when its last node shuts down (private).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<RuntimeShared>,
}

impl Runtime {
    /// Starts a loop thread.
    pub fn new() -> io::Result<Runtime> {
        Self::spawn(false)
    }

    pub(crate) fn spawn(stop_when_empty: bool) -> io::Result<Runtime> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), reactor::WAKER)?;
        let (tx, rx): (Sender<LoopCommand>, Receiver<LoopCommand>) =
            crossbeam_channel::bounded(COMMAND_QUEUE);
        let wake = Arc::new(WakeState {
            waker,
            wake_pending: AtomicBool::new(false),
            stop_when_empty,
        });
        let shared = Arc::new(RuntimeShared {
            wake: wake.clone(),
            commands: tx,
            thread: Mutex::new(None),
        });
        let reactor = reactor::Reactor::new(poll, wake, rx);
        let handle = std::thread::Builder::new()
            .name("meshwire-loop".into())
            .spawn(move || reactor.run())?;
        *shared.thread.lock() = Some(handle);
        Ok(Runtime { shared })
    }

    /// Stops the loop and waits for its thread; nodes still on it stop abruptly.
    pub fn stop(&self) {
        self.shared.submit_blocking(LoopCommand::Stop);
        let handle = self.shared.thread.lock().take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}
