//! VPP socket transport (`api::sock`) against real sockets and real threads: framing across
//! reads, hostile lengths and garbage, a peer that never reads, peer-credential refusal,
//! many connections, EOF, and the socket file's life (mode, stale files, live servers).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use _native::api::sock::{CloseReason, Config, Event, FrameError, Listener, SendOutcome, SockError};

/// A fresh directory for socket files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "shmkit-sock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(body);
    v
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h)?;
    let n = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Poll until `done` says so (with every event seen so far) or 10 s pass.
fn poll_until(l: &mut Listener, seen: &mut Vec<Event>, mut done: impl FnMut(&[Event]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(seen) {
        assert!(Instant::now() < deadline, "timed out; events so far: {seen:?}");
        seen.extend(l.poll(Some(Duration::from_millis(50))).unwrap());
    }
}

fn connected(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(|e| if let Event::Connected { conn, .. } = e { Some(*conn) } else { None }).collect()
}

fn frames_of(events: &[Event], id: u64) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame { conn, data } if *conn == id => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn closed(events: &[Event], id: u64) -> Option<CloseReason> {
    events.iter().find_map(|e| match e {
        Event::Closed { conn, reason } if *conn == id => Some(*reason),
        _ => None,
    })
}

#[test]
fn socket_file_mode_stale_and_live() {
    let d = Dir::new();
    let p = d.path("api.sock");
    for mode in [0o600, 0o660, 0o666] {
        let l = Listener::bind(&p, Config { mode, ..Config::default() }).unwrap();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "whatever the umask");
        // A live server's socket is never clobbered.
        match Listener::bind(&p, Config::default()) {
            Err(SockError::InUse { .. }) => {}
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(l);
        assert!(!p.exists(), "the listener removes its socket file");
    }
    // A stale socket file (its server died without removing it) is replaced.
    {
        let stale = std::os::unix::net::UnixListener::bind(&p).unwrap();
        drop(stale); // the file stays, nobody listens
        assert!(p.exists());
        let l = Listener::bind(&p, Config::default()).unwrap();
        assert!(UnixStream::connect(&p).is_ok());
        drop(l);
    }
    // Anything else at the path is left alone.
    std::fs::write(&p, b"not a socket").unwrap();
    match Listener::bind(&p, Config::default()) {
        Err(SockError::NotASocket { .. }) => {}
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read(&p).unwrap(), b"not a socket");
    // A socket file replaced by someone else after bind is not removed by our drop.
    std::fs::remove_file(&p).unwrap();
    let l = Listener::bind(&p, Config::default()).unwrap();
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"theirs").unwrap();
    drop(l);
    assert_eq!(std::fs::read(&p).unwrap(), b"theirs");
    // Bad arguments.
    for cfg in [
        Config { max_frame: 0, ..Config::default() },
        Config { mode: 0o17777, ..Config::default() },
        Config { out_cap: 0, ..Config::default() },
    ] {
        assert!(matches!(Listener::bind(&d.path("x"), cfg), Err(SockError::InvalidArgument(_))));
    }
}

#[test]
fn frames_split_across_reads_reassemble() {
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config::default()).unwrap();
    let path = l.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&path).unwrap();
        let mut stream = Vec::new();
        for i in 0..50u32 {
            stream.extend(frame(&vec![i as u8; 1 + (i as usize * 37) % 3000]));
        }
        // Pieces of odd sizes, each a separate write the server reads separately.
        let mut at = 0;
        for (k, size) in [1usize, 15, 16, 17, 3, 1000, 7, 4096].iter().cycle().enumerate() {
            if at >= stream.len() {
                break;
            }
            let end = (at + size).min(stream.len());
            s.write_all(&stream[at..end]).unwrap();
            at = end;
            if k % 8 == 0 {
                rx.recv().unwrap(); // the server has polled in between
            }
        }
        // Then the replies.
        for i in 0..50u32 {
            assert_eq!(read_frame(&mut s).unwrap(), i.to_le_bytes());
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = None;
    while id.map_or(0, |id| frames_of(&seen, id).len()) < 50 {
        assert!(Instant::now() < deadline);
        seen.extend(l.poll(Some(Duration::from_millis(20))).unwrap());
        id = id.or_else(|| connected(&seen).first().copied());
        let _ = tx.send(());
    }
    let id = id.unwrap();
    let got = frames_of(&seen, id);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &vec![i as u8; 1 + (i * 37) % 3000]);
        assert_eq!(l.send(id, &(i as u32).to_le_bytes(), true).unwrap(), SendOutcome::Queued);
    }
    drop(tx);
    peer.join().unwrap();
    let s = l.stats();
    assert_eq!((s.frames_in, s.frames_out), (50, 50));
}

