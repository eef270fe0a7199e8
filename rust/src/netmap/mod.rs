//! netmap rings and pipes between processes: netmap's slot/ring ABI and its sync rules, on
//! shared memory, with no kernel module.
//!
//! A pipe (netmap's `netmap_pipe.c`) is a pair of ports, the master `port{id` and the slave
//! `port}id`; the master's TX ring `k` feeds the slave's RX ring `k` and the slave's TX ring
//! `k` feeds the master's RX ring `k`. Each pipe has its own allocator: one region (named
//! `netmap.port{id`, under the caller's root) holding both `netmap_if`s, all rings and the
//! buffer pool, byte-compatible with netmap ([`abi`], [`layout`]). Opening either end creates
//! both.
//!
//! * [`abi`] — `netmap_slot`, `netmap_ring`, `netmap_if`, flags and modes, with compile-time
//!   offset checks.
//! * [`kring`] — the private ring state and the prologue/finalize/reinit rules (pure logic).
//! * [`layout`] — shmkit's control header, the crossings' published progress, offsets.
//! * [`name`] — libnetmap port names.
//! * [`pipe`] — creation, process-local kring state, ring ownership, destruction.
//! * [`port`] — syncs, poll, the fd, `inject`/`send`/`consume`.
//!
//! # Trust
//!
//! Everything in the region can be written by any process that maps it. The state this
//! process relies on — `hwcur`, `hwtail`, `rhead`, `rcur`, `rtail`, the last value it
//! published, and the geometry — lives in this process's memory. The shared ring's
//! `head`/`cur`/`tail`, the slots and the peer's published progress are input: the prologue
//! checks the first, buffer accesses check the second, and every sync checks the third
//! against the private state (forward only, never past what this side handed over). Garbage
//! leads to a ring reinit or an error, never to an out-of-bounds access, a panic or a hang
//! (waits are bounded slices).
//!
//! # Deviations from netmap (each one tested)
//!
//! * **Strict reinit by default.** Upstream, a rejected prologue adopts the user's indexes,
//!   resets them only when one is `>= n`, sanitises the slots, skips the TX sync but runs
//!   the RX one, and returns success — so a bad index fails silently, again and again.
//!   shmkit's [`kring::ReinitMode::Strict`] resets `head = cur = hwcur`, `tail = hwtail`,
//!   sanitises, skips the sync and reports [`error::NetmapError::RingReinit`] (Python:
//!   `shmkit.netmap.RingReinit`, raised after the other rings were synced; `poll` reports
//!   `POLLERR` instead) and counts it. [`kring::ReinitMode::Compat`] reproduces upstream.
//! * **The `cur >= n` quirk is rejected.** Upstream's comparison chain accepts any
//!   `cur >= n` in a wrapped window when `head >= rhead`; shmkit applies the closed form
//!   `head < n && d(lo,head) <= d(lo,hi) && cur < n && d(head,cur) <= d(head,hi)` in both
//!   modes.
//! * **The full-pipe poll stall (netmap #457) is fixed**: `poll` syncs every bound TX ring
//!   (unless `NR_NO_TX_POLL`), not only those with pending slots, so a sender polling for
//!   POLLIN sees the space its receiver freed. With `NR_NO_TX_POLL`, a poll asking for
//!   POLLOUT always pushes the TX rings (upstream answers from a ring that already shows
//!   space without syncing, so pending slots stay unsent: netmap issue #103).
//! * **A ring is driven by one process.** Binding a ring that another live process binds
//!   gives `EBUSY` even without `NR_EXCLUSIVE` (the kring is private to a process). Handles
//!   within one process share rings under netmap's rules, including two-pass `NR_EXCLUSIVE`.
//! * **`NR_REG_NULL`** binds no ring of the end (syncs and polls do nothing): upstream opens
//!   a separate null port in an existing allocator instead.
//! * **One `netmap_if` per end**, listing every ring of the end (upstream builds one per
//!   file descriptor, with 0 for rings not bound).
//! * **Resuming an end** rewrites the ring's `head = cur = hwcur`, `tail = hwtail` from the
//!   published progress: slots a previous owner filled but did not sync, and fragments of a
//!   packet it never finished, are dropped; packets received but not released come again.
//!   Upstream keeps the rings untouched while the other end holds the pipe.
//! * **Geometry arguments are checked**, not clamped: rings in `[1, 256]`, slots in
//!   `[2, 4096]` (0 or absent means the default: 1 ring, 1024 slots), buffer size a multiple
//!   of 64 in `[64, 65472]` (default 2048). The request of the first opener sizes the pipe
//!   and configures the master (the slave sees TX/RX swapped), whichever end it opens, as in
//!   netmap; later requests are ignored.
//! * **`peer_open`** tells whether a live process has the other end open (upstream gives
//!   the survivor no EOF).
//! * **`fileno()`** is an eventfd kept readable by a helper thread while a bound RX ring has
//!   packets (POLLIN readiness); wait for TX space with `poll(POLLOUT)`.
//! * Host rings, monitors, memory ids and the `extmem`/`share`/`offset` options are
//!   refused with netmap's errno (`EINVAL` for host rings, else `EOPNOTSUPP`).
//!
//! VALE switches ([`vale`]) are built on pipes: a VALE port is the master end of a pipe of
//! its own whose txsync forwards through the switch.

pub mod abi;
pub mod error;
pub mod kring;
pub mod layout;
pub mod mapped;
pub mod name;
pub mod pipe;
pub mod port;
pub mod vale;

pub use error::{NetmapError, Result};
pub use kring::{Dir, KRing, ReinitMode};
pub use name::{End, PortName};
pub use pipe::{Pipe, PipeOptions};
pub use port::{Packet, Port, PortOptions, PortStats, POLLERR, POLLIN, POLLOUT};
