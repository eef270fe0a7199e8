//! memif control messages, byte-exact (protocol 0x0200).
//!
//! Every message is `sizeof(memif_msg_t)` = 128 bytes on the wire: a little-endian `u16`
//! type followed by a packed payload (libmemif `memif.h`, DPDK `rte_eth_memif.h`). Encoding
//! and decoding go through explicit byte offsets, so the layout is visible in one place and
//! no packed-struct reference tricks are needed; the `const` assertions below pin every
//! offset to the C layout.
//!
//! Decoding is total: any 128 bytes decode to a message or a [`WireError`], never a panic. A
//! message of any other size is malformed.

use std::fmt;

/// Size of every control message.
pub const MSG_SIZE: usize = 128;
/// Protocol version 2.0.
pub const VERSION: u16 = 0x0200;
/// Length of the name fields (interface and application names).
pub const NAME_LEN: usize = 32;
/// Length of the secret field.
pub const SECRET_LEN: usize = 24;
/// Length of the DISCONNECT reason.
pub const DISCONNECT_STRING_LEN: usize = 96;

/// Message type numbers.
pub mod msg_type {
    /// Never valid on the wire.
    pub const NONE: u16 = 0;
    /// Reply to INIT, ADD_REGION and ADD_RING.
    pub const ACK: u16 = 1;
    /// Server's greeting with its limits.
    pub const HELLO: u16 = 2;
    /// Client's request: version, interface id, mode, secret, name.
    pub const INIT: u16 = 3;
    /// A shared-memory region (memfd attached).
    pub const ADD_REGION: u16 = 4;
    /// A ring (eventfd attached).
    pub const ADD_RING: u16 = 5;
    /// Client: everything is described, connect.
    pub const CONNECT: u16 = 6;
    /// Server: connected.
    pub const CONNECTED: u16 = 7;
    /// Either side: going away, with a reason.
    pub const DISCONNECT: u16 = 8;
}

/// Offset of the payload in a message (after the `u16` type).
pub const PAYLOAD: usize = 2;

/// HELLO payload offsets.
pub mod hello {
    /// `u8 name[32]`
    pub const NAME: usize = 0;
    /// `u16 min_version`
    pub const MIN_VERSION: usize = 32;
    /// `u16 max_version`
    pub const MAX_VERSION: usize = 34;
    /// `u16 max_region` (an index)
    pub const MAX_REGION: usize = 36;
    /// `u16 max_m2s_ring` (an index)
    pub const MAX_M2S_RING: usize = 38;
    /// `u16 max_s2m_ring` (an index)
    pub const MAX_S2M_RING: usize = 40;
    /// `u8 max_log2_ring_size`
    pub const MAX_LOG2_RING_SIZE: usize = 42;
    /// Payload size.
    pub const SIZE: usize = 43;
}

/// INIT payload offsets.
pub mod init {
    /// `u16 version`
    pub const VERSION: usize = 0;
    /// `u32 id`
    pub const ID: usize = 2;
    /// `u8 mode`
    pub const MODE: usize = 6;
    /// `u8 secret[24]`
    pub const SECRET: usize = 7;
    /// `u8 name[32]`
    pub const NAME: usize = 31;
    /// Payload size.
    pub const SIZE: usize = 63;
}

/// ADD_REGION payload offsets.
pub mod add_region {
    /// `u16 index`
    pub const INDEX: usize = 0;
    /// `u64 size`
    pub const SIZE_FIELD: usize = 2;
    /// Payload size.
    pub const SIZE: usize = 10;
}

/// ADD_RING payload offsets.
pub mod add_ring {
    /// `u16 flags` (bit 0: S2M)
    pub const FLAGS: usize = 0;
    /// `u16 index`
    pub const INDEX: usize = 2;
    /// `u16 region`
    pub const REGION: usize = 4;
    /// `u32 offset` (of the ring header in the region)
    pub const OFFSET: usize = 6;
    /// `u8 log2_ring_size`
    pub const LOG2_RING_SIZE: usize = 10;
    /// `u16 private_hdr_size`
    pub const PRIVATE_HDR_SIZE: usize = 11;
    /// Payload size.
    pub const SIZE: usize = 13;
    /// Flag bit: the ring carries slave-to-master (client-to-server) traffic.
    pub const FLAG_S2M: u16 = 1;
}