#[test]
fn bad_lengths_and_garbage_close_only_that_connection() {
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config { max_frame: 4096, ..Config::default() }).unwrap();
    let mut good = UnixStream::connect(l.path()).unwrap();
    let mut big = UnixStream::connect(l.path()).unwrap();
    let mut empty = UnixStream::connect(l.path()).unwrap();
    let mut garbage = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 4);
    let ids = connected(&seen);
    // Announces 4 GiB - 1 and sends a little: refused from the header alone.
    let mut h = frame(&[]);
    h[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    h.extend_from_slice(b"abc");
    big.write_all(&h).unwrap();
    empty.write_all(&frame(&[])).unwrap();
    // Seeded random bytes: whatever they announce, the connection survives or closes, never
    // the listener.
    let mut rng = common::Rng(common::seed("bad_lengths_and_garbage"));
    let junk: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    garbage.write_all(&junk).unwrap();
    drop(garbage);
    good.write_all(&frame(b"still here")).unwrap();
    poll_until(&mut l, &mut seen, |e| {
        closed(e, ids[1]).is_some()
            && closed(e, ids[2]).is_some()
            && closed(e, ids[3]).is_some()
            && !frames_of(e, ids[0]).is_empty()
    });
    assert_eq!(closed(&seen, ids[1]), Some(CloseReason::BadFrame(FrameError::TooLarge { len: u32::MAX, max: 4096 })));
    assert_eq!(closed(&seen, ids[2]), Some(CloseReason::BadFrame(FrameError::Empty)));
    assert!(closed(&seen, ids[0]).is_none());
    assert_eq!(frames_of(&seen, ids[0]), vec![b"still here".to_vec()]);
    l.send(ids[0], b"ok", true).unwrap();
    assert_eq!(read_frame(&mut good).unwrap(), b"ok");
    // The closed peers see EOF (or a reset).
    let mut buf = [0u8; 1];
    assert!(matches!(big.read(&mut buf), Ok(0) | Err(_)));
    let s = l.stats();
    assert!(s.closed_bad_frame >= 2, "{s:?}");
    assert_eq!(s.connections, 1);
}

#[test]
fn a_peer_that_never_reads_never_blocks_the_server() {
    let d = Dir::new();
    let cap = 256 << 10;
    let mut l = Listener::bind(&d.path("s"), Config { out_cap: cap, ..Config::default() }).unwrap();
    let _stuck = UnixStream::connect(l.path()).unwrap(); // never reads
    let mut reader = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 2);
    let ids = connected(&seen);
    let msg = vec![0x5a; 8192];
    let t = Instant::now();
    let mut dropped = 0;
    for _ in 0..2000 {
        // 16 MB toward a peer that reads nothing: each send returns at once.
        if l.send(ids[0], &msg, true).unwrap() == SendOutcome::Dropped {
            dropped += 1;
        }
    }
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "2000 sends to a stuck peer took {took:?}");
    assert!(dropped > 1000, "dropped {dropped}");
    let info = l.conn_info(ids[0]).unwrap().1;
    assert_eq!(info.dropped, dropped);
    assert!(info.pending as usize <= cap + msg.len() + 16, "{info:?}");
    assert_eq!(l.stats().dropped, dropped);
    // Everyone else is served as usual, while the stuck peer's backlog sits there.
    let echo = std::thread::spawn(move || {
        for i in 0..100u32 {
            reader.write_all(&frame(&i.to_be_bytes())).unwrap();
            assert_eq!(read_frame(&mut reader).unwrap(), i.to_be_bytes());
        }
    });
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while n < 100 {
        assert!(Instant::now() < deadline);
        for e in l.poll(Some(Duration::from_millis(50))).unwrap() {
            if let Event::Frame { conn, data } = e {
                assert_eq!(conn, ids[1]);
                l.send(conn, &data, true).unwrap();
                n += 1;
            }
        }
        let _ = l.send(ids[0], &msg, true); // keeps pushing at the stuck one
    }
    echo.join().unwrap();
}

