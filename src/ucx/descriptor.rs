//! [`Descriptor`]: what a peer needs to reach one allocation of a
//! registration, as bytes to send it.

use core::fmt;

use super::error::UcxError;
use crate::Error;

/// The descriptor format's first bytes.
pub const MAGIC: [u8; 4] = *b"UMXD";

/// The descriptor format's version.
pub const VERSION: u16 = 2;

/// The bytes before the packed key.
pub const HEADER: usize = 48;

/// The longest packed key UCX 1.13 can make: its memory-domain map (8
/// bytes), memory type (1), and for each of at most 64 domains a length byte
/// and up to 255 bytes.
pub const MAX_KEY: usize = 8 + 1 + 64 * (1 + 255);

/// `ucs_memory_type_t` of host memory, as a packed key records it.
const HOST: u8 = 0;

/// A remote peer's handle on one allocation in a registration
/// ([`Registered::descriptor_of`](super::Registered::descriptor_of)): the
/// allocation's address and length in the owner's process, the packed
/// remote key (`ucp_rkey_pack`) of the registered range that holds it, and
/// a random token the owner chose when it issued the descriptor.
///
/// [`to_bytes`](Descriptor::to_bytes) gives the bytes to send to the peer,
/// [`from_bytes`](Descriptor::from_bytes) reads them back, treating them as
/// untrusted: it checks their format, nothing more. A descriptor read from
/// bytes is *unverified*: whoever sent the bytes may have forged or
/// corrupted them, and UCX parses a packed key without checking it (a
/// corrupted key aborts the process inside `ucp_ep_rkey_unpack` with the
/// shared-memory transports). The safe way to use one is to have its owner
/// confirm it over the [`Link`](super::Link) to the owner
/// ([`Link::verify`](super::Link::verify)), which gives a
/// [`Grant`](super::Grant) that an endpoint unpacks
/// ([`Endpoint::remote`](super::Endpoint::remote)); the owner confirms only
/// descriptors it issued, byte for byte. The token makes a descriptor a
/// capability: a peer that knows an allocation's address and the key of
/// the range around it still cannot name it to the owner without the token.
///
/// The format, integers little-endian:
///
/// | bytes | what |
/// |---|---|
/// | 0..4 | `UMXD` |
/// | 4..6 | version, 2 |
/// | 6..8 | zero |
/// | 8..16 | the allocation's address |
/// | 16..24 | its length, 1 to `isize::MAX` |
/// | 24..28 | the packed key's length, 9 to [`MAX_KEY`] |
/// | 28..32 | zero |
/// | 32..48 | the owner's token for it |
/// | 48.. | the packed key, exactly as long as bytes 24..28 say |
///
/// The key itself is opaque to unimem except for its framing, which is
/// checked because UCX parses it without a length
/// (`ucp_ep_rkey_unpack`): a memory-domain map, a memory type that must be
/// host memory, and one length-prefixed part per domain in the map, all
/// inside the key. What each part holds is for the transports to read, and
/// they trust it: a well-framed key with a bad part still crashes UCX,
/// which is why reaching UCX with an unverified descriptor is `unsafe`
/// ([`Endpoint::remote_unchecked`](super::Endpoint::remote_unchecked)).
#[derive(Clone, PartialEq, Eq)]
pub struct Descriptor {
    address: u64,
    size: usize,
    token: u128,
    key: Box<[u8]>,
}

/// The error for malformed descriptor bytes.
fn bad(reason: &'static str) -> Error {
    UcxError::BadDescriptor { reason }.into()
}

impl Descriptor {
    /// A descriptor of `size` bytes at `address` under `key`, with token `token`,
    /// checked as `from_bytes` checks one.
    pub(crate) fn new(
        address: u64,
        size: usize,
        token: u128,
        key: Vec<u8>,
    ) -> Result<Descriptor, Error> {
        let descriptor = Descriptor {
            address,
            size,
            token,
            key: key.into_boxed_slice(),
        };
        descriptor.check()?;
        Ok(descriptor)
    }