/// CONNECT / CONNECTED payload: `u8 if_name[32]`.
pub mod connect {
    /// Payload size.
    pub const SIZE: usize = 32;
}

/// DISCONNECT payload offsets.
pub mod disconnect {
    /// `u32 code`
    pub const CODE: usize = 0;
    /// `u8 string[96]`
    pub const STRING: usize = 4;
    /// Payload size.
    pub const SIZE: usize = 100;
}

// The C layout, field by field: each field starts where the previous one ends (packed).
const _: () = assert!(hello::MIN_VERSION == hello::NAME + NAME_LEN);
const _: () = assert!(hello::MAX_VERSION == hello::MIN_VERSION + 2);
const _: () = assert!(hello::MAX_REGION == hello::MAX_VERSION + 2);
const _: () = assert!(hello::MAX_M2S_RING == hello::MAX_REGION + 2);
const _: () = assert!(hello::MAX_S2M_RING == hello::MAX_M2S_RING + 2);
const _: () = assert!(hello::MAX_LOG2_RING_SIZE == hello::MAX_S2M_RING + 2);
const _: () = assert!(hello::SIZE == hello::MAX_LOG2_RING_SIZE + 1);
const _: () = assert!(init::ID == init::VERSION + 2);
const _: () = assert!(init::MODE == init::ID + 4);
const _: () = assert!(init::SECRET == init::MODE + 1);
const _: () = assert!(init::NAME == init::SECRET + SECRET_LEN);
const _: () = assert!(init::SIZE == init::NAME + NAME_LEN);
const _: () = assert!(add_region::SIZE_FIELD == add_region::INDEX + 2);
const _: () = assert!(add_region::SIZE == add_region::SIZE_FIELD + 8);
const _: () = assert!(add_ring::INDEX == add_ring::FLAGS + 2);
const _: () = assert!(add_ring::REGION == add_ring::INDEX + 2);
const _: () = assert!(add_ring::OFFSET == add_ring::REGION + 2);
const _: () = assert!(add_ring::LOG2_RING_SIZE == add_ring::OFFSET + 4);
const _: () = assert!(add_ring::PRIVATE_HDR_SIZE == add_ring::LOG2_RING_SIZE + 1);
const _: () = assert!(add_ring::SIZE == add_ring::PRIVATE_HDR_SIZE + 2);
const _: () = assert!(connect::SIZE == NAME_LEN);
const _: () = assert!(disconnect::STRING == disconnect::CODE + 4);
const _: () = assert!(disconnect::SIZE == disconnect::STRING + DISCONNECT_STRING_LEN);
// The union's largest member (DISCONNECT) plus the type fits in the fixed message size.
const _: () = assert!(PAYLOAD + disconnect::SIZE <= MSG_SIZE);
const _: () = assert!(PAYLOAD + init::SIZE <= MSG_SIZE && PAYLOAD + hello::SIZE <= MSG_SIZE);

/// A fixed-size, NUL-padded byte string field (names, secret, reason).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedStr<const N: usize>(pub [u8; N]);

impl<const N: usize> FixedStr<N> {
    /// From bytes; `None` if longer than `N`.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > N {
            return None;
        }
        let mut a = [0u8; N];
        a[..bytes.len()].copy_from_slice(bytes);
        Some(Self(a))
    }

    /// From a string, cut at `N` bytes (on a character boundary).
    pub fn truncated(s: &str) -> Self {
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Self::new(&s.as_bytes()[..end]).unwrap_or(Self([0; N]))
    }

    /// The bytes up to the first NUL (C-string semantics, as the peers compare them).
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        &self.0[..end]
    }

    /// Lossy UTF-8 text up to the first NUL.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

/// A name field.
pub type Name = FixedStr<NAME_LEN>;
/// The secret field.
pub type Secret = FixedStr<SECRET_LEN>;
/// The DISCONNECT reason.
pub type Reason = FixedStr<DISCONNECT_STRING_LEN>;

/// HELLO: the server's name, supported versions and limits (maxima are *indexes*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hello {
    /// Server application name.
    pub name: Name,
    /// Lowest supported version.
    pub min_version: u16,
    /// Highest supported version.
    pub max_version: u16,
    /// Highest region index accepted.
    pub max_region: u16,
    /// Highest M2S (server-to-client) ring index accepted.
    pub max_m2s_ring: u16,
    /// Highest S2M (client-to-server) ring index accepted.
    pub max_s2m_ring: u16,
    /// Largest log2 ring size accepted.
    pub max_log2_ring_size: u8,
}

