//! One accepted connection: its incremental frame reader and its bounded output buffer.
//!
//! Output never blocks: a frame goes into the connection's buffer, which is written out as
//! far as the socket takes it (the rest when the socket is writable again). A frame that
//! would take the buffer past its cap is dropped whole and counted (a frame is never cut:
//! the stream would lose its framing); an empty buffer accepts any one frame, so a single
//! large reply (a `get_api_json` answer) fits whatever the cap.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{RecvFlags, SendFlags};

use super::frame::{header, FrameError, FrameReader, HEADER_LEN};
use crate::sys::socket::PeerCred;

/// What reading a connection found.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Still open (nothing more to read now, or the read budget was spent).
    Open,
    /// The peer closed its end; `in_frame`: in the middle of a frame.
    Eof {
        /// A frame was partly received.
        in_frame: bool,
    },
    /// The peer sent a bad frame header.
    Bad(FrameError),
    /// The socket failed (`ECONNRESET`, ...).
    Failed(io::Error),
}

/// How a frame handed to [`Conn::send`] fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Written, or buffered to be written.
    Yes,
    /// Dropped: the output buffer is at its cap (counted).
    Dropped,
}

/// Per-connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames accepted for sending.
    pub frames_out: u64,
    /// Frames dropped because the output buffer was full.
    pub dropped: u64,
    /// Bytes waiting in the output buffer.
    pub pending: u64,
}

/// An accepted connection.
#[derive(Debug)]
pub struct Conn {
    fd: OwnedFd,
    /// The peer's credentials at `connect` (`SO_PEERCRED`).
    pub peer: PeerCred,
    reader: FrameReader,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    out_cap: usize,
    /// Counters.
    pub stats: ConnStats,
    /// Whether the poller watches this connection for writability.
    pub(super) watching_out: bool,
}

impl Conn {
    /// Wrap an accepted (non-blocking) socket.
    pub fn new(fd: OwnedFd, peer: PeerCred, max_frame: u32, out_cap: usize) -> Self {
        Self {
            fd,
            peer,
            reader: FrameReader::new(max_frame),
            out: Vec::new(),
            sent: 0,
            out_cap,
            stats: ConnStats::default(),
            watching_out: false,
        }
    }

    /// Read what the socket holds, up to `budget` bytes, through `scratch`; each complete
    /// frame goes to `out`.
    pub fn read(&mut self, scratch: &mut [u8], budget: usize, out: &mut impl FnMut(Vec<u8>)) -> ReadOutcome {
        let mut left = budget;
        loop {
            match rustix::net::recv(&self.fd, &mut *scratch, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return ReadOutcome::Eof { in_frame: self.reader.in_frame() },
                Ok((n, _)) => {
                    let n = n.min(scratch.len());
                    let frames = &mut self.stats.frames_in;
                    let fed = self.reader.feed(&scratch[..n], &mut |f| {
                        *frames += 1;
                        out(f)
                    });
                    if let Err(e) = fed {
                        return ReadOutcome::Bad(e);
                    }
                    left = left.saturating_sub(n);
                    if left == 0 {
                        return ReadOutcome::Open;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return ReadOutcome::Open,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return ReadOutcome::Failed(e.into()),
            }
        }
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Frame `data` and queue it (dropped if the buffer is at its cap), then write as much
    /// as the socket takes. An error means the connection is dead.
    pub fn send(&mut self, data: &[u8]) -> io::Result<Queued> {
        let queued = self.queue(data)?;
        if queued == Queued::Yes {
            self.flush()?;
        }
        Ok(queued)
    }

    /// Frame `data` and queue it without writing (dropped if the buffer is at its cap):
    /// [`flush`](Self::flush) writes a batch of them with one system call.
    pub fn queue(&mut self, data: &[u8]) -> io::Result<Queued> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        let pending = self.pending();
        if pending > 0 && pending.saturating_add(HEADER_LEN + data.len()) > self.out_cap {
            self.stats.dropped += 1;
            return Ok(Queued::Dropped);
        }
        if self.sent > 0 && self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        self.out.extend_from_slice(&header(len));
        self.out.extend_from_slice(data);
        self.stats.frames_out += 1;
        Ok(Queued::Yes)
    }

    /// Send one message with descriptors attached (`SCM_RIGHTS`, on its first byte), after
    /// everything buffered before it: `Ok(false)` if the buffer could not be emptied now (the
    /// peer is not reading; nothing was sent). What the socket does not take at once is
    /// buffered as usual (the descriptors went with the first byte).
    pub fn send_with_fds(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<bool> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        if !self.flush()? {
            return Ok(false);
        }
        let mut frame = header(len).to_vec();
        frame.extend_from_slice(data);
        let n = crate::sys::socket::send_with_fds(self.fd.as_fd(), &frame, fds).or_else(|e| {
            if e.raw_os_error() == Some(libc::EAGAIN) {
                Ok(0)
            } else {
                Err(e)
            }
        })?;
        if n == 0 {
            return Ok(false);
        }
        self.out.extend_from_slice(&frame[n..]);
        self.stats.frames_out += 1;
        self.flush()?;
        Ok(true)
    }

    /// Write buffered bytes until the socket takes no more; returns whether all went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match rustix::net::send(&self.fd, &self.out[self.sent..], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => self.sent += n,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            // A burst's buffer is not kept for the connection's lifetime.
            if self.out.capacity() > (1 << 20) {
                self.out.shrink_to(64 << 10);
            }
            return Ok(true);
        }
        if self.sent > (self.out.len() >> 1) {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(false)
    }

    /// Counters, with the current backlog.
    pub fn stats(&self) -> ConnStats {
        ConnStats { pending: self.pending() as u64, ..self.stats }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
