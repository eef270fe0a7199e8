//! The learning table (netmap's `netmap_bdg_learning`): a direct-mapped hash of source MAC
//! addresses to the port they were last seen on. A sender learns the source of each packet it
//! forwards (unless it is multicast or the slot has `NS_NO_LEARN`) and looks up the
//! destination; a miss floods.
//!
//! Each bucket is one word, so a lookup never sees half an update: MAC (48 bits), port index
//! (8) and the low byte of the port's generation (8). An entry is used only if its port is
//! attached now with that generation, so entries of a detached port die with it (stale), and
//! bytes a peer scribbled (a port index out of range, a multicast address, an address in the
//! wrong bucket) are dropped and counted (garbage). Entries older than the switch's age are
//! not used (and are refreshed by the next packet from that address). Concurrent learners
//! may overwrite each other's bucket: like netmap's table this is a cache, and a lost entry
//! costs one flood.

use std::sync::atomic::Ordering;

use super::layout::{MacEntry, HASH_SIZE, MAX_PORTS};

/// 48-bit MAC addresses, first byte in the low bits.
pub type Mac = u64;

const MAC_MASK: u64 = (1 << 48) - 1;
/// `seen` is refreshed at most this often per address (a store to a shared line costs).
const SEEN_GRANULARITY_MS: u64 = 64;

/// The generation of each attached port (`None`: free), read once per batch.
pub type Ports = [Option<u32>; MAX_PORTS];

/// A MAC from the 6 bytes of a header field.
#[inline]
pub fn mac(b: &[u8]) -> Mac {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
}

/// The destination and source addresses of an Ethernet header (its first 12 bytes).
#[inline]
pub fn addresses(hdr: &[u8; 16]) -> (Mac, Mac) {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hdr[at..at + 8]);
        u64::from_le_bytes(w) & MAC_MASK
    };
    (word(0), word(6))
}

/// Group (multicast or broadcast) address: the I/G bit of the first byte.
#[inline]
pub fn is_group(m: Mac) -> bool {
    m & 1 != 0
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: Mac) -> String {
    let b = m.to_le_bytes();
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
}

/// The bucket of `m`.
#[inline]
pub fn bucket(m: Mac) -> usize {
    const BITS: u32 = HASH_SIZE.trailing_zeros();
    (m.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

#[inline]
fn pack(m: Mac, port: usize, gen: u32) -> u64 {
    (m & MAC_MASK) | (port as u64) << 48 | u64::from(gen & 0xff) << 56
}

#[inline]
fn unpack(key: u64) -> (Mac, usize, u32) {
    (key & MAC_MASK, ((key >> 48) & 0xff) as usize, (key >> 56) as u32)
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The address lives on this port.
    Hit(usize),
    /// Unknown (never learnt, overwritten, aged or stale): flood.
    Miss,
    /// The bucket held garbage for this address: it was dropped; flood.
    Garbage,
}

/// One valid entry, for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learnt {
    /// The address.
    pub mac: Mac,
    /// Port index.
    pub port: usize,
    /// ms since it was last seen.
    pub age_ms: u64,
}

/// The table in the switch's memory.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    entries: &'a [MacEntry],
}

impl<'a> Table<'a> {
    /// Wrap the `HASH_SIZE` entries.
    pub fn new(entries: &'a [MacEntry]) -> Self {
        debug_assert_eq!(entries.len(), HASH_SIZE);
        Self { entries }
    }

    /// `m` was seen on `port` (generation `gen`) at `now`.
    #[inline]
    pub fn learn(&self, m: Mac, port: usize, gen: u32, now: u64) {
        let e = &self.entries[bucket(m)];
        let want = pack(m, port, gen);
        if e.key.load(Ordering::Relaxed) != want {
            e.seen.store(now, Ordering::Relaxed);
            e.key.store(want, Ordering::Release);
        } else if now.wrapping_sub(e.seen.load(Ordering::Relaxed)) >= SEEN_GRANULARITY_MS {
            e.seen.store(now, Ordering::Relaxed);
        }
    }

    /// Where `m` (a unicast address) lives, if known and younger than `age_ms`.
    #[inline]
    pub fn lookup(&self, m: Mac, now: u64, age_ms: u64, ports: &Ports) -> Lookup {
        let e = &self.entries[bucket(m)];
        let key = e.key.load(Ordering::Acquire);
        let (em, port, gen) = unpack(key);
        if key == 0 || em != m {
            return Lookup::Miss;
        }
        if port >= MAX_PORTS || is_group(em) {
            let _ = e.key.compare_exchange(key, 0, Ordering::Relaxed, Ordering::Relaxed);
            return Lookup::Garbage;
        }
        if ports[port].is_none_or(|g| g & 0xff != gen) {
            let _ = e.key.compare_exchange(key, 0, Ordering::Relaxed, Ordering::Relaxed);
            return Lookup::Miss;
        }
        if now.wrapping_sub(e.seen.load(Ordering::Relaxed)) > age_ms {
            return Lookup::Miss;
        }
        Lookup::Hit(port)
    }