/// INIT: the client asks for interface `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Init {
    /// Protocol version the client speaks.
    pub version: u16,
    /// Interface id.
    pub id: u32,
    /// Interface mode (0 ethernet, 1 ip, 2 punt/inject).
    pub mode: u8,
    /// Secret (clear text; NUL-padded).
    pub secret: Secret,
    /// Client application name.
    pub name: Name,
}

/// ADD_REGION: region `index` of `size` bytes (its memfd rides along).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddRegion {
    /// Region index.
    pub index: u16,
    /// Region size in bytes.
    pub size: u64,
}

/// ADD_RING: ring `index` in `region` at `offset` (its eventfd rides along).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddRing {
    /// Flags (bit 0: S2M).
    pub flags: u16,
    /// Ring index within its direction.
    pub index: u16,
    /// Region holding the ring.
    pub region: u16,
    /// Offset of the ring header in the region.
    pub offset: u32,
    /// log2 of the number of descriptors.
    pub log2_ring_size: u8,
    /// Private header size (must be 0).
    pub private_hdr_size: u16,
}

impl AddRing {
    /// Whether this is a client-to-server ring.
    pub fn is_s2m(&self) -> bool {
        self.flags & add_ring::FLAG_S2M != 0
    }
}

/// DISCONNECT: a code and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Error code (shmkit sends libmemif's `memif_err_t`; peers send anything).
    pub code: u32,
    /// Human-readable reason.
    pub reason: Reason,
}

/// One control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// ACK
    Ack,
    /// HELLO
    Hello(Hello),
    /// INIT
    Init(Init),
    /// ADD_REGION
    AddRegion(AddRegion),
    /// ADD_RING
    AddRing(AddRing),
    /// CONNECT with the client's interface name
    Connect(Name),
    /// CONNECTED with the server's interface name
    Connected(Name),
    /// DISCONNECT
    Disconnect(Disconnect),
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not exactly [`MSG_SIZE`] bytes.
    #[error("control message of {0} bytes (must be {MSG_SIZE})")]
    Size(usize),
    /// Type 0 or above 8.
    #[error("unknown control message type {0}")]
    UnknownType(u16),
}

fn u16_at(b: &[u8; MSG_SIZE], off: usize) -> u16 {
    u16::from_le_bytes([b[PAYLOAD + off], b[PAYLOAD + off + 1]])
}

