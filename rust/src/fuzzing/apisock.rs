//! Socket transport target: a peer's byte stream, cut into fuzzer-chosen pieces, read by a
//! server connection (`api::sock::conn::Conn`, through a real socket pair) with a
//! fuzzer-chosen frame cap, interleaved with replies into a small output buffer the peer
//! drains at fuzzer-chosen moments.
//!
//! Checked: every delivered message has 1..=max bytes and is exactly what the stream framed;
//! a bad header ends the stream with the matching error and nothing after it is delivered;
//! the output buffer never holds more than its cap plus one frame; replies the peer reads
//! are whole frames, in order, none lost unless counted as dropped.

use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::input::Input;
use crate::api::sock::conn::{Conn, Queued, ReadOutcome};
use crate::api::sock::frame::{announced_len, header, FrameError, HEADER_LEN};
use crate::sys::socket::PeerCred;

/// The frames a correct reader finds in `stream` with cap `max`: the messages, then the
/// error (if a header is bad) or how many bytes of a last frame are missing.
fn reference(stream: &[u8], max: u32) -> (Vec<&[u8]>, Option<FrameError>) {
    let mut out = Vec::new();
    let mut at = 0;
    while stream.len() - at >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&stream[at..at + HEADER_LEN]);
        let len = announced_len(&h);
        if len == 0 {
            return (out, Some(FrameError::Empty));
        }
        if len > max {
            return (out, Some(FrameError::TooLarge { len, max }));
        }
        let end = at + HEADER_LEN + len as usize;
        if end > stream.len() {
            break;
        }
        out.push(&stream[at + HEADER_LEN..end]);
        at = end;
    }
    (out, None)
}

fn pair() -> Option<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK, None)
        .ok()
}

/// Run the socket transport target on `data`.
pub fn apisock(data: &[u8]) {
    let mut inp = Input::new(data);
    let max = 1 + inp.below(4096) as u32;
    let out_cap = 1 + inp.below(8192);
    let Some((server, peer)) = pair() else { return };
    let mut conn = Conn::new(server, PeerCred { pid: 1, uid: 0, gid: 0 }, max, out_cap);
    let mut scratch = vec![0u8; 1 + inp.below(512)];
    let mut stream: Vec<u8> = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut end: Option<ReadOutcome> = None;
    let mut replies_sent: Vec<Vec<u8>> = Vec::new();
    let mut replies_read: Vec<u8> = Vec::new();
    let mut dropped = 0u64;
    for _ in 0..inp.below(64) {
        match inp.u8() % 4 {
            // The peer writes a piece: raw bytes or a well-formed frame.
            0 | 1 => {
                let piece: Vec<u8> = if inp.bool() {
                    inp.blob(256).to_vec()
                } else {
                    let body = inp.blob(300);
                    let mut f = header(body.len() as u32).to_vec();
                    f.extend_from_slice(body);
                    f
                };
                let n = rustix::net::send(&peer, &piece, SendFlags::DONTWAIT | SendFlags::NOSIGNAL).unwrap_or(0);
                stream.extend_from_slice(&piece[..n]);
            }
            // The server reads.
            2 => {
                if end.is_none() {
                    let budget = 1 + inp.below(1024);
                    match conn.read(&mut scratch, budget, &mut |f| got.push(f)) {
                        ReadOutcome::Open => {}
                        other => end = Some(other),
                    }
                }
            }
            // The server replies; sometimes the peer drains what arrived.
            _ => {
                let body = inp.blob(200).to_vec();
                if body.is_empty() {
                    continue;
                }
                let queued = if inp.bool() { conn.send(&body) } else { conn.queue(&body) };
                match queued {
                    Ok(Queued::Yes) => replies_sent.push(body),
                    Ok(Queued::Dropped) => dropped += 1,
                    Err(_) => {}
                }
                assert!(conn.pending() <= out_cap + HEADER_LEN + 200, "output buffer past its cap");
                if inp.bool() {
                    let mut buf = [0u8; 4096];
                    while let Ok((n, _)) = rustix::net::recv(&peer, &mut buf[..], RecvFlags::DONTWAIT) {
                        if n == 0 {
                            break;
                        }
                        replies_read.extend_from_slice(&buf[..n.min(buf.len())]);
                    }
                    let _ = conn.flush();
                }
            }
        }
    }
    // Read the rest of what the peer wrote (a bounded number of rounds: each reads > 0 bytes
    // or ends).
    for _ in 0..(stream.len() / scratch.len().max(1) + 4) {
        if end.is_some() {
            break;
        }
        match conn.read(&mut scratch, usize::MAX, &mut |f| got.push(f)) {
            ReadOutcome::Open => {}
            other => end = Some(other),
        }
    }
    let (expect, error) = reference(&stream, max);
    let delivered: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
    match (error, &end) {
        (Some(e), Some(ReadOutcome::Bad(found))) => assert_eq!(e, *found),
        (Some(e), other) => panic!("expected {e:?}, the reader ended with {other:?}"),
        (None, Some(ReadOutcome::Bad(found))) => panic!("a good stream refused: {found:?}"),
        (None, _) => {}
    }
    assert_eq!(delivered, expect, "the messages delivered are the stream's frames");
    for f in &got {
        assert!(!f.is_empty() && f.len() <= max as usize);
    }
    // Replies that arrived are whole frames of what was queued, in order.
    let mut at = 0;
    let mut i = 0;
    while replies_read.len() - at >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&replies_read[at..at + HEADER_LEN]);
        let len = announced_len(&h) as usize;
        if replies_read.len() - at - HEADER_LEN < len {
            break;
        }
        assert_eq!(&replies_read[at + HEADER_LEN..at + HEADER_LEN + len], replies_sent[i].as_slice());
        at += HEADER_LEN + len;
        i += 1;
    }
    assert_eq!(conn.stats().dropped, dropped);
}
