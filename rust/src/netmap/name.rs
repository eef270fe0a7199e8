//! libnetmap-style port names (the grammar of libnetmap's `nmreq_header_decode`,
//! `nmreq_register_decode` and `nmreq_options_decode`), restricted to what software pipes
//! can do:
//!
//! ```text
//! [netmap:]PORT{ID | [netmap:]PORT}ID   master / slave end of pipe ID of PORT
//! valeSW:PORT                           port PORT of the VALE switch valeSW
//!   -N           bind ring pair N only (NR_REG_ONE_NIC)
//!   /FLAGS       x exclusive, T TX rings only, R RX rings only
//!   @conf:K=V,.. rings, slots, tx-rings, rx-rings, tx-slots, rx-slots (host-* must be 0)
//! ```
//!
//! `PORT` and `ID` are identifiers (`[A-Za-z0-9_]+`). As in libnetmap, `-` in option keys is
//! read as `_`, a key may appear once, and `key=` (empty value) leaves it unset.
//!
//! What parses in libnetmap but a software pipe cannot do is refused with netmap's errno:
//! host rings (`^`, `^N`, `*`, `host-rings=`) give `EINVAL`; pipes of VALE ports
//! (`vale0:p{1`), monitors (`/t`, `/r`, `/z`), memory ids (`@N`) and the `extmem`, `share`
//! and `offset` options give `EOPNOTSUPP`. `SW` and `PORT` of a VALE name are identifiers;
//! the port name is at most 31 characters. Syntax errors are argument errors. A name without a pipe part (`eth0`) is
//! refused too: shmkit has no NICs.

use super::abi::{
    NETMAP_RING_MASK, NR_EXCLUSIVE, NR_MONITOR_RX, NR_MONITOR_TX, NR_REG_ALL_NIC, NR_REG_NIC_SW, NR_REG_ONE_NIC,
    NR_REG_ONE_SW, NR_REG_SW, NR_RX_RINGS_ONLY, NR_TX_RINGS_ONLY, NR_ZCOPY_MON, REQ_NAME_MAX,
};
use super::error::NetmapError;

/// Which end of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// `{`: the master end; its ring counts are the ones configured.
    Master,
    /// `}`: the slave end; it sees the master's TX/RX counts swapped.
    Slave,
}

impl End {
    /// The other end.
    pub fn peer(self) -> Self {
        match self {
            Self::Master => Self::Slave,
            Self::Slave => Self::Master,
        }
    }

    /// 0 for the master, 1 for the slave.
    pub fn index(self) -> usize {
        match self {
            Self::Master => 0,
            Self::Slave => 1,
        }
    }

    /// The separator character (`{` or `}`).
    pub fn sep(self) -> char {
        match self {
            Self::Master => '{',
            Self::Slave => '}',
        }
    }

    /// `"master"` or `"slave"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Slave => "slave",
        }
    }
}

/// Values of the `@conf:` option (`None`: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conf {
    /// `tx-rings` (or `rings`).
    pub tx_rings: Option<u32>,
    /// `rx-rings` (or `rings`).
    pub rx_rings: Option<u32>,
    /// `tx-slots` (or `slots`).
    pub tx_slots: Option<u32>,
    /// `rx-slots` (or `slots`).
    pub rx_slots: Option<u32>,
    /// `host-tx-rings` (or `host-rings`).
    pub host_tx_rings: Option<u32>,
    /// `host-rx-rings` (or `host-rings`).
    pub host_rx_rings: Option<u32>,
}

/// A parsed port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortName {
    /// The name as given.
    pub spec: String,
    /// The parent port (`pipe` in `pipe{3`).
    pub port: String,
    /// The pipe id (`3` in `pipe{3`).
    pub pipe_id: String,
    /// Which end.
    pub end: End,
    /// `NR_REG_*` mode.
    pub mode: u32,
    /// Ring id for `NR_REG_ONE_NIC`.
    pub ringid: u32,
    /// `NR_*` flags from `/...`.
    pub flags: u64,
    /// The `@conf:` values.
    pub conf: Conf,
    /// A VALE port: `port` is then the switch (`vale0`), `pipe_id` the port (`a`) and `end`
    /// the master (the port's rings are the master end of a pipe of its own).
    pub vale: bool,
}

impl PortName {
    /// The name of this end, `port{id` or `port}id` (what netmap calls the adapter).
    pub fn end_name(&self) -> String {
        if self.vale {
            return format!("{}:{}", self.port, self.pipe_id);
        }
        format!("{}{}{}", self.port, self.end.sep(), self.pipe_id)
    }

    /// The name of the pipe (its master end), shared by both ends. A VALE port's pipe is
    /// named like the port (`vale0:a`), which no pipe name can be.
    pub fn pipe_name(&self) -> String {
        if self.vale {
            return self.end_name();
        }
        format!("{}{{{}", self.port, self.pipe_id)
    }
}

