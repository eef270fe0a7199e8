//! The memif control channel: message framing over `SOCK_SEQPACKET` and the handshake state
//! machines of both roles.
//!
//! Handshake (one reply per message, libmemif `socket.c`, DPDK `memif_socket.c`):
//!
//! ```text
//! server → HELLO          limits (max indexes), versions
//! client → INIT           version, id, mode, secret, name        server checks → ACK
//! client → ADD_REGION ×n  index, size + memfd                    → ACK each
//! client → ADD_RING ×m    S2M rings first, then M2S + eventfd    → ACK each
//! client → CONNECT        if_name        server maps, checks     → CONNECTED
//! ```
//!
//! Either side may send DISCONNECT {code, reason} at any point; closing the socket is a plain
//! disconnect. The state machines here are pure (they only see decoded messages and the
//! descriptors that came with them, and write through [`Wire`]), so they are fuzzed directly.
//! Every refusal carries a code and a reason that go out in a DISCONNECT.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::conn::{ClientPlan, ConnInfo};
use super::error::ErrCode;
use super::ring::MAX_LOG2_RING_SIZE;
use super::wire::{AddRing, Disconnect, Hello, Init, Msg, Name, Reason, Secret, MSG_SIZE, VERSION};
use crate::sys::eventfd::PeerEventFd;
use crate::sys::socket::SeqPacket;

/// Where handshake messages go.
pub trait Wire {
    /// Send one message with descriptors.
    fn send_msg(&mut self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()>;
}

impl Wire for SeqPacket {
    fn send_msg(&mut self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        SeqPacket::send(self, &msg.encode(), fds).map(|_| ())
    }
}

impl Wire for &SeqPacket {
    fn send_msg(&mut self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        SeqPacket::send(self, &msg.encode(), fds).map(|_| ())
    }
}

/// A refusal: the code and reason to put in DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// libmemif code.
    pub code: ErrCode,
    /// Reason text (at most 96 bytes go on the wire).
    pub reason: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: ErrCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }

    /// What `close()` says to the peer, as libmemif's `memif_delete` does (code 0): the peer
    /// logs a reason instead of reading end-of-file.
    pub fn goodbye() -> Self {
        Self::new(ErrCode::SUCCESS, "interface closed")
    }

    /// The DISCONNECT message.
    pub fn message(&self) -> Msg {
        Msg::Disconnect(Disconnect { code: self.code as u32, reason: Reason::truncated(&self.reason) })
    }
}

/// What reading the socket produced.
#[derive(Debug)]
pub enum Incoming {
    /// Nothing queued.
    Nothing,
    /// The peer closed the connection.
    Eof,
    /// One message and its descriptors.
    Msg(Msg, Vec<OwnedFd>),
}

/// Receive and decode one control message without blocking. Wrong sizes, truncation, unknown
/// types and too many descriptors are refusals.
pub fn recv_msg(sock: &SeqPacket) -> Result<Incoming, Refusal> {
    let mut buf = [0u8; MSG_SIZE + 1];
    let r = match sock.recv(&mut buf) {
        Ok(None) => return Ok(Incoming::Nothing),
        Ok(Some(r)) => r,
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(Incoming::Eof),
        Err(e) => return Err(Refusal::new(ErrCode::SYSCALL, format!("control socket: {e}"))),
    };
    if r.len == 0 && r.fds.is_empty() && !r.truncated {
        return Ok(Incoming::Eof);
    }
    if r.truncated || r.len != MSG_SIZE {
        return Err(Refusal::new(
            ErrCode::MFMSG,
            format!("control message of {}{} bytes", if r.truncated { "over " } else { "" }, r.len),
        ));
    }
    if r.fds_truncated {
        return Err(Refusal::new(ErrCode::MFMSG, "too many file descriptors with a control message"));
    }
    match Msg::decode(&buf[..MSG_SIZE]) {
        Ok(m) => Ok(Incoming::Msg(m, r.fds)),
        Err(e) => Err(Refusal::new(ErrCode::UNKNOWN_MSG, e.to_string())),
    }
}

fn one_fd(msg: &Msg, mut fds: Vec<OwnedFd>) -> Result<OwnedFd, Refusal> {
    if fds.len() != 1 {
        let code = if matches!(msg, Msg::AddRegion(_)) { ErrCode::NO_SHMFD } else { ErrCode::NO_INTFD };
        return Err(Refusal::new(
            code,
            format!("{} came with {} file descriptors (needs 1)", msg.type_name(), fds.len()),
        ));
    }
    Ok(fds.remove(0))
}