    /// Reads a descriptor from bytes a peer sent: anything malformed
    /// (short, long, another format or version, an empty, wrapping or absurd
    /// range, a key whose framing does not hold) is
    /// [`UcxError::BadDescriptor`]. What it gives is unverified: the bytes
    /// are well formed, not necessarily what the owner issued (see
    /// [`Link::verify`](super::Link::verify)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Descriptor, Error> {
        let Some((header, key)) = bytes.split_first_chunk::<HEADER>() else {
            return Err(bad("shorter than a descriptor's 32-byte header"));
        };
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
        if header[..4] != MAGIC {
            return Err(bad("not a unimem UCX descriptor (wrong magic bytes)"));
        }
        if u16_at(4) != VERSION {
            return Err(bad("a descriptor version other than 2"));
        }
        if u16_at(6) != 0 || u32_at(28) != 0 {
            return Err(bad("reserved header bytes are not zero"));
        }
        let size = usize::try_from(u64_at(16)).map_err(|_| bad("a length above usize::MAX"))?;
        let key_len = u32_at(24) as usize;
        if key_len > MAX_KEY {
            return Err(bad("a packed key longer than UCX makes"));
        }
        if key.len() != key_len {
            return Err(bad(
                "the packed key is not as long as the header says (cut short, or bytes after it)",
            ));
        }
        let token = u128::from_le_bytes(header[32..48].try_into().unwrap());
        Descriptor::new(u64_at(8), size, token, key.to_vec())
    }

    /// The bytes to send to a peer (the format above).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER + self.key.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&self.address.to_le_bytes());
        bytes.extend_from_slice(&(self.size as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&self.token.to_le_bytes());
        bytes.extend_from_slice(&self.key);
        bytes
    }

    /// The allocation's address in the owner's process.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Its length in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The packed remote key.
    pub fn packed_key(&self) -> &[u8] {
        &self.key
    }

    /// The owner's token: what names the descriptor to its owner.
    pub(crate) fn token(&self) -> u128 {
        self.token
    }

    /// Checks the range and the key's framing.
    fn check(&self) -> Result<(), Error> {
        if self.size == 0 {
            return Err(bad("an empty range"));
        }
        if self.size > isize::MAX as usize {
            return Err(bad("a range larger than an address space"));
        }
        if self.address == 0 {
            return Err(bad("a null address"));
        }
        if self.address.checked_add(self.size as u64).is_none() {
            return Err(bad("a range that wraps around the address space"));
        }
        check_key(&self.key).map_err(bad)
    }
}

/// Checks that `key` is framed as UCX 1.13's `ucp_rkey_pack` frames a key
/// (`ucp_rkey_pack_common` in `ucp_rkey.c`): the memory-domain map (a
/// native-endian `u64`), the memory type (one byte: host memory here), then
/// for each domain in the map, in order, a length byte and that many bytes,
/// all inside `key`. UCX reads nothing past those when unpacking without a
/// length (`ucp_ep_rkey_unpack`); bytes after them are tolerated.
fn check_key(key: &[u8]) -> Result<(), &'static str> {
    let Some((map, rest)) = key.split_first_chunk::<8>() else {
        return Err("a packed key shorter than its 9-byte header");
    };
    let Some((&memory_type, mut parts)) = rest.split_first() else {
        return Err("a packed key shorter than its 9-byte header");
    };
    if memory_type != HOST {
        return Err("a packed key for memory other than host memory");
    }
    for _ in 0..u64::from_ne_bytes(*map).count_ones() {
        let Some((&len, after)) = parts.split_first() else {
            return Err("a packed key whose parts run past its end");
        };
        parts = after
            .get(len as usize..)
            .ok_or("a packed key whose parts run past its end")?;
    }
    Ok(())
}