fn is_ident(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn bad(spec: &str, reason: impl Into<String>) -> NetmapError {
    NetmapError::InvalidName { name: spec.to_owned(), reason: reason.into() }
}

fn unsupported(spec: &str, errno: i32, reason: impl Into<String>) -> NetmapError {
    NetmapError::Errno { errno, msg: format!("{spec}: {}", reason.into()) }
}

/// Parse a port name (see the module docs).
pub fn parse(spec: &str) -> Result<PortName, NetmapError> {
    if spec.is_empty() {
        return Err(bad(spec, "empty name"));
    }
    if !spec.is_ascii() {
        return Err(bad(spec, "names are ASCII"));
    }
    // Prefix.
    let mut rest = spec;
    let mut vale = false;
    if let Some(r) = rest.strip_prefix("netmap:") {
        rest = r;
    } else if rest.starts_with("vale") {
        if let Some(colon) = rest.find(':') {
            vale = is_ident(&rest[4..colon]);
        }
    }
    // The port name runs up to the first separator.
    let sep_at = rest.find(['-', '*', '^', '/', '@']).unwrap_or(rest.len());
    let (head, tail) = rest.split_at(sep_at);
    if head.len() > REQ_NAME_MAX {
        return Err(bad(spec, format!("name longer than {REQ_NAME_MAX} characters")));
    }
    let (port, pipe_id, end) = if vale { split_vale(spec, head)? } else { split_pipe(spec, head)? };
    let mut tail = tail;
    // Register part: mode, then flags, then options.
    let mut mode = NR_REG_ALL_NIC;
    let mut ringid = 0u32;
    let mut flags = 0u64;
    match tail.as_bytes().first() {
        Some(b'-') => {
            let digits = tail[1..].bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad(spec, format!("got {:?} while expecting a ring number", &tail[1..])));
            }
            let num: u64 = tail[1..1 + digits].parse().unwrap_or(u64::MAX);
            if num >= u64::from(NETMAP_RING_MASK) {
                return Err(bad(spec, format!("ring {num} out of range [0, {NETMAP_RING_MASK})")));
            }
            mode = NR_REG_ONE_NIC;
            ringid = num as u32;
            tail = &tail[1 + digits..];
        }
        Some(b'*') => {
            mode = NR_REG_NIC_SW;
            tail = &tail[1..];
        }
        Some(b'^') => {
            let digits = tail[1..].bytes().take_while(u8::is_ascii_digit).count();
            mode = if digits > 0 { NR_REG_ONE_SW } else { NR_REG_SW };
            tail = &tail[1 + digits..];
        }
        _ => {}
    }
    if let Some(f) = tail.strip_prefix('/') {
        let n = f.find('@').unwrap_or(f.len());
        if n == 0 {
            return Err(bad(spec, "empty flag list after '/'"));
        }
        for c in f[..n].chars() {
            flags |= match c {
                'x' => NR_EXCLUSIVE,
                'R' => NR_RX_RINGS_ONLY,
                'T' => NR_TX_RINGS_ONLY,
                'z' => NR_ZCOPY_MON,
                't' => NR_MONITOR_TX,
                'r' => NR_MONITOR_RX,
                other => return Err(bad(spec, format!("unrecognized flag {other:?}"))),
            };
        }
        tail = &f[n..];
    }
    let mut conf = Conf::default();
    if !tail.is_empty() {
        let Some(opts) = tail.strip_prefix('@') else {
            return Err(bad(spec, format!("unexpected {:?}", tail.chars().next().unwrap_or(' '))));
        };
        if opts.is_empty() {
            return Err(bad(spec, "invalid empty mem_id"));
        }
        if opts.as_bytes()[0].is_ascii_digit() {
            return Err(unsupported(
                spec,
                libc::EOPNOTSUPP,
                "memory ids are not supported: every pipe has its own allocator",
            ));
        }
        for opt in opts.split('@') {
            parse_option(spec, opt, &mut conf)?;
        }
    }

    // What pipes cannot do.
    if matches!(mode, NR_REG_SW | NR_REG_NIC_SW | NR_REG_ONE_SW) {
        return Err(unsupported(spec, libc::EINVAL, "software ports have no host rings"));
    }
    if flags & (NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON) != 0 {
        return Err(unsupported(spec, libc::EOPNOTSUPP, "monitor ports are not supported"));
    }
    if conf.host_tx_rings.is_some_and(|v| v != 0) || conf.host_rx_rings.is_some_and(|v| v != 0) {
        return Err(unsupported(spec, libc::EINVAL, "software ports have no host rings"));
    }
    Ok(PortName {
        spec: spec.to_owned(),
        port: port.to_owned(),
        pipe_id: pipe_id.to_owned(),
        end,
        mode,
        ringid,
        flags,
        conf,
        vale,
    })
}

