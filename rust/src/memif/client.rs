//! The client's control thread: connect, run the handshake, install the connection, watch
//! for faults and disconnects, and reconnect on a timer (libmemif's slave role).
//!
//! The thread owns its socket; it sleeps in `poll(2)` on the socket and the interface's wake
//! eventfd and wakes at least every [`TICK`] for its timers (handshake deadline, reconnect
//! interval).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::conn::Connection;
use super::control::{recv_msg, ClientHandshake, ClientStep, ClientWants, Incoming, Refusal, Wire};
use super::error::ErrCode;
use super::shared::{Config, Shared, TICK};
use super::wire::Msg;
use crate::sys::eventfd::EventFd;
use crate::sys::poll;
use crate::sys::socket::SeqPacket;

struct ClientSession {
    sock: SeqPacket,
    hs: ClientHandshake,
    deadline: Instant,
    conn: Option<Arc<Connection>>,
}

fn client_wants(cfg: &Config, polling: bool) -> ClientWants {
    ClientWants {
        id: cfg.id,
        mode: cfg.mode as u8,
        secret: cfg.secret.clone(),
        app_name: cfg.app_name.clone(),
        if_name: cfg.if_name.clone(),
        rings: cfg.rings,
        log2_ring_size: cfg.log2_ring_size,
        buffer_size: cfg.buffer_size,
        polling,
    }
}

pub(super) fn client_main(sh: Arc<Shared>, wake: Arc<EventFd>) {
    let cfg = sh.cfg.clone();
    let mut session: Option<ClientSession> = None;
    let mut next_attempt = Instant::now();
    // End the session: a refusal goes out as DISCONNECT (best effort) and is recorded.
    let end = |session: &mut Option<ClientSession>, refusal: Option<&Refusal>, code: u32, reason: &str| {
        if let Some(s) = session.take() {
            if let Some(r) = refusal {
                let _ = (&s.sock).send_msg(&r.message(), &[]);
            }
            if s.conn.is_some() {
                sh.teardown(code, reason);
            } else {
                sh.refused(code, reason);
            }
        }
    };
    loop {
        if sh.closed.load(Ordering::Acquire) {
            end(&mut session, Some(&Refusal::goodbye()), ErrCode::DISCONNECTED as u32, "interface closed");
            return;
        }
        let now = Instant::now();
        if session.is_none() && now >= next_attempt {
            match cfg.access.connect(&cfg.socket) {
                Ok(sock) => {
                    let wants = client_wants(&cfg, sh.polling.load(Ordering::Acquire));
                    session = Some(ClientSession {
                        sock,
                        hs: ClientHandshake::new(wants),
                        deadline: now + cfg.handshake_timeout,
                        conn: None,
                    });
                }
                Err((code, reason)) => {
                    sh.refused(code as u32, &reason);
                    next_attempt = now + cfg.reconnect_interval;
                }
            }
        }
        let timeout = match &session {
            Some(s) if s.conn.is_none() => s.deadline.saturating_duration_since(now),
            Some(_) => TICK,
            None => next_attempt.saturating_duration_since(now),
        }
        .min(TICK);
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![wake.as_fd()];
            if let Some(s) = &session {
                fds.push(s.sock.as_fd());
            }
            poll::readable_many(&fds, timeout.as_millis().max(1) as i32).unwrap_or_default()
        };
        if ready.first() == Some(&true) {
            let _ = wake.drain();
        }
        // Faults found by the data path.
        if let Some(fault) = session.as_ref().and_then(|s| s.conn.as_ref()).and_then(|c| c.take_fault()) {
            let r = Refusal::new(fault.0, fault.1);
            sh.count_violation();
            end(&mut session, Some(&r), r.code as u32, &format!("protocol violation by the peer: {}", r.reason));
            next_attempt = Instant::now() + cfg.reconnect_interval;
            continue;
        }
        if ready.get(1) == Some(&true) {
            while let Some(s) = session.as_mut() {
                let step = match recv_msg(&s.sock) {
                    Ok(Incoming::Nothing) => break,
                    Ok(Incoming::Eof) => {
                        Err((None, ErrCode::DISCONNECTED as u32, "peer closed the control channel".to_string()))
                    }
                    Ok(Incoming::Msg(msg, fds)) => {
                        if s.conn.is_some() {
                            match msg {
                                Msg::Disconnect(d) => {
                                    Err((None, d.code, format!("peer disconnected: {}", d.reason.text())))
                                }
                                other => {
                                    let r = Refusal::new(
                                        ErrCode::MFMSG,
                                        format!("unexpected {} while connected", other.type_name()),
                                    );
                                    let reason = r.reason.clone();
                                    Err((Some(r), ErrCode::MFMSG as u32, reason))
                                }
                            }
                        } else {
                            let mut w = &s.sock;
                            match s.hs.step(&mut w, msg, fds) {
                                Ok(ClientStep::Continue) => Ok(()),
                                Ok(ClientStep::Connected(name)) => {
                                    let pid = s.sock.peer_pid().ok();
                                    let info = s.hs.info(&name, pid);
                                    let generation = sh.next_generation();
                                    match s.hs.plan.take().map(|p| p.into_connection(info, generation, wake.clone())) {
                                        Some(Ok(c)) => {
                                            let c = Arc::new(c);
                                            s.conn = Some(c.clone());
                                            sh.install(c);
                                            Ok(())
                                        }
                                        Some(Err(e)) => {
                                            let r = Refusal::new(e.code(), e.to_string());
                                            let reason = r.reason.clone();
                                            Err((Some(r), e.code() as u32, reason))
                                        }
                                        None => Err((None, ErrCode::NOMEM as u32, "no memory plan".into())),
                                    }
                                }
                                Ok(ClientStep::PeerDisconnect(d)) => {
                                    Err((None, d.code, format!("refused by the server: {}", d.reason.text())))
                                }
                                Err(r) => {
                                    let reason = r.reason.clone();
                                    let code = r.code as u32;
                                    Err((Some(r), code, reason))
                                }
                            }
                        }
                    }
                    Err(r) => {
                        let reason = r.reason.clone();
                        let code = r.code as u32;
                        Err((Some(r), code, reason))
                    }
                };
                if let Err((refusal, code, reason)) = step {
                    end(&mut session, refusal.as_ref(), code, &reason);
                    next_attempt = Instant::now() + cfg.reconnect_interval;
                    break;
                }
            }
        }
        if let Some(s) = &session {
            if s.conn.is_none() && Instant::now() >= s.deadline {
                let r = Refusal::new(ErrCode::SYSCALL, "handshake timed out");
                end(&mut session, Some(&r), r.code as u32, "handshake timed out");
                next_attempt = Instant::now() + cfg.reconnect_interval;
            }
        }
    }
}