#[test]
fn a_slow_reader_gets_everything_once_it_reads() {
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config::default()).unwrap();
    let mut c = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 1);
    let id = connected(&seen)[0];
    // More than the socket buffer holds, less than the cap: all of it arrives, in order,
    // written out by polls as the reader makes room.
    let n = 300u32;
    for i in 0..n {
        assert_eq!(l.send(id, &[&i.to_be_bytes()[..], &[1u8; 8000]].concat(), true).unwrap(), SendOutcome::Queued);
    }
    assert!(l.conn_info(id).unwrap().1.pending > 0);
    let reader = std::thread::spawn(move || {
        for i in 0..n {
            let f = read_frame(&mut c).unwrap();
            assert_eq!(&f[..4], i.to_be_bytes());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.conn_info(id).unwrap().1.pending > 0 {
        assert!(Instant::now() < deadline);
        l.poll(Some(Duration::from_millis(20))).unwrap();
    }
    reader.join().unwrap();
    assert_eq!(l.stats().dropped, 0);
}

#[test]
fn peer_credentials_refuse_other_uids() {
    let d = Dir::new();
    let me = rustix::process::geteuid().as_raw();
    let mut l =
        Listener::bind(&d.path("s"), Config { allowed_uids: Some(vec![me.wrapping_add(1)]), ..Config::default() })
            .unwrap();
    let mut c = UnixStream::connect(l.path()).unwrap();
    c.write_all(&frame(b"let me in")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.stats().refused_peers == 0 {
        assert!(Instant::now() < deadline);
        let events = l.poll(Some(Duration::from_millis(50))).unwrap();
        assert!(events.is_empty(), "a refused peer produces no event: {events:?}");
    }
    let mut buf = [0u8; 16];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "the refused peer is closed");
    assert_eq!(l.stats().connections, 0);
    drop(l);
    // Allowed: served, with its credentials reported.
    let mut l = Listener::bind(&d.path("s"), Config { allowed_uids: Some(vec![me]), ..Config::default() }).unwrap();
    let _c = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| !e.is_empty());
    match seen[0] {
        Event::Connected { pid, uid, .. } => assert_eq!((pid, uid), (std::process::id(), me)),
        ref e => panic!("{e:?}"),
    }
}

#[test]
fn many_connections_and_the_connection_limit() {
    let d = Dir::new();
    let n = 200;
    let mut l = Listener::bind(&d.path("s"), Config { max_connections: n, ..Config::default() }).unwrap();
    let path = l.path().to_path_buf();
    let peers: Vec<_> = (0..n)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.write_all(&frame(format!("peer {i}").as_bytes())).unwrap();
                assert_eq!(read_frame(&mut s).unwrap(), format!("hello peer {i}").as_bytes());
                s
            })
        })
        .collect();
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered < n {
        assert!(Instant::now() < deadline);
        for e in l.poll(Some(Duration::from_millis(50))).unwrap() {
            if let Event::Frame { conn, data } = e {
                l.send(conn, &[b"hello ", &data[..]].concat(), true).unwrap();
                answered += 1;
            }
        }
    }
    let socks: Vec<UnixStream> = peers.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(l.stats().connections, n as u64);
    // One more is refused (counted); the others stay.
    let mut extra = UnixStream::connect(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.stats().refused_full == 0 {
        assert!(Instant::now() < deadline);
        l.poll(Some(Duration::from_millis(50))).unwrap();
    }
    let mut b = [0u8; 1];
    assert!(matches!(extra.read(&mut b), Ok(0) | Err(_)));
    drop(socks);
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| e.iter().filter(|e| matches!(e, Event::Closed { .. })).count() == n);
    assert_eq!(l.stats().connections, 0);
    assert_eq!(l.stats().closed_eof, n as u64);
}