fn u32_at(b: &[u8; MSG_SIZE], off: usize) -> u32 {
    let o = PAYLOAD + off;
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8; MSG_SIZE], off: usize) -> u64 {
    let o = PAYLOAD + off;
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn str_at<const N: usize>(b: &[u8; MSG_SIZE], off: usize) -> FixedStr<N> {
    let o = PAYLOAD + off;
    let mut a = [0u8; N];
    a.copy_from_slice(&b[o..o + N]);
    FixedStr(a)
}

fn put(b: &mut [u8; MSG_SIZE], off: usize, bytes: &[u8]) {
    b[PAYLOAD + off..PAYLOAD + off + bytes.len()].copy_from_slice(bytes);
}

impl Msg {
    /// The message type number.
    pub fn type_id(&self) -> u16 {
        match self {
            Msg::Ack => msg_type::ACK,
            Msg::Hello(_) => msg_type::HELLO,
            Msg::Init(_) => msg_type::INIT,
            Msg::AddRegion(_) => msg_type::ADD_REGION,
            Msg::AddRing(_) => msg_type::ADD_RING,
            Msg::Connect(_) => msg_type::CONNECT,
            Msg::Connected(_) => msg_type::CONNECTED,
            Msg::Disconnect(_) => msg_type::DISCONNECT,
        }
    }

    /// The message's name as in the spec.
    pub fn type_name(&self) -> &'static str {
        match self {
            Msg::Ack => "ACK",
            Msg::Hello(_) => "HELLO",
            Msg::Init(_) => "INIT",
            Msg::AddRegion(_) => "ADD_REGION",
            Msg::AddRing(_) => "ADD_RING",
            Msg::Connect(_) => "CONNECT",
            Msg::Connected(_) => "CONNECTED",
            Msg::Disconnect(_) => "DISCONNECT",
        }
    }

    /// The 128 wire bytes (unused bytes zero).
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[..2].copy_from_slice(&self.type_id().to_le_bytes());
        match self {
            Msg::Ack => {}
            Msg::Hello(h) => {
                put(&mut b, hello::NAME, &h.name.0);
                put(&mut b, hello::MIN_VERSION, &h.min_version.to_le_bytes());
                put(&mut b, hello::MAX_VERSION, &h.max_version.to_le_bytes());
                put(&mut b, hello::MAX_REGION, &h.max_region.to_le_bytes());
                put(&mut b, hello::MAX_M2S_RING, &h.max_m2s_ring.to_le_bytes());
                put(&mut b, hello::MAX_S2M_RING, &h.max_s2m_ring.to_le_bytes());
                put(&mut b, hello::MAX_LOG2_RING_SIZE, &[h.max_log2_ring_size]);
            }
            Msg::Init(i) => {
                put(&mut b, init::VERSION, &i.version.to_le_bytes());
                put(&mut b, init::ID, &i.id.to_le_bytes());
                put(&mut b, init::MODE, &[i.mode]);
                put(&mut b, init::SECRET, &i.secret.0);
                put(&mut b, init::NAME, &i.name.0);
            }
            Msg::AddRegion(r) => {
                put(&mut b, add_region::INDEX, &r.index.to_le_bytes());
                put(&mut b, add_region::SIZE_FIELD, &r.size.to_le_bytes());
            }
            Msg::AddRing(r) => {
                put(&mut b, add_ring::FLAGS, &r.flags.to_le_bytes());
                put(&mut b, add_ring::INDEX, &r.index.to_le_bytes());
                put(&mut b, add_ring::REGION, &r.region.to_le_bytes());
                put(&mut b, add_ring::OFFSET, &r.offset.to_le_bytes());
                put(&mut b, add_ring::LOG2_RING_SIZE, &[r.log2_ring_size]);
                put(&mut b, add_ring::PRIVATE_HDR_SIZE, &r.private_hdr_size.to_le_bytes());
            }
            Msg::Connect(n) | Msg::Connected(n) => put(&mut b, 0, &n.0),
            Msg::Disconnect(d) => {
                put(&mut b, disconnect::CODE, &d.code.to_le_bytes());
                put(&mut b, disconnect::STRING, &d.reason.0);
            }
        }
        b
    }

    /// Decode exactly one message. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Msg, WireError> {
        let b: &[u8; MSG_SIZE] = bytes.try_into().map_err(|_| WireError::Size(bytes.len()))?;
        let t = u16::from_le_bytes([b[0], b[1]]);
        Ok(match t {
            msg_type::ACK => Msg::Ack,
            msg_type::HELLO => Msg::Hello(Hello {
                name: str_at(b, hello::NAME),
                min_version: u16_at(b, hello::MIN_VERSION),
                max_version: u16_at(b, hello::MAX_VERSION),
                max_region: u16_at(b, hello::MAX_REGION),
                max_m2s_ring: u16_at(b, hello::MAX_M2S_RING),
                max_s2m_ring: u16_at(b, hello::MAX_S2M_RING),
                max_log2_ring_size: b[PAYLOAD + hello::MAX_LOG2_RING_SIZE],
            }),
            msg_type::INIT => Msg::Init(Init {
                version: u16_at(b, init::VERSION),
                id: u32_at(b, init::ID),
                mode: b[PAYLOAD + init::MODE],
                secret: str_at(b, init::SECRET),
                name: str_at(b, init::NAME),
            }),
            msg_type::ADD_REGION => Msg::AddRegion(AddRegion {
                index: u16_at(b, add_region::INDEX),
                size: u64_at(b, add_region::SIZE_FIELD),
            }),
            msg_type::ADD_RING => Msg::AddRing(AddRing {
                flags: u16_at(b, add_ring::FLAGS),
                index: u16_at(b, add_ring::INDEX),
                region: u16_at(b, add_ring::REGION),
                offset: u32_at(b, add_ring::OFFSET),
                log2_ring_size: b[PAYLOAD + add_ring::LOG2_RING_SIZE],
                private_hdr_size: u16_at(b, add_ring::PRIVATE_HDR_SIZE),
            }),
            msg_type::CONNECT => Msg::Connect(str_at(b, 0)),
            msg_type::CONNECTED => Msg::Connected(str_at(b, 0)),
            msg_type::DISCONNECT => {
                Msg::Disconnect(Disconnect { code: u32_at(b, disconnect::CODE), reason: str_at(b, disconnect::STRING) })
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }

    /// Whether this message type carries a file descriptor (ADD_REGION: memfd; ADD_RING:
    /// eventfd).
    pub fn carries_fd(&self) -> bool {
        matches!(self, Msg::AddRegion(_) | Msg::AddRing(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes() {
        // HELLO as a libmemif server sends it, byte by byte.
        let h = Msg::Hello(Hello {
            name: Name::truncated("srv"),
            min_version: VERSION,
            max_version: VERSION,
            max_region: 255,
            max_m2s_ring: 1,
            max_s2m_ring: 2,
            max_log2_ring_size: 14,
        });
        let b = h.encode();
        assert_eq!(&b[..2], &[2, 0]);
        assert_eq!(&b[2..5], b"srv");
        assert_eq!(&b[34..36], &[0x00, 0x02]);
        assert_eq!(&b[38..40], &[255, 0]);
        assert_eq!(&b[40..42], &[1, 0]);
        assert_eq!(&b[42..44], &[2, 0]);
        assert_eq!(b[44], 14);
        assert!(b[45..].iter().all(|&x| x == 0));

        let r = Msg::AddRing(AddRing {
            flags: 1,
            index: 3,
            region: 0,
            offset: 0x1234_5678,
            log2_ring_size: 10,
            private_hdr_size: 0,
        });
        let b = r.encode();
        assert_eq!(&b[..2], &[5, 0]);
        assert_eq!(&b[2..4], &[1, 0]);
        assert_eq!(&b[4..6], &[3, 0]);
        assert_eq!(&b[8..12], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(b[12], 10);

        let i = Msg::Init(Init {
            version: VERSION,
            id: 7,
            mode: 1,
            secret: Secret::truncated("s3"),
            name: Name::truncated("c"),
        });
        let b = i.encode();
        assert_eq!(&b[2..4], &[0, 2]);
        assert_eq!(&b[4..8], &[7, 0, 0, 0]);
        assert_eq!(b[8], 1);
        assert_eq!(&b[9..11], b"s3");
        assert_eq!(b[33], b'c');

        let d = Msg::Disconnect(Disconnect { code: 25, reason: Reason::truncated("unmatched interface id") });
        let b = d.encode();
        assert_eq!(&b[2..6], &[25, 0, 0, 0]);
        assert_eq!(&b[6..28], b"unmatched interface id");
    }

    #[test]
    fn sizes_and_types_rejected() {
        assert_eq!(Msg::decode(&[0u8; 127]), Err(WireError::Size(127)));
        assert_eq!(Msg::decode(&[0u8; 128]), Err(WireError::UnknownType(0)));
        let mut b = [0u8; 128];
        b[0] = 9;
        assert_eq!(Msg::decode(&b), Err(WireError::UnknownType(9)));
    }

    /// 128 bytes of message type `t` with `fields` (payload offset, bytes) written in.
    fn raw(t: u16, fields: &[(usize, &[u8])]) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[..2].copy_from_slice(&t.to_le_bytes());
        for (off, bytes) in fields {
            b[PAYLOAD + off..PAYLOAD + off + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    /// Decoding reads every field from its C offset (bytes built by hand, not by `encode`),
    /// and encoding writes the same bytes back.
    #[test]
    fn golden_decode_of_every_type() {
        let cases = [
            (raw(1, &[]), Msg::Ack),
            (
                raw(
                    2,
                    &[
                        (0, b"vpp"),
                        (32, &[0x00, 0x02]),
                        (34, &[0x01, 0x02]),
                        (36, &[3, 1]),
                        (38, &[4, 0]),
                        (40, &[5, 0]),
                        (42, &[15]),
                    ],
                ),
                Msg::Hello(Hello {
                    name: Name::truncated("vpp"),
                    min_version: 0x0200,
                    max_version: 0x0201,
                    max_region: 0x0103,
                    max_m2s_ring: 4,
                    max_s2m_ring: 5,
                    max_log2_ring_size: 15,
                }),
            ),
            (
                raw(
                    3,
                    &[(0, &[0x00, 0x02]), (2, &[0x78, 0x56, 0x34, 0x12]), (6, &[2]), (7, b"secret"), (31, b"client")],
                ),
                Msg::Init(Init {
                    version: 0x0200,
                    id: 0x1234_5678,
                    mode: 2,
                    secret: Secret::truncated("secret"),
                    name: Name::truncated("client"),
                }),
            ),
            (
                raw(4, &[(0, &[7, 1]), (2, &[1, 2, 3, 4, 5, 6, 7, 0x80])]),
                Msg::AddRegion(AddRegion { index: 0x0107, size: 0x8007_0605_0403_0201 }),
            ),
            (
                raw(
                    5,
                    &[
                        (0, &[1, 0]),
                        (2, &[2, 1]),
                        (4, &[3, 0]),
                        (6, &[0, 0x10, 0, 0x80]),
                        (10, &[12]),
                        (11, &[0x34, 0x12]),
                    ],
                ),
                Msg::AddRing(AddRing {
                    flags: 1,
                    index: 0x0102,
                    region: 3,
                    offset: 0x8000_1000,
                    log2_ring_size: 12,
                    private_hdr_size: 0x1234,
                }),
            ),
            (raw(6, &[(0, b"memif0/0")]), Msg::Connect(Name::truncated("memif0/0"))),
            (raw(7, &[(0, b"memif0/1")]), Msg::Connected(Name::truncated("memif0/1"))),
            (
                raw(8, &[(0, &[25, 0, 0, 0x80]), (4, b"bye")]),
                Msg::Disconnect(Disconnect { code: 0x8000_0019, reason: Reason::truncated("bye") }),
            ),
        ];
        for (bytes, msg) in cases {
            assert_eq!(Msg::decode(&bytes), Ok(msg), "{}", msg.type_name());
            assert_eq!(msg.encode(), bytes, "{}", msg.type_name());
            assert_eq!(msg.type_id(), u16::from_le_bytes([bytes[0], bytes[1]]));
        }
        // Fields end exactly where the C layout says: a byte past the last field is ignored.
        let mut b = raw(4, &[(0, &[1, 0]), (2, &[8, 0, 0, 0, 0, 0, 0, 0])]);
        b[PAYLOAD + add_region::SIZE] = 0xff;
        assert_eq!(Msg::decode(&b), Ok(Msg::AddRegion(AddRegion { index: 1, size: 8 })));
    }

    /// The field readers take offsets into the payload (after the type), at any offset.
    #[test]
    fn field_readers_take_payload_offsets() {
        let mut b = [0u8; MSG_SIZE];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        assert_eq!(u16_at(&b, 0), 0x0302);
        assert_eq!(u16_at(&b, 5), 0x0807);
        assert_eq!(u32_at(&b, 3), 0x0807_0605);
        assert_eq!(u64_at(&b, 2), 0x0b0a_0908_0706_0504);
        assert_eq!(u64_at(&b, 7), 0x100f_0e0d_0c0b_0a09);
        assert_eq!(str_at::<3>(&b, 4).0, [6, 7, 8]);
        let mut c = [0u8; MSG_SIZE];
        put(&mut c, 3, &[1, 2]);
        assert_eq!(c[5..7], [1, 2]);
    }

    #[test]
    fn type_names_and_fd_carriers() {
        let all = [
            (Msg::Ack, "ACK", false),
            (Msg::Hello(Hello::default()), "HELLO", false),
            (Msg::Init(Init::default()), "INIT", false),
            (Msg::AddRegion(AddRegion::default()), "ADD_REGION", true),
            (Msg::AddRing(AddRing::default()), "ADD_RING", true),
            (Msg::Connect(Name::default()), "CONNECT", false),
            (Msg::Connected(Name::default()), "CONNECTED", false),
            (Msg::Disconnect(Disconnect::default()), "DISCONNECT", false),
        ];
        for (i, (m, name, fd)) in all.into_iter().enumerate() {
            assert_eq!(m.type_id(), i as u16 + 1);
            assert_eq!(m.type_name(), name);
            assert_eq!(m.carries_fd(), fd, "{name}");
        }
    }

    #[test]
    fn ring_direction_is_bit_zero() {
        let ring = |flags| AddRing { flags, ..AddRing::default() };
        assert!(!ring(0).is_s2m());
        assert!(ring(1).is_s2m());
        assert!(!ring(2).is_s2m());
        assert!(ring(0xffff).is_s2m());
        assert!(!ring(0xfffe).is_s2m());
    }

    #[test]
    fn fixed_strings() {
        // Exactly N bytes fit, N + 1 do not.
        assert_eq!(Name::new(&[b'a'; NAME_LEN]).unwrap().bytes(), &[b'a'; NAME_LEN]);
        assert!(Name::new(&[b'a'; NAME_LEN + 1]).is_none());
        assert_eq!(Name::new(b"ab").unwrap().0[..3], *b"ab\0");
        // C-string semantics: the text ends at the first NUL; no NUL means all N bytes.
        let mut a = [b'x'; NAME_LEN];
        a[3] = 0;
        assert_eq!(FixedStr(a).bytes(), b"xxx");
        assert_eq!(FixedStr(a).text(), "xxx");
        assert_eq!(FixedStr([0u8; 4]).bytes(), b"");
        assert_eq!(FixedStr(*b"\xffab\0").text(), "\u{fffd}ab");
        assert_eq!(format!("{:?}", FixedStr(*b"hi\0\0")), "\"hi\"");
        // Truncation cuts at N bytes, backing off to a character boundary.
        assert_eq!(Name::truncated(&"y".repeat(40)).bytes(), &[b'y'; NAME_LEN]);
        let s = format!("{}\u{e9}", "z".repeat(NAME_LEN - 1)); // the é straddles byte 32
        assert_eq!(Name::truncated(&s).bytes(), "z".repeat(NAME_LEN - 1).as_bytes());
        assert_eq!(FixedStr::<4>::truncated("\u{e9}\u{e9}\u{e9}").text(), "\u{e9}\u{e9}");
        assert_eq!(FixedStr::<4>::truncated("ab").text(), "ab");
        assert_eq!(FixedStr::<3>::truncated("\u{20ac}x").text(), "\u{20ac}");
        assert_eq!(FixedStr::<2>::truncated("\u{20ac}").bytes(), b"");
    }

    fn any_msg() -> impl Strategy<Value = Msg> {
        let name = prop::array::uniform32(any::<u8>()).prop_map(FixedStr);
        prop_oneof![
            Just(Msg::Ack),
            (name.clone(), any::<(u16, u16, u16, u16, u16, u8)>()).prop_map(|(n, t)| Msg::Hello(Hello {
                name: n,
                min_version: t.0,
                max_version: t.1,
                max_region: t.2,
                max_m2s_ring: t.3,
                max_s2m_ring: t.4,
                max_log2_ring_size: t.5
            })),
            (name.clone(), any::<(u16, u32, u8)>(), prop::array::uniform24(any::<u8>())).prop_map(|(n, t, s)| {
                Msg::Init(Init { version: t.0, id: t.1, mode: t.2, secret: FixedStr(s), name: n })
            }),
            any::<(u16, u64)>().prop_map(|(index, size)| Msg::AddRegion(AddRegion { index, size })),
            any::<(u16, u16, u16, u32, u8, u16)>().prop_map(|t| Msg::AddRing(AddRing {
                flags: t.0,
                index: t.1,
                region: t.2,
                offset: t.3,
                log2_ring_size: t.4,
                private_hdr_size: t.5
            })),
            name.clone().prop_map(Msg::Connect),
            name.prop_map(Msg::Connected),
            (any::<u32>(), prop::collection::vec(any::<u8>(), 96)).prop_map(|(code, r)| {
                let mut a = [0u8; 96];
                a.copy_from_slice(&r);
                Msg::Disconnect(Disconnect { code, reason: FixedStr(a) })
            }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(m in any_msg()) {
            prop_assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = Msg::decode(&bytes);
        }

        #[test]
        fn decode_any_128(bytes in prop::collection::vec(any::<u8>(), 128)) {
            if let Ok(m) = Msg::decode(&bytes) {
                // Re-encoding keeps every byte the layout defines.
                let again = Msg::decode(&m.encode()).unwrap();
                prop_assert_eq!(again, m);
            }
        }
    }
}
