//! The store's own value encoding: a record-version byte, then fields in a fixed order
//! (little-endian integers, length-prefixed UTF-8; newer records use LEB128 varints). Hand-written
//! on purpose: wire types may be renamed freely without touching the bytes on disk, and decoding
//! never allocates more than the record holds. Only `store` uses this.
//!
//! Since schema 4 every record (the `&[u8]` values: users, sessions, conversations, messages)
//! is sealed: its bytes are followed by a CRC-32C of the record's key and its bytes (`seal`),
//! checked on every read (`unseal`). A flipped bit in a record, or in its key (a message moved
//! to another seq), is then reported as damage instead of being served. CRC-32C is hand-written
//! (a 1 KiB table built at compile time, a few dozen bytes of code; ~0.5 GB/s, a short message
//! in well under a microsecond): no crate for 20 lines.

/// Appends fields to a byte buffer.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn new(version: u8) -> Self {
        Enc(vec![version])
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// An unsigned LEB128 varint (1 byte below 128, 6 for a time in ms).
    pub fn var(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    /// A string with a varint length.
    pub fn vstr(self, s: &str) -> Self {
        let mut e = self.var(s.len() as u64);
        e.0.extend_from_slice(s.as_bytes());
        e
    }
}

/// CRC-32C (Castagnoli) lookup table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82f6_3b78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Continues a CRC-32C (pass 0 to start) over `bytes`.
pub fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for b in bytes {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Bytes a seal adds to a record.
pub const SEAL: usize = 4;

/// Appends the record's checksum: CRC-32C of `key` (the key's bytes as the store encodes them,
/// see `key_bytes`) and the record.
pub fn seal(key: &[u8], mut rec: Vec<u8>) -> Vec<u8> {
    let c = crc32c(crc32c(0, key), &rec);
    rec.extend_from_slice(&c.to_le_bytes());
    rec
}

/// The record inside a sealed value, if its checksum matches `key` and its bytes.
pub fn unseal<'a>(key: &[u8], raw: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    if raw.len() < SEAL {
        return Err(DecodeError("record too short for its checksum"));
    }
    let (rec, sum) = raw.split_at(raw.len() - SEAL);
    let want = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    if crc32c(crc32c(0, key), rec) != want {
        return Err(DecodeError("checksum mismatch"));
    }
    Ok(rec)
}

/// A u64 key's bytes for `seal`.
pub fn key1(a: u64) -> [u8; 8] {
    a.to_le_bytes()
}

/// A (u64, u64) key's bytes for `seal`.
pub fn key2(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_le_bytes());
    k[8..].copy_from_slice(&b.to_le_bytes());
    k
}

/// Reads fields back; every read fails cleanly on a short or malformed record.
pub struct Dec<'a> {
    buf: &'a [u8],
}

/// A record could not be decoded (a bug or a damaged file; never caused by a client).
#[derive(Debug)]
pub struct DecodeError(pub &'static str);

impl<'a> Dec<'a> {
    /// Starts decoding; checks the record-version byte.
    pub fn new(buf: &'a [u8], version: u8, what: &'static str) -> Result<Self, DecodeError> {
        match buf.split_first() {
            Some((v, rest)) if *v == version => Ok(Dec { buf: rest }),
            _ => Err(DecodeError(what)),
        }
    }
    /// Starts decoding a record that may be any version in `versions`; returns which one.
    pub fn versioned(
        buf: &'a [u8],
        versions: std::ops::RangeInclusive<u8>,
        what: &'static str,
    ) -> Result<(u8, Self), DecodeError> {
        match buf.split_first() {
            Some((v, rest)) if versions.contains(v) => Ok((*v, Dec { buf: rest })),
            _ => Err(DecodeError(what)),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("record too short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        let n = u32::from_le_bytes(a) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("invalid utf-8 in record"))
    }
    pub fn var(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }
    pub fn vstr(&mut self) -> Result<&'a str, DecodeError> {
        let n = usize::try_from(self.var()?).map_err(|_| DecodeError("record too short"))?;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("invalid utf-8 in record"))
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let rec = Enc::new(1).u64(42).str("héllo").u8(7).0;
        let mut d = Dec::new(&rec, 1, "t").unwrap();
        assert_eq!(d.u64().unwrap(), 42);
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.u8().unwrap(), 7);
        assert!(d.u8().is_err());
        assert!(Dec::new(&rec, 2, "t").is_err());
        let mut short = Dec::new(&rec[..12], 1, "t").unwrap();
        assert!(short.u64().is_ok());
        assert!(short.str().is_err());
    }

    #[test]
    fn varints_round_trip() {
        let values = [0, 1, 127, 128, 300, 1_700_000_000_000, u64::MAX];
        let mut e = Enc::new(2);
        for v in values {
            e = e.var(v);
        }
        let rec = e.vstr("ünï").0;
        assert_eq!(rec.len(), 1 + 1 + 1 + 1 + 2 + 2 + 6 + 10 + 1 + 5);
        let mut d = Dec::new(&rec, 2, "t").unwrap();
        for v in values {
            assert_eq!(d.var().unwrap(), v);
        }
        assert_eq!(d.vstr().unwrap(), "ünï");
        assert!(d.done());
        assert!(Dec::new(&[2, 0xff, 0xff], 2, "t").unwrap().var().is_err());
    }

    #[test]
    fn crc32c_matches_the_standard_and_seals_catch_any_flipped_bit() {
        // The check value of CRC-32C (RFC 3720, iSCSI).
        assert_eq!(crc32c(0, b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xe306_9283);
        let key = key2(7, 42);
        let sealed = seal(&key, b"a record".to_vec());
        assert_eq!(unseal(&key, &sealed).unwrap(), b"a record");
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(unseal(&key, &bad).is_err(), "bit {bit}");
        }
        // The same record under another key (a damaged key: seq 42 read as 43).
        assert!(unseal(&key2(7, 43), &sealed).is_err());
        assert!(unseal(&key, &[1, 2]).is_err());
    }
}