fn no_fds(msg: &Msg, fds: &[OwnedFd]) -> Result<(), Refusal> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(Refusal::new(ErrCode::MFMSG, format!("{} came with unexpected file descriptors", msg.type_name())))
    }
}

/// The server's limits, announced in HELLO (maxima are indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Highest region index.
    pub max_region: u16,
    /// Highest S2M ring index.
    pub max_s2m_ring: u16,
    /// Highest M2S ring index.
    pub max_m2s_ring: u16,
    /// Largest log2 ring size.
    pub max_log2_ring_size: u8,
}

impl Limits {
    /// The HELLO message.
    pub fn hello(&self, name: &str) -> Msg {
        Msg::Hello(Hello {
            name: Name::truncated(name),
            min_version: VERSION,
            max_version: VERSION,
            max_region: self.max_region,
            max_m2s_ring: self.max_m2s_ring,
            max_s2m_ring: self.max_s2m_ring,
            max_log2_ring_size: self.max_log2_ring_size,
        })
    }
}

/// Server handshake progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// HELLO sent, waiting for INIT.
    WaitInit,
    /// INIT accepted: regions and rings arrive.
    Building,
    /// CONNECTED sent.
    Connected,
}

/// What the server does after a message.
#[derive(Debug)]
pub enum ServerStep {
    /// Send this reply and go on.
    Reply(Msg),
    /// INIT with a supported version: the caller checks id, secret and mode, then calls
    /// [`ServerHandshake::init_accepted`] (and replies ACK) or refuses.
    Init(Init),
    /// CONNECT: the caller maps everything ([`ServerHandshake::take_parts`]) and replies
    /// CONNECTED, or refuses.
    Connect(Name),
    /// The peer sent DISCONNECT.
    PeerDisconnect(Disconnect),
}

/// Everything a client described, ready to map.
#[derive(Debug)]
pub struct ServerParts {
    /// The INIT.
    pub init: Init,
    /// (size, memfd) per region.
    pub regions: Vec<(u64, OwnedFd)>,
    /// S2M rings by index, with their interrupt eventfds.
    pub s2m: Vec<(AddRing, PeerEventFd)>,
    /// M2S rings by index, with their interrupt eventfds.
    pub m2s: Vec<(AddRing, PeerEventFd)>,
}

/// The server side of one control connection.
#[derive(Debug)]
pub struct ServerHandshake {
    /// Where we are.
    pub state: ServerState,
    limits: Limits,
    init: Option<Init>,
    regions: Vec<(u64, OwnedFd)>,
    s2m: Vec<Option<(AddRing, PeerEventFd)>>,
    m2s: Vec<Option<(AddRing, PeerEventFd)>>,
}

impl ServerHandshake {
    /// A fresh connection (the caller sends `limits.hello(..)` first).
    pub fn new(limits: Limits) -> Self {
        Self { state: ServerState::WaitInit, limits, init: None, regions: Vec::new(), s2m: Vec::new(), m2s: Vec::new() }
    }

    /// The INIT passed the caller's checks.
    pub fn init_accepted(&mut self, init: Init) {
        self.init = Some(init);
        self.state = ServerState::Building;
    }