    /// Every usable entry (for `vale list`); garbage found on the way is dropped and counted
    /// in the returned number.
    pub fn entries(&self, now: u64, age_ms: u64, ports: &Ports) -> (Vec<Learnt>, u64) {
        let mut out = Vec::new();
        let mut garbage = 0;
        for (b, e) in self.entries.iter().enumerate() {
            let key = e.key.load(Ordering::Acquire);
            if key == 0 {
                continue;
            }
            let (m, port, gen) = unpack(key);
            if port >= MAX_PORTS || is_group(m) || bucket(m) != b {
                if e.key.compare_exchange(key, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    garbage += 1;
                }
                continue;
            }
            let age = now.wrapping_sub(e.seen.load(Ordering::Relaxed));
            if ports[port].is_some_and(|g| g & 0xff == gen) && age <= age_ms {
                out.push(Learnt { mac: m, port, age_ms: age });
            }
        }
        out.sort_by_key(|l| (l.port, l.mac));
        (out, garbage)
    }

    /// Forget everything (a new switch).
    pub fn clear(&self) {
        for e in self.entries {
            e.key.store(0, Ordering::Relaxed);
            e.seen.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn table() -> Vec<MacEntry> {
        (0..HASH_SIZE).map(|_| MacEntry { key: AtomicU64::new(0), seen: AtomicU64::new(0) }).collect()
    }

    #[test]
    fn learn_lookup_age_and_stale() {
        let v = table();
        let t = Table::new(&v);
        let mut ports: Ports = [None; MAX_PORTS];
        ports[3] = Some(0x105);
        let a = mac(&[2, 0, 0, 0, 0, 1]);
        assert_eq!(t.lookup(a, 10, 1000, &ports), Lookup::Miss);
        t.learn(a, 3, 0x105, 10);
        assert_eq!(t.lookup(a, 500, 1000, &ports), Lookup::Hit(3));
        assert_eq!(t.lookup(a, 1011, 1000, &ports), Lookup::Miss, "aged");
        t.learn(a, 3, 0x105, 1011);
        assert_eq!(t.lookup(a, 1012, 1000, &ports), Lookup::Hit(3), "refreshed");
        ports[3] = Some(0x106);
        assert_eq!(t.lookup(a, 1012, 1000, &ports), Lookup::Miss, "port re-attached: stale");
        assert_eq!(v[bucket(a)].key.load(Ordering::Relaxed), 0, "stale entry dropped");
    }

    #[test]
    fn garbage_is_dropped() {
        let v = table();
        let t = Table::new(&v);
        let ports: Ports = [Some(0); MAX_PORTS];
        let a = mac(&[2, 0, 0, 0, 0, 7]);
        // A port index beyond the table.
        v[bucket(a)].key.store(a | 200 << 48, Ordering::Relaxed);
        assert_eq!(t.lookup(a, 0, 1000, &ports), Lookup::Garbage);
        assert_eq!(v[bucket(a)].key.load(Ordering::Relaxed), 0);
        // A group address and an address in the wrong bucket, found by a listing.
        let g = mac(&[1, 0, 0x5e, 0, 0, 1]);
        v[bucket(g)].key.store(g, Ordering::Relaxed);
        let wrong = (bucket(a) + 1) % HASH_SIZE;
        v[wrong].key.store(a, Ordering::Relaxed);
        t.learn(mac(&[2, 0, 0, 0, 0, 9]), 1, 0, 0);
        let (list, garbage) = t.entries(5, 1000, &ports);
        assert_eq!(garbage, 2);
        assert_eq!(list, vec![Learnt { mac: mac(&[2, 0, 0, 0, 0, 9]), port: 1, age_ms: 5 }]);
        let mut hdr = [0u8; 16];
        hdr[..12].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        hdr[12..].copy_from_slice(&[0xff; 4]);
        assert_eq!(addresses(&hdr), (mac(&hdr[0..6]), mac(&hdr[6..12])));
        assert_eq!(format_mac(mac(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])), "aa:bb:cc:dd:ee:ff");
    }
}