/// Longest VALE port name (the switch's port table holds 32 bytes with a NUL).
pub const VALE_PORT_MAX: usize = 31;

/// `PORT{ID` / `PORT}ID` into (port, id, end).
fn split_pipe<'a>(spec: &str, head: &'a str) -> Result<(&'a str, &'a str, End), NetmapError> {
    let Some(pipe_at) = head.find(['{', '}']) else {
        if !is_ident(head) || head.is_empty() {
            return Err(bad(spec, "invalid port name"));
        }
        return Err(unsupported(
            spec,
            libc::EOPNOTSUPP,
            "shmkit provides netmap pipes and VALE ports only: name a pipe end as PORT{ID (master) or \
             PORT}ID (slave), a VALE port as valeX:Y",
        ));
    };
    let port = &head[..pipe_at];
    let end = if head.as_bytes()[pipe_at] == b'{' { End::Master } else { End::Slave };
    let pipe_id = &head[pipe_at + 1..];
    if port.is_empty() || !is_ident(port) {
        return Err(bad(spec, format!("invalid port name {port:?}")));
    }
    if pipe_id.is_empty() {
        return Err(bad(spec, "invalid empty pipe name"));
    }
    if !is_ident(pipe_id) {
        return Err(bad(spec, format!("invalid pipe name {pipe_id:?}")));
    }
    Ok((port, pipe_id, end))
}

/// `valeSW:PORT` into (switch, port, master).
fn split_vale<'a>(spec: &str, head: &'a str) -> Result<(&'a str, &'a str, End), NetmapError> {
    let (switch, port) = head.split_once(':').expect("the caller found the colon");
    if port.contains(['{', '}']) {
        return Err(unsupported(spec, libc::EOPNOTSUPP, "pipes of VALE ports are not supported"));
    }
    if port.is_empty() || !is_ident(port) {
        return Err(bad(spec, format!("invalid VALE port name {port:?}")));
    }
    if port.len() > VALE_PORT_MAX {
        return Err(bad(spec, format!("VALE port name longer than {VALE_PORT_MAX} characters")));
    }
    Ok((switch, port, End::Master))
}

