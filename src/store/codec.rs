//! The store's own value encoding: a record-version byte, then fields in a fixed order
//! (little-endian integers, length-prefixed UTF-8). Hand-written on purpose: wire types may be
//! renamed freely without touching the bytes on disk, and decoding never allocates more than the
//! record holds. Only `store` uses this.

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
}
