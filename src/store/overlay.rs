//! A redb backend that reads a database file and never writes to it: whatever redb writes
//! (the repair after an unclean stop, `check_integrity`'s rebuilt allocator state, a schema
//! upgrade) stays in memory, laid over the file's bytes. `chatd check` and `chatd repair` open
//! the database through it, so looking at a damaged file can never change it. The file's lock
//! is taken as a server takes it, so a running server is noticed (`DatabaseAlreadyOpen`).
//! Only `store` uses this.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

#[derive(Debug)]
pub struct Overlay {
    file: File,
    /// The file's length (it is never changed through this).
    file_len: u64,
    /// Takes redb's locks on the file (`None`: the file could only be opened read-only, so
    /// there are no locks; a server could not be writing it either way, unless it runs as
    /// another user).
    locks: Option<FileBackend>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    len: u64,
    /// Written ranges (offset → bytes), never overlapping.
    writes: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    pub fn open(path: &Path) -> io::Result<Overlay> {
        let file = File::open(path)?;
        let locks = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => Some(FileBackend::new(f).map_err(io::Error::other)?),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => None,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        Ok(Overlay {
            file,
            file_len: len,
            locks,
            state: Mutex::new(State {
                len,
                writes: BTreeMap::new(),
            }),
        })
    }

    /// Makes redb see the file's other commit slot as the newest one (in memory): the way
    /// back to the commit before a damaged newest one, which redb refuses to fall back to by
    /// itself after a two-phase commit. (Header byte 9, redb's "god byte": bit 0 names the
    /// primary slot, bit 1 asks for recovery, bit 2 says the primary was committed in two
    /// phases.)
    pub fn use_other_commit_slot(&self) -> io::Result<()> {
        let mut god = [0u8; 1];
        self.read(9, &mut god)?;
        let b = (god[0] ^ 1) & !4 | 2;
        self.state().write(9, &[b]);
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn locks(&self) -> Result<&FileBackend, BackendError> {
        self.locks.as_ref().ok_or(BackendError::Unsupported)
    }
}

impl State {
    /// Written ranges overlapping `offset..end`.
    fn overlapping(&self, offset: u64, end: u64) -> Vec<u64> {
        self.writes
            .range(..end)
            .rev()
            .take_while(|(o, d)| **o + d.len() as u64 > offset)
            .map(|(o, _)| *o)
            .collect()
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        for o in self.overlapping(offset, end) {
            let Some(old) = self.writes.remove(&o) else {
                continue;
            };
            if o < offset {
                self.writes.insert(o, old[..(offset - o) as usize].to_vec());
            }
            let o_end = o + old.len() as u64;
            if o_end > end {
                self.writes.insert(end, old[(end - o) as usize..].to_vec());
            }
        }
        self.writes.insert(offset, data.to_vec());
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let st = self.state();
        let end = offset + out.len() as u64;
        if end > st.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the database",
            ));
        }
        // The file's bytes (zeros past its real end, after a set_len), then the writes.
        out.fill(0);
        let file_len = self.file_len;
        if offset < file_len {
            let n = (file_len.min(end) - offset) as usize;
            self.file.read_exact_at(&mut out[..n], offset)?;
        }
        for o in st.overlapping(offset, end) {
            let d = &st.writes[&o];
            let from = o.max(offset);
            let to = (o + d.len() as u64).min(end);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&d[(from - o) as usize..(to - o) as usize]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut st = self.state();
        if len < st.len {
            // Drop what lies beyond, so growing again reads zeros.
            let cut: Vec<u64> = st.writes.range(len..).map(|(o, _)| *o).collect();
            for o in cut {
                st.writes.remove(&o);
            }
            if let Some(o) = st.overlapping(len, len + 1).first().copied() {
                if let Some(d) = st.writes.get_mut(&o) {
                    d.truncate((len - o) as usize);
                }
            }
            // Bytes of the file past the new end must read as zeros if it grows again.
            let file_len = self.file_len;
            if file_len > len {
                let zeros = vec![0u8; (file_len - len) as usize];
                st.write(len, &zeros);
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.state().write(offset, data);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        match &self.locks {
            Some(l) => l.close(),
            None => Ok(()),
        }
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks()?.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.locks()?.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks()?.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks()?.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.locks()?.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.locks()?.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    /// redb opens, upgrades and writes through it; the file stays byte for byte as it was.
    #[test]
    fn writes_stay_in_memory_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, vec![7u8; 64]).unwrap();
        let o = Overlay::open(&path).unwrap();
        o.write(10, &[1; 10]).unwrap();
        o.write(15, &[2; 10]).unwrap();
        o.write(5, &[3; 2]).unwrap();
        let mut out = vec![0; 30];
        o.read(0, &mut out).unwrap();
        let mut want = vec![7u8; 30];
        want[5..7].fill(3);
        want[10..15].fill(1);
        want[15..25].fill(2);
        assert_eq!(out, want);
        o.set_len(20).unwrap();
        o.set_len(40).unwrap();
        let mut out = vec![0; 40];
        o.read(0, &mut out).unwrap();
        want.truncate(20);
        want.resize(40, 0);
        assert_eq!(out, want, "zeros past a shrink");
        assert!(o.read(30, &mut [0; 20]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 64]);

        const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");
        let real = dir.path().join("real.redb");
        {
            let db = redb::Database::create(&real).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(T).unwrap().insert(1, 1).unwrap();
            tx.commit().unwrap();
        }
        let before = std::fs::read(&real).unwrap();
        {
            let db = redb::Database::builder()
                .create_with_backend(Overlay::open(&real).unwrap())
                .unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(T).unwrap().insert(2, 2).unwrap();
            tx.commit().unwrap();
            let r = db.begin_read().unwrap();
            assert_eq!(r.open_table(T).unwrap().len().unwrap(), 2);
        }
        assert_eq!(std::fs::read(&real).unwrap(), before);
    }
}
