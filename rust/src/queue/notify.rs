//! `fileno()`: an eventfd that is readable while the queue has something to get (or, for the
//! writable fd, room to put), for `selectors`, `asyncio` and epoll.
//!
//! An eventfd belongs to one process, but producers live in other processes and cannot
//! write to it. So each handle that asks for an fd gets a small helper thread *in its own
//! process* that plays consumer-side sleeper for it: it sleeps on the queue's futex like a
//! blocked `get` (counted in the waiter count, so producers do wake it), and when the queue
//! becomes non-empty it writes the local eventfd. Producers need no knowledge of fds at all,
//! and a queue without fd users costs nothing.
//!
//! The fd is level-triggered in practice through a three-state handshake:
//!
//! ```text
//! ARMED     --helper sees data: state = NOTIFYING, write(efd), state = FIRED-->  FIRED
//! FIRED     --a get of this handle finds the queue empty: read(efd), state = ARMED,
//!             wake helper-->  ARMED
//! ```
//!
//! A get that finds the queue empty while the helper is `NOTIFYING` waits the few
//! instructions until `FIRED` before draining; without that state, a helper preempted between
//! its write and its state change (likely: the write wakes the very thread that will drain)
//! would leave the fd readable with nobody to reset it. The helper always re-checks the queue
//! after being re-armed, so an element that arrives between "found empty" and the re-arm is
//! never missed. The fd may be readable when the queue was just emptied by another consumer
//! (a spurious wake-up: the next non-blocking get raises `Empty` and re-arms), never
//! unreadable while the queue stays non-empty. The helper sleeps in bounded slices, so a
//! claim left by a dead process is noticed and reported readable (the next get recovers it).

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::{QueueError, Result};
use super::ring::{Dir, Ring};
use crate::sys::eventfd::EventFd;
use crate::sys::futex;
use crate::sys::process;

const ARMED: u32 = 0;
const FIRED: u32 = 1;
const NOTIFYING: u32 = 2;
/// Longest sleep of the helper before it re-checks the queue and its stop flag.
const SLICE: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Shared {
    /// `ARMED`, `NOTIFYING` or `FIRED`; also a process-private futex word.
    state: AtomicU32,
    stop: AtomicBool,
}

/// An eventfd kept in step with one direction of a queue by a helper thread.
#[derive(Debug)]
pub(crate) struct Notifier {
    efd: Arc<EventFd>,
    shared: Arc<Shared>,
    ring: Arc<Ring>,
    dir: Dir,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl Notifier {
    /// Create the eventfd and start the helper.
    pub(crate) fn start(ring: Arc<Ring>, dir: Dir) -> Result<Self> {
        let os = |op, source| QueueError::Os { op, source };
        let efd = Arc::new(EventFd::new().map_err(|e| os("eventfd", e))?);
        let shared = Arc::new(Shared { state: AtomicU32::new(ARMED), stop: AtomicBool::new(false) });
        let thread = {
            let (ring, efd, shared) = (Arc::clone(&ring), Arc::clone(&efd), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("shmkit-queue-fd".into())
                .spawn(move || run(&ring, dir, &efd, &shared))
                .map_err(|e| os("spawn fd helper thread", e))?
        };
        Ok(Self { efd, shared, ring, dir, thread: Some(thread), pid: process::cached_pid() })
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> i32 {
        self.efd.raw()
    }

    /// Whether this notifier was started by this process (not inherited through fork).
    pub(crate) fn is_ours(&self) -> bool {
        self.pid == process::cached_pid()
    }

    /// The handle found the condition false: make the fd unreadable and let the helper watch
    /// again. One atomic load when nothing fired.
    #[inline]
    pub(crate) fn rearm(&self) {
        if self.shared.state.load(Acquire) != ARMED {
            self.rearm_slow();
        }
    }

    #[cold]
    fn rearm_slow(&self) {
        // Our own helper is between its write and `FIRED`: let it finish.
        while self.shared.state.load(Acquire) == NOTIFYING {
            std::thread::yield_now();
        }
        let _ = self.efd.drain();
        self.shared.state.store(ARMED, SeqCst);
        futex::wake(&self.shared.state, 1);
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        if !self.is_ours() {
            std::mem::forget(thread);
            return;
        }
        self.shared.stop.store(true, SeqCst);
        self.shared.state.store(ARMED, SeqCst);
        futex::wake(&self.shared.state, 1);
        self.ring.wake_all(self.dir);
        let _ = thread.join();
    }
}

fn run(ring: &Ring, dir: Dir, efd: &EventFd, shared: &Shared) {
    let fire = || {
        shared.state.store(NOTIFYING, SeqCst);
        let _ = efd.notify();
        shared.state.store(FIRED, SeqCst);
    };
    while !shared.stop.load(Acquire) {
        if shared.state.load(Acquire) == FIRED {
            futex::wait(&shared.state, FIRED, Some(SLICE));
            continue;
        }
        match ring.ready(dir) {
            // Ready, or damaged: let the user's next operation succeed or report the damage.
            Ok(true) | Err(_) => fire(),
            Ok(false) => {
                if ring.wait(dir, SLICE).is_err() {
                    fire();
                }
            }
        }
    }
}