fn parse_option(spec: &str, opt: &str, conf: &mut Conf) -> Result<(), NetmapError> {
    if opt.is_empty() {
        return Err(bad(spec, "invalid empty option"));
    }
    let delim_at = opt.find([':', '=']).unwrap_or(opt.len());
    let (prefix, body) = opt.split_at(delim_at);
    match prefix {
        "conf" => {}
        "extmem" | "share" | "offset" => {
            return Err(unsupported(spec, libc::EOPNOTSUPP, format!("option {prefix:?} is not supported")))
        }
        other => return Err(bad(spec, format!("unknown option {other:?}"))),
    }
    let Some(body) = body.strip_prefix(':') else {
        return Err(bad(spec, "option 'conf' needs 'conf:key=value,...'"));
    };
    let mut seen: Vec<String> = Vec::new();
    let mut pending = Conf::default();
    let (mut rings, mut slots, mut host_rings) = (None, None, None);
    for kv in body.split(',') {
        let (key, value) =
            kv.split_once('=').ok_or_else(|| bad(spec, format!("option 'conf': missing '=value' for key {kv:?}")))?;
        let key = key.replace('-', "_");
        if seen.contains(&key) {
            return Err(bad(spec, format!("option 'conf': duplicate key {key:?}")));
        }
        seen.push(key.clone());
        let value = if value.is_empty() {
            None
        } else {
            Some(
                value
                    .parse::<u32>()
                    .map_err(|_| bad(spec, format!("option 'conf': {key} needs a number, got {value:?}")))?,
            )
        };
        match key.as_str() {
            "rings" => rings = value,
            "slots" => slots = value,
            "host_rings" => host_rings = value,
            "tx_rings" => pending.tx_rings = value,
            "rx_rings" => pending.rx_rings = value,
            "tx_slots" => pending.tx_slots = value,
            "rx_slots" => pending.rx_slots = value,
            "host_tx_rings" => pending.host_tx_rings = value,
            "host_rx_rings" => pending.host_rx_rings = value,
            _ => return Err(bad(spec, format!("option 'conf': unknown key {key:?}"))),
        }
    }
    // libnetmap applies the combined keys first and the specific ones over them.
    conf.tx_rings = pending.tx_rings.or(rings).or(conf.tx_rings);
    conf.rx_rings = pending.rx_rings.or(rings).or(conf.rx_rings);
    conf.tx_slots = pending.tx_slots.or(slots).or(conf.tx_slots);
    conf.rx_slots = pending.rx_slots.or(slots).or(conf.rx_slots);
    conf.host_tx_rings = pending.host_tx_rings.or(host_rings).or(conf.host_tx_rings);
    conf.host_rx_rings = pending.host_rx_rings.or(host_rings).or(conf.host_rx_rings);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netmap::abi::NR_REG_ONE_NIC;

    fn errno(spec: &str) -> Option<i32> {
        match parse(spec) {
            Err(NetmapError::Errno { errno, .. }) => Some(errno),
            Err(NetmapError::InvalidName { .. }) => Some(0),
            Err(e) => panic!("{spec}: unexpected {e}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn pipes_and_suffixes() {
        let p = parse("pipe{3").unwrap();
        assert_eq!((p.port.as_str(), p.pipe_id.as_str(), p.end), ("pipe", "3", End::Master));
        assert_eq!((p.mode, p.flags), (NR_REG_ALL_NIC, 0));
        assert_eq!(p.end_name(), "pipe{3");
        let s = parse("netmap:pipe}3-2/xT@conf:rings=4,tx-slots=128").unwrap();
        assert_eq!((s.end, s.mode, s.ringid), (End::Slave, NR_REG_ONE_NIC, 2));
        assert_eq!(s.flags, NR_EXCLUSIVE | NR_TX_RINGS_ONLY);
        assert_eq!(s.conf.tx_rings, Some(4));
        assert_eq!(s.conf.rx_rings, Some(4));
        assert_eq!(s.conf.tx_slots, Some(128));
        assert_eq!(s.conf.rx_slots, None);
        assert_eq!(s.pipe_name(), "pipe{3");
        assert_eq!(s.end_name(), "pipe}3");
        let r = parse("a_b{x_1/R@conf:slots=64@conf:rx-slots=32").unwrap();
        assert_eq!((r.flags, r.conf.tx_slots, r.conf.rx_slots), (NR_RX_RINGS_ONLY, Some(64), Some(32)));
        assert_eq!(parse("p{0@conf:host-rings=0").unwrap().conf.host_tx_rings, Some(0));
        assert_eq!(parse("p{0@conf:rings=").unwrap().conf.tx_rings, None);
    }

    #[test]
    fn refusals() {
        for spec in [
            "",
            "pipe{",
            "{3",
            "pi pe{3",
            "pipe{3-",
            "pipe{3-x",
            "pipe{3/q",
            "pipe{3/",
            "pipe{3@",
            "pipe{3@bogus:x=1",
            "pipe{3@conf:nope=1",
            "pipe{3@conf:rings=1,rings=2",
            "pipe{3@conf:rings",
            "pipe{3@conf:rings=a",
            "pipe{3-4095",
            "pipe{3#",
            "pipe{3-1-2",
            "pipe{3@conf",
        ] {
            assert_eq!(errno(spec), Some(0), "{spec:?} should be a syntax error");
        }
        for spec in ["pipe{3^", "pipe{3^1", "pipe{3*", "pipe{3@conf:host-rings=1", "pipe{3@conf:host-tx-rings=2"] {
            assert_eq!(errno(spec), Some(libc::EINVAL), "{spec:?} asks for host rings");
        }
        for spec in ["vale0:p{1", "eth0", "netmap:eth0", "pipe{3/t", "pipe{3/z", "pipe{3@1", "pipe{3@extmem:file=/x"] {
            assert_eq!(errno(spec), Some(libc::EOPNOTSUPP), "{spec:?} is not a pipe feature");
        }
        assert_eq!(errno(&format!("{}{{1", "p".repeat(70))), Some(0));
    }

    #[test]
    fn vale_names() {
        let v = parse("vale0:a").unwrap();
        assert!(v.vale);
        assert_eq!((v.port.as_str(), v.pipe_id.as_str(), v.end), ("vale0", "a", End::Master));
        assert_eq!((v.end_name(), v.pipe_name()), ("vale0:a".to_owned(), "vale0:a".to_owned()));
        let w = parse("valeX_1:p_2-1/T@conf:rings=2,slots=256").unwrap();
        assert!(w.vale);
        assert_eq!((w.mode, w.ringid, w.flags), (NR_REG_ONE_NIC, 1, NR_TX_RINGS_ONLY));
        assert_eq!((w.conf.tx_rings, w.conf.rx_slots), (Some(2), Some(256)));
        assert_eq!(errno("vale0:"), Some(0));
        assert_eq!(errno("vale0:a.b"), Some(0));
        assert_eq!(errno(&format!("vale0:{}", "p".repeat(32))), Some(0));
        assert_eq!(errno("vale0:p*"), Some(libc::EINVAL));
        assert_eq!(errno("vale0:p{1"), Some(libc::EOPNOTSUPP));
        assert!(!parse("pipe{1").unwrap().vale);
    }
}