    /// Process one message from the client.
    pub fn step(&mut self, msg: Msg, fds: Vec<OwnedFd>) -> Result<ServerStep, Refusal> {
        if let Msg::Disconnect(d) = msg {
            return Ok(ServerStep::PeerDisconnect(d));
        }
        match (self.state, msg) {
            (ServerState::WaitInit, Msg::Init(init)) => {
                no_fds(&msg, &fds)?;
                if init.version != VERSION {
                    return Err(Refusal::new(
                        ErrCode::PROTO,
                        format!("incompatible version {:#06x} (supported {VERSION:#06x})", init.version),
                    ));
                }
                Ok(ServerStep::Init(init))
            }
            (ServerState::Building, Msg::AddRegion(r)) => {
                let fd = one_fd(&msg, fds)?;
                if r.index > self.limits.max_region {
                    return Err(Refusal::new(
                        ErrCode::MAXREG,
                        format!("region index {} > {}", r.index, self.limits.max_region),
                    ));
                }
                if usize::from(r.index) != self.regions.len() {
                    return Err(Refusal::new(
                        ErrCode::MFMSG,
                        format!("region {} added out of order (expected {})", r.index, self.regions.len()),
                    ));
                }
                if r.size == 0 || r.size > super::conn::MAX_REGION_SIZE {
                    return Err(Refusal::new(ErrCode::NO_SHMFD, format!("region size {} out of range", r.size)));
                }
                self.regions.push((r.size, fd));
                Ok(ServerStep::Reply(Msg::Ack))
            }
            (ServerState::Building, Msg::AddRing(r)) => {
                let fd = one_fd(&msg, fds)?;
                if r.private_hdr_size != 0 {
                    return Err(Refusal::new(ErrCode::PRIVHDR, "private headers not supported"));
                }
                if r.log2_ring_size > self.limits.max_log2_ring_size || r.log2_ring_size > MAX_LOG2_RING_SIZE {
                    return Err(Refusal::new(
                        ErrCode::MAX_RING,
                        format!("log2 ring size {} > {}", r.log2_ring_size, self.limits.max_log2_ring_size),
                    ));
                }
                if usize::from(r.region) >= self.regions.len() {
                    return Err(Refusal::new(
                        ErrCode::MAXREG,
                        format!("ring {} in region {} that was not added", r.index, r.region),
                    ));
                }
                let (list, max) = if r.is_s2m() {
                    (&mut self.s2m, self.limits.max_s2m_ring)
                } else {
                    (&mut self.m2s, self.limits.max_m2s_ring)
                };
                if r.index > max {
                    return Err(Refusal::new(ErrCode::MAXRING, format!("ring index {} > {max}", r.index)));
                }
                let i = usize::from(r.index);
                if list.len() <= i {
                    list.resize_with(i + 1, || None);
                }
                if list[i].is_some() {
                    return Err(Refusal::new(ErrCode::MFMSG, format!("ring {} added twice", r.index)));
                }
                // Only a real eventfd: anything else (a pipe, a socket) could block our writes.
                let int = PeerEventFd::from_peer(fd)
                    .map_err(|e| Refusal::new(ErrCode::NO_INTFD, format!("interrupt fd of ring {}: {e}", r.index)))?;
                list[i] = Some((r, int));
                Ok(ServerStep::Reply(Msg::Ack))
            }
            (ServerState::Building, Msg::Connect(name)) => {
                no_fds(&msg, &fds)?;
                if self.regions.is_empty() {
                    return Err(Refusal::new(ErrCode::NO_SHMFD, "CONNECT without regions"));
                }
                for (dir, list) in [("S2M", &self.s2m), ("M2S", &self.m2s)] {
                    if list.is_empty() || list.iter().any(Option::is_none) {
                        return Err(Refusal::new(ErrCode::MAXRING, format!("{dir} rings missing or not contiguous")));
                    }
                }
                Ok(ServerStep::Connect(name))
            }
            (state, m) => Err(Refusal::new(ErrCode::MFMSG, format!("unexpected {} in state {state:?}", m.type_name()))),
        }
    }

    /// Hand over what the client described (after CONNECT).
    pub fn take_parts(&mut self) -> Option<ServerParts> {
        let init = self.init?;
        Some(ServerParts {
            init,
            regions: std::mem::take(&mut self.regions),
            s2m: std::mem::take(&mut self.s2m).into_iter().flatten().collect(),
            m2s: std::mem::take(&mut self.m2s).into_iter().flatten().collect(),
        })
    }
}

/// What a client asks for.
#[derive(Debug, Clone)]
pub struct ClientWants {
    /// Interface id.
    pub id: u32,
    /// Mode.
    pub mode: u8,
    /// Secret.
    pub secret: Option<Vec<u8>>,
    /// Application name.
    pub app_name: String,
    /// Interface name.
    pub if_name: String,
    /// Queue pairs wanted.
    pub rings: u16,
    /// log2 ring size wanted.
    pub log2_ring_size: u8,
    /// Buffer size.
    pub buffer_size: u32,
    /// Our receive rings poll (MASK_INT).
    pub polling: bool,
}

/// Client handshake progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Connected, waiting for HELLO.
    WaitHello,
    /// INIT sent.
    WaitInitAck,
    /// ADD_REGION `i` sent.
    WaitRegionAck(usize),
    /// ADD_RING `i` (global index) sent.
    WaitRingAck(usize),
    /// CONNECT sent.
    WaitConnected,
    /// CONNECTED received.
    Connected,
}