#[test]
fn eof_is_reported_with_or_without_a_partial_frame() {
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config::default()).unwrap();
    let a = UnixStream::connect(l.path()).unwrap();
    let mut b = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 2);
    let ids = connected(&seen);
    drop(a);
    b.write_all(&frame(b"abcdef")[..10]).unwrap();
    drop(b);
    poll_until(&mut l, &mut seen, |e| closed(e, ids[0]).is_some() && closed(e, ids[1]).is_some());
    assert_eq!(closed(&seen, ids[0]), Some(CloseReason::Eof { in_frame: false }));
    assert_eq!(closed(&seen, ids[1]), Some(CloseReason::Eof { in_frame: true }));
    // Sending to a gone connection is no error; nor is closing it again.
    assert_eq!(l.send(ids[0], b"x", true).unwrap(), SendOutcome::NoConnection);
    assert!(!l.close_conn(ids[0]));
}

#[test]
fn server_side_close_and_listener_close() {
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config::default()).unwrap();
    let mut c = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 1);
    let id = connected(&seen)[0];
    l.send(id, b"bye", true).unwrap();
    assert!(l.close_conn(id));
    assert_eq!(read_frame(&mut c).unwrap(), b"bye", "what was sent before the close arrives");
    let mut b = [0u8; 1];
    assert_eq!(c.read(&mut b).unwrap(), 0);
    assert_eq!(l.stats().closed_local, 1);
    l.close();
    assert!(!l.path().exists());
    assert!(matches!(l.poll(Some(Duration::ZERO)), Err(SockError::Closed)));
    assert!(matches!(l.send(id, b"x", true), Err(SockError::Closed)));
}

#[test]
fn deferred_sends_go_out_with_one_flush() {
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config { out_cap: 64 << 10, ..Config::default() }).unwrap();
    let mut c = UnixStream::connect(l.path()).unwrap();
    let _stuck = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 2);
    let ids = connected(&seen);
    for i in 0..100u32 {
        assert_eq!(l.send(ids[0], &i.to_be_bytes(), false).unwrap(), SendOutcome::Queued);
    }
    assert_eq!(l.conn_info(ids[0]).unwrap().1.pending, 100 * 20, "buffered, not written");
    l.flush();
    assert_eq!(l.conn_info(ids[0]).unwrap().1.pending, 0);
    for i in 0..100u32 {
        assert_eq!(read_frame(&mut c).unwrap(), i.to_be_bytes());
    }
    // The cap holds for deferred sends too: a peer that never reads gets drops, counted.
    let mut dropped = 0;
    for _ in 0..1000 {
        if l.send(ids[1], &[0u8; 1024], false).unwrap() == SendOutcome::Dropped {
            dropped += 1;
        }
        l.flush();
    }
    assert!(dropped > 0 && l.conn_info(ids[1]).unwrap().1.dropped == dropped);
}

#[test]
fn a_message_can_carry_a_descriptor_after_what_was_queued() {
    use std::os::fd::AsFd;
    let d = Dir::new();
    let mut l = Listener::bind(&d.path("s"), Config::default()).unwrap();
    let c = UnixStream::connect(l.path()).unwrap();
    let mut seen = Vec::new();
    poll_until(&mut l, &mut seen, |e| connected(e).len() == 1);
    let id = connected(&seen)[0];
    l.send(id, b"before", false).unwrap();
    let ev = _native::sys::eventfd::EventFd::new().unwrap();
    assert_eq!(l.send_fds(id, b"with fd", &[ev.as_fd()]).unwrap(), SendOutcome::Queued);
    // The client reads both frames in order; the descriptor comes with the second.
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    let mut fds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 * 16 + 6 + 7 {
        assert!(Instant::now() < deadline);
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let r = rustix::net::recvmsg(&c, &mut iov, &mut control, rustix::net::RecvFlags::empty()).unwrap();
        for m in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        got.extend_from_slice(&buf[..r.bytes]);
    }
    assert_eq!(&got[16..22], b"before");
    assert_eq!(&got[38..45], b"with fd");
    assert_eq!(fds.len(), 1);
    let theirs = _native::sys::eventfd::EventFd::from_owned(fds.pop().unwrap()).unwrap();
    theirs.notify().unwrap();
    assert_eq!(ev.drain().unwrap(), 1, "the same eventfd");
    assert_eq!(l.send_fds(999, b"x", &[ev.as_fd()]).unwrap(), SendOutcome::NoConnection);
}
