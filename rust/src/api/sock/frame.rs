//! VPP's socket framing: every message is preceded by a 16-byte header, big-endian
//! `>QII` — 8 bytes that VPP's shared-memory world used for a queue pointer (sent as zero,
//! ignored on receipt), the length of the message that follows (u32, not counting the
//! header), and 4 bytes of timestamp (sent as zero, ignored). The layout is read from
//! vpp_papi's `vpp_transport_socket.py` (2.4.2).
//!
//! [`FrameReader`] reassembles frames from a byte stream that arrives in arbitrary pieces.
//! A header's length is validated before anything is allocated for its body: zero (no
//! message is empty: each starts with its u16 id) or more than the configured maximum is
//! an error, and the caller closes the connection. The body's buffer grows with the bytes
//! that actually arrive, so a peer that announces a large frame and sends nothing costs
//! nothing.

use thiserror::Error;

/// Bytes of the frame header.
pub const HEADER_LEN: usize = 16;

/// The header for a message of `len` bytes.
pub fn header(len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[8..12].copy_from_slice(&len.to_be_bytes());
    h
}

/// The message length a header announces.
pub fn announced_len(h: &[u8; HEADER_LEN]) -> u32 {
    u32::from_be_bytes([h[8], h[9], h[10], h[11]])
}

/// Why a byte stream is not a sequence of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A header announced an empty message.
    #[error("a frame announced an empty message")]
    Empty,
    /// A header announced more than the maximum.
    #[error("a frame announced {len} bytes, more than the maximum of {max}")]
    TooLarge {
        /// What the header announced.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
}

/// Reassembles frames from pieces of a byte stream.
#[derive(Debug)]
pub struct FrameReader {
    max: u32,
    /// Header bytes received so far (`have < HEADER_LEN`: still reading the header).
    head: [u8; HEADER_LEN],
    have: usize,
    /// The body being received; its length is the announced one once the header is complete.
    want: usize,
    body: Vec<u8>,
}

/// The body buffer grows at most this much ahead of the bytes that arrived.
const GROW_STEP: usize = 64 << 10;

impl FrameReader {
    /// A reader that accepts messages of 1..=`max` bytes.
    pub fn new(max: u32) -> Self {
        Self { max, head: [0; HEADER_LEN], have: 0, want: 0, body: Vec::new() }
    }

    /// Whether a frame is partly received (an EOF now cuts a message).
    pub fn in_frame(&self) -> bool {
        self.have > 0
    }

    /// Feed `data`; every completed message is passed to `out`. On an error the stream is
    /// unusable (the caller closes it); frames completed before the bad header were
    /// delivered.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Vec<u8>)) -> Result<(), FrameError> {
        while !data.is_empty() {
            if self.have < HEADER_LEN {
                let n = (HEADER_LEN - self.have).min(data.len());
                self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < HEADER_LEN {
                    return Ok(());
                }
                let len = announced_len(&self.head);
                if len == 0 {
                    return Err(FrameError::Empty);
                }
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
                self.want = len as usize;
                self.body = Vec::with_capacity(self.want.min(GROW_STEP).max(data.len().min(self.want)));
            }
            let n = (self.want - self.body.len()).min(data.len());
            self.body.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.body.len() == self.want {
                self.have = 0;
                out(std::mem::take(&mut self.body));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = header(body.len() as u32).to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn header_is_vpp_layout() {
        let h = header(0x0102_0304);
        assert_eq!(h, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(announced_len(&h), 0x0102_0304);
    }

    #[test]
    fn frames_split_at_every_byte_reassemble() {
        let mut stream = frame(b"hello");
        stream.extend(frame(&[7u8; 300]));
        stream.extend(frame(b"x"));
        for cut in 0..stream.len() {
            let mut r = FrameReader::new(1024);
            let mut got = Vec::new();
            r.feed(&stream[..cut], &mut |f| got.push(f)).unwrap();
            r.feed(&stream[cut..], &mut |f| got.push(f)).unwrap();
            assert_eq!(got, vec![b"hello".to_vec(), vec![7u8; 300], b"x".to_vec()], "cut at {cut}");
            assert!(!r.in_frame());
        }
        // One byte at a time.
        let mut r = FrameReader::new(1024);
        let mut got = 0;
        for b in &stream {
            r.feed(std::slice::from_ref(b), &mut |_| got += 1).unwrap();
        }
        assert_eq!(got, 3);
    }

    #[test]
    fn bad_lengths_are_refused_before_allocation() {
        let mut r = FrameReader::new(100);
        let mut h = header(u32::MAX).to_vec();
        h.push(1);
        assert_eq!(r.feed(&h, &mut |_| panic!()), Err(FrameError::TooLarge { len: u32::MAX, max: 100 }));
        assert_eq!(r.body.capacity(), 0);
        let mut r = FrameReader::new(100);
        assert_eq!(r.feed(&header(0), &mut |_| panic!()), Err(FrameError::Empty));
        // The maximum itself is fine.
        let mut r = FrameReader::new(100);
        let mut n = 0;
        r.feed(&frame(&[1; 100]), &mut |_| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn announced_but_absent_body_costs_little() {
        let mut r = FrameReader::new(u32::MAX);
        r.feed(&header(1 << 30), &mut |_| panic!()).unwrap();
        assert!(r.in_frame());
        assert!(r.body.capacity() <= GROW_STEP);
    }
}