/// What the client does after a message.
#[derive(Debug)]
pub enum ClientStep {
    /// Sent the next message; keep going.
    Continue,
    /// The server said CONNECTED with its interface name.
    Connected(Name),
    /// The server sent DISCONNECT.
    PeerDisconnect(Disconnect),
}

/// The client side of a control connection.
#[derive(Debug)]
pub struct ClientHandshake {
    /// Where we are.
    pub state: ClientState,
    wants: ClientWants,
    /// The memory being described (taken when connected).
    pub plan: Option<ClientPlan>,
    /// The server's name from HELLO.
    pub remote_name: String,
}

impl ClientHandshake {
    /// A fresh connection, waiting for HELLO.
    pub fn new(wants: ClientWants) -> Self {
        Self { state: ClientState::WaitHello, wants, plan: None, remote_name: String::new() }
    }

    fn send(w: &mut dyn Wire, msg: &Msg, fds: &[BorrowedFd<'_>]) -> Result<(), Refusal> {
        w.send_msg(msg, fds).map_err(|e| Refusal::new(ErrCode::SYSCALL, format!("sending {}: {e}", msg.type_name())))
    }

    fn send_ring(&self, w: &mut dyn Wire, i: usize) -> Result<(), Refusal> {
        let plan = self.plan.as_ref().ok_or_else(|| Refusal::new(ErrCode::NOMEM, "no memory plan"))?;
        let r = &plan.rings[i];
        Self::send(w, &Msg::AddRing(r.msg), &[r.int.as_fd()])
    }

    fn send_region(&self, w: &mut dyn Wire, i: usize) -> Result<(), Refusal> {
        let plan = self.plan.as_ref().ok_or_else(|| Refusal::new(ErrCode::NOMEM, "no memory plan"))?;
        let (m, fd) = &plan.regions[i];
        Self::send(w, &Msg::AddRegion(*m), &[fd.as_fd()])
    }

    /// Process one message from the server, sending the next one through `w`.
    pub fn step(&mut self, w: &mut dyn Wire, msg: Msg, fds: Vec<OwnedFd>) -> Result<ClientStep, Refusal> {
        if let Msg::Disconnect(d) = msg {
            return Ok(ClientStep::PeerDisconnect(d));
        }
        no_fds(&msg, &fds)?;
        match (self.state, msg) {
            (ClientState::WaitHello, Msg::Hello(h)) => {
                if h.min_version > VERSION || h.max_version < VERSION {
                    return Err(Refusal::new(
                        ErrCode::PROTO,
                        format!("incompatible version: server supports {:#06x}..{:#06x}", h.min_version, h.max_version),
                    ));
                }
                if h.max_region < 1 {
                    return Err(Refusal::new(ErrCode::MAXREG, "server accepts a single region; 2 are needed"));
                }
                let want = self.wants.rings;
                let s2m = want.min(h.max_s2m_ring.saturating_add(1));
                let m2s = want.min(h.max_m2s_ring.saturating_add(1));
                let log2 = self.wants.log2_ring_size.min(h.max_log2_ring_size).min(MAX_LOG2_RING_SIZE);
                self.remote_name = h.name.text();
                let plan = ClientPlan::create(s2m, m2s, log2, self.wants.buffer_size, self.wants.polling)
                    .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
                self.plan = Some(plan);
                let secret = match &self.wants.secret {
                    Some(s) => Secret::new(s).ok_or_else(|| Refusal::new(ErrCode::INVAL_ARG, "secret too long"))?,
                    None => Secret::default(),
                };
                let init = Init {
                    version: VERSION,
                    id: self.wants.id,
                    mode: self.wants.mode,
                    secret,
                    name: Name::truncated(&self.wants.app_name),
                };
                Self::send(w, &Msg::Init(init), &[])?;
                self.state = ClientState::WaitInitAck;
                Ok(ClientStep::Continue)
            }
            (ClientState::WaitInitAck, Msg::Ack) => {
                self.send_region(w, 0)?;
                self.state = ClientState::WaitRegionAck(0);
                Ok(ClientStep::Continue)
            }
            (ClientState::WaitRegionAck(i), Msg::Ack) => {
                let nregions = self.plan.as_ref().map_or(0, |p| p.regions.len());
                if i + 1 < nregions {
                    self.send_region(w, i + 1)?;
                    self.state = ClientState::WaitRegionAck(i + 1);
                } else {
                    self.send_ring(w, 0)?;
                    self.state = ClientState::WaitRingAck(0);
                }
                Ok(ClientStep::Continue)
            }
            (ClientState::WaitRingAck(i), Msg::Ack) => {
                let nrings = self.plan.as_ref().map_or(0, |p| p.rings.len());
                if i + 1 < nrings {
                    self.send_ring(w, i + 1)?;
                    self.state = ClientState::WaitRingAck(i + 1);
                } else {
                    Self::send(w, &Msg::Connect(Name::truncated(&self.wants.if_name)), &[])?;
                    self.state = ClientState::WaitConnected;
                }
                Ok(ClientStep::Continue)
            }
            (ClientState::WaitConnected, Msg::Connected(name)) => {
                self.state = ClientState::Connected;
                Ok(ClientStep::Connected(name))
            }
            (state, m) => Err(Refusal::new(ErrCode::MFMSG, format!("unexpected {} in state {state:?}", m.type_name()))),
        }
    }

    /// Info for the connection.
    pub fn info(&self, remote_if_name: &Name, peer_pid: Option<u32>) -> ConnInfo {
        ConnInfo {
            remote_name: self.remote_name.clone(),
            remote_if_name: remote_if_name.text(),
            peer_pid,
            ..ConnInfo::default()
        }
    }
}

/// Constant-time-ish comparison of the secret a client sent with ours (C-string semantics up
/// to 24 bytes, as libmemif compares them).
pub fn secret_matches(ours: &[u8], theirs: &Secret) -> bool {
    let t = theirs.bytes();
    if t.len() != ours.len() {
        return false;
    }
    t.iter().zip(ours).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd::EventFd;
    use proptest::prelude::*;

    #[derive(Default)]
    struct Recorder(Vec<(Msg, usize)>);
    impl Wire for Recorder {
        fn send_msg(&mut self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
            self.0.push((*msg, fds.len()));
            Ok(())
        }
    }

    fn limits() -> Limits {
        Limits { max_region: 255, max_s2m_ring: 1, max_m2s_ring: 1, max_log2_ring_size: 10 }
    }

    fn wants() -> ClientWants {
        ClientWants {
            id: 3,
            mode: 0,
            secret: Some(b"pw".to_vec()),
            app_name: "app".into(),
            if_name: "if".into(),
            rings: 4,
            log2_ring_size: 12,
            buffer_size: 256,
            polling: false,
        }
    }

    fn dup_fd(fd: BorrowedFd<'_>) -> OwnedFd {
        crate::sys::fd::dup(fd).unwrap()
    }

    /// A client and a server handshake talking to each other in memory.
    #[test]
    fn full_handshake() {
        let mut c = ClientHandshake::new(wants());
        let mut s = ServerHandshake::new(limits());
        let mut w = Recorder::default();
        let hello = limits().hello("srv");
        assert!(matches!(c.step(&mut w, hello, vec![]).unwrap(), ClientStep::Continue));
        let plan = c.plan.as_ref().unwrap();
        assert_eq!(plan.rings.len(), 4, "2 rings per direction: the server's max index is 1");
        assert_eq!(plan.rings[0].msg.log2_ring_size, 10);
        let mut next = w.0.remove(0).0;
        loop {
            // Attach the descriptors a real socket would carry.
            let fds = match next {
                Msg::AddRegion(r) => vec![dup_fd(c.plan.as_ref().unwrap().regions[usize::from(r.index)].1.as_fd())],
                Msg::AddRing(_) => vec![EventFd::new().unwrap().as_fd()].into_iter().map(dup_fd).collect(),
                _ => vec![],
            };
            match s.step(next, fds).unwrap() {
                ServerStep::Init(init) => {
                    assert_eq!(init.id, 3);
                    assert!(secret_matches(b"pw", &init.secret));
                    assert!(!secret_matches(b"pw2", &init.secret));
                    s.init_accepted(init);
                    c.step(&mut w, Msg::Ack, vec![]).unwrap();
                }
                ServerStep::Reply(m) => {
                    c.step(&mut w, m, vec![]).unwrap();
                }
                ServerStep::Connect(name) => {
                    assert_eq!(name.text(), "if");
                    let parts = s.take_parts().unwrap();
                    assert_eq!(parts.regions.len(), 2);
                    assert_eq!((parts.s2m.len(), parts.m2s.len()), (2, 2));
                    let wake = std::sync::Arc::new(EventFd::new().unwrap());
                    let conn = super::super::conn::server_connection(
                        &parts.regions,
                        parts.s2m,
                        parts.m2s,
                        false,
                        ConnInfo::default(),
                        1,
                        wake,
                    )
                    .unwrap();
                    assert_eq!((conn.tx.len(), conn.rx.len()), (2, 2));
                    assert!(matches!(
                        c.step(&mut w, Msg::Connected(Name::truncated("srvif")), vec![]).unwrap(),
                        ClientStep::Connected(_)
                    ));
                    return;
                }
                ServerStep::PeerDisconnect(_) => panic!("unexpected disconnect"),
            }
            next = w.0.remove(0).0;
        }
    }

    #[test]
    fn refusals() {
        let mut s = ServerHandshake::new(limits());
        let bad = Init { version: 0x0100, ..Init::default() };
        assert_eq!(s.step(Msg::Init(bad), vec![]).unwrap_err().code, ErrCode::PROTO);
        let mut s = ServerHandshake::new(limits());
        assert_eq!(s.step(Msg::Ack, vec![]).unwrap_err().code, ErrCode::MFMSG);
        let mut s = ServerHandshake::new(limits());
        s.init_accepted(Init::default());
        // ADD_REGION without its memfd.
        assert_eq!(s.step(Msg::AddRegion(Default::default()), vec![]).unwrap_err().code, ErrCode::NO_SHMFD);
        let mut s = ServerHandshake::new(limits());
        s.init_accepted(Init::default());
        assert_eq!(s.step(Msg::Connect(Name::default()), vec![]).unwrap_err().code, ErrCode::NO_SHMFD);
        let mut c = ClientHandshake::new(wants());
        let mut w = Recorder::default();
        let hello = Msg::Hello(Hello { min_version: 0x0300, max_version: 0x0300, ..Hello::default() });
        assert_eq!(c.step(&mut w, hello, vec![]).unwrap_err().code, ErrCode::PROTO);
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        let small = 0u16..4;
        prop_oneof![
            Just(Msg::Ack),
            prop_oneof![Just(0x0200u16), any::<u16>()].prop_map(|v| Msg::Init(Init { version: v, ..Init::default() })),
            (small.clone(), any::<u64>())
                .prop_map(|(index, size)| Msg::AddRegion(super::super::wire::AddRegion { index, size: size % 8192 })),
            (0u16..3, small.clone(), small, any::<u32>(), 0u8..16, 0u16..2).prop_map(|t| Msg::AddRing(AddRing {
                flags: t.0,
                index: t.1,
                region: t.2,
                offset: t.3 % 8192,
                log2_ring_size: t.4,
                private_hdr_size: t.5
            })),
            Just(Msg::Connect(Name::default())),
            Just(Msg::Connected(Name::default())),
            Just(Msg::Hello(Hello::default())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// Any sequence of messages, with or without descriptors: the server never panics,
        /// and a CONNECT it accepts always maps and validates without crashing (garbage
        /// memfds of random sizes, random ring offsets).
        #[test]
        fn server_survives_any_sequence(msgs in prop::collection::vec((arb_msg(), 0usize..3, 0usize..3), 1..12)) {
            let mut s = ServerHandshake::new(limits());
            for (m, nfds, size_sel) in msgs {
                let fds: Vec<OwnedFd> = (0..nfds).map(|_| {
                    let f = crate::sys::fd::memfd("fuzz").unwrap();
                    crate::sys::fd::set_len(f.as_fd(), [0u64, 4096, 65536][size_sel]).unwrap();
                    if size_sel == 2 { crate::sys::fd::seal_size(f.as_fd()).unwrap(); }
                    f
                }).collect();
                match s.step(m, fds) {
                    Err(_) => break,
                    Ok(ServerStep::Init(i)) => s.init_accepted(i),
                    Ok(ServerStep::Connect(_)) => {
                        let p = s.take_parts().unwrap();
                        let wake = std::sync::Arc::new(EventFd::new().unwrap());
                        let _ = super::super::conn::server_connection(&p.regions, p.s2m, p.m2s, false, ConnInfo::default(), 0, wake);
                        break;
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}