/// Leaves the token out: it is what makes the descriptor a capability, and
/// logs are read by others.
impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("address", &format_args!("{:#x}", self.address))
            .field("size", &self.size)
            .field("key_len", &self.key.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key as UCX 1.13 packs one for two memory domains (the shape of a
    /// tcp + shared-memory context's key), with parts of 3 and 0 bytes.
    fn key() -> Vec<u8> {
        let mut key = 0b101u64.to_ne_bytes().to_vec();
        key.push(HOST);
        key.extend_from_slice(&[3, 0xaa, 0xbb, 0xcc]);
        key.push(0);
        key
    }

    const TOKEN: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

    fn descriptor() -> Descriptor {
        Descriptor::new(0x7f00_0000_1000, 4096, TOKEN, key()).unwrap()
    }

    fn reason(bytes: &[u8]) -> &'static str {
        match Descriptor::from_bytes(bytes) {
            Err(Error::Ucx(UcxError::BadDescriptor { reason })) => reason,
            Err(error) => panic!("not a BadDescriptor: {error}"),
            Ok(descriptor) => panic!("parsed: {descriptor:?}"),
        }
    }

    /// The bytes of `descriptor()` with `f` applied.
    fn edited(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = descriptor().to_bytes();
        f(&mut bytes);
        bytes
    }

    #[test]
    fn round_trips() {
        let descriptor = descriptor();
        let bytes = descriptor.to_bytes();
        assert_eq!(bytes.len(), HEADER + key().len());
        assert_eq!(&bytes[..4], b"UMXD");
        let back = Descriptor::from_bytes(&bytes).unwrap();
        assert_eq!(back, descriptor);
        assert_eq!(back.address(), 0x7f00_0000_1000);
        assert_eq!(back.size(), 4096);
        assert_eq!(back.packed_key(), &key()[..]);
        assert_eq!(back.token(), TOKEN);
        assert_eq!(&bytes[32..48], &TOKEN.to_le_bytes());
    }

    #[test]
    fn short_and_long_input_is_refused() {
        let bytes = descriptor().to_bytes();
        for len in 0..bytes.len() {
            let _ = reason(&bytes[..len]);
        }
        assert!(reason(&[]).contains("shorter"));
        assert!(reason(&bytes[..HEADER - 1]).contains("shorter"));
        assert!(reason(&bytes[..bytes.len() - 1]).contains("not as long"));
        assert!(reason(&edited(|b| b.push(0))).contains("not as long"));
    }

    #[test]
    fn wrong_format_or_version_is_refused() {
        assert!(reason(&edited(|b| b[0] = b'X')).contains("magic"));
        assert!(reason(&edited(|b| b[4] = 1)).contains("version"));
        assert!(reason(&edited(|b| b[4] = 3)).contains("version"));
        assert!(reason(&edited(|b| b[7] = 1)).contains("reserved"));
        assert!(reason(&edited(|b| b[31] = 1)).contains("reserved"));
        assert!(reason(&[0xff; 64]).contains("magic"));
    }

    #[test]
    fn absurd_ranges_are_refused() {
        let with = |address: u64, size: u64| {
            edited(|b| {
                b[8..16].copy_from_slice(&address.to_le_bytes());
                b[16..24].copy_from_slice(&size.to_le_bytes());
            })
        };
        assert!(reason(&with(0x1000, 0)).contains("empty"));
        assert!(reason(&with(0, 64)).contains("null"));
        assert!(reason(&with(0x1000, u64::MAX)).contains("larger"));
        assert!(reason(&with(0x1000, 1 << 63)).contains("larger"));
        assert!(reason(&with(u64::MAX - 10, 64)).contains("wraps"));
        assert!(Descriptor::from_bytes(&with(0x1000, isize::MAX as u64)).is_ok());
    }

    #[test]
    fn keys_whose_framing_fails_are_refused() {
        let with_key = |key: &[u8]| {
            edited(|b| {
                b.truncate(HEADER);
                b[24..28].copy_from_slice(&(key.len() as u32).to_le_bytes());
                b.extend_from_slice(key);
            })
        };
        assert!(reason(&with_key(&[])).contains("shorter than its 9-byte"));
        assert!(reason(&with_key(&key()[..8])).contains("shorter than its 9-byte"));
        // A part's length byte pointing past the end, and a map naming more
        // parts than there are.
        let mut long_part = key();
        long_part[9] = 200;
        assert!(reason(&with_key(&long_part)).contains("run past"));
        let mut more_parts = key();
        more_parts[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(reason(&with_key(&more_parts)).contains("run past"));
        let mut device = key();
        device[8] = 1;
        assert!(reason(&with_key(&device)).contains("host memory"));
        // A key longer than UCX makes is refused before it is read.
        let huge = edited(|b| b[24..28].copy_from_slice(&(MAX_KEY as u32 + 1).to_le_bytes()));
        assert!(reason(&huge).contains("longer than UCX makes"));
        let huge = edited(|b| b[24..28].copy_from_slice(&u32::MAX.to_le_bytes()));
        assert!(reason(&huge).contains("longer than UCX makes"));
        // Bytes after the parts are tolerated (UCX does not read them).
        let mut trailing = key();
        trailing.push(7);
        assert!(Descriptor::from_bytes(&with_key(&trailing)).is_ok());
        // No domain at all: just the header.
        let mut empty = 0u64.to_ne_bytes().to_vec();
        empty.push(HOST);
        assert!(Descriptor::from_bytes(&with_key(&empty)).is_ok());
    }

    #[test]
    fn every_single_byte_corruption_is_an_error_or_a_valid_descriptor() {
        let bytes = descriptor().to_bytes();
        for at in 0..bytes.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[at] = value;
                if let Ok(descriptor) = Descriptor::from_bytes(&corrupt) {
                    assert_eq!(descriptor.to_bytes(), corrupt, "byte {at} = {value}");
                }
            }
        }
    }
}
