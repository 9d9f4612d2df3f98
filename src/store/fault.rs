//! The file layer under redb (`dbfile`) and under the write-ahead log (`wal`): in the shipped
//! build exactly redb's `FileBackend` and `std::fs::File` (type aliases, so it costs nothing);
//! in the crate's own test build a layer that can fail the Nth write or fsync and cut the power.
//!
//! Why a compile-time switch and not a backend chosen at open: nothing in a release binary can
//! turn faults on, not even by accident, and the production path has no indirection. The
//! integration tests that run the real binary cannot use it; they fill a small tmpfs for a real
//! `ENOSPC` instead (`tests/it/storage_full.rs`).
//!
//! The test layer (`cfg(test)`): a `Plan` is installed for a data directory before a store is
//! opened there; every file the store then opens in that directory goes through it. It counts
//! writes and fsyncs over all those files (in the order they happen), can fail the Nth with
//! `ENOSPC` or `EIO` (once, or that one and every later one until `heal`), and keeps, per file,
//! the image a power cut would leave: the bytes of the last successful fsync. A failed fsync
//! loses the writes it should have flushed (as Linux does: the pages are marked clean, so a
//! later successful fsync does not write them either: "fsyncgate"); only a rewrite brings them
//! back. `power_cut` stops every later operation (the process is dead) and puts the images on
//! the files: every write not fsync'd dropped, or with `Cut::TearLast` the unsynced writes kept
//! but each file's last one torn at a random byte. Only `store` uses this.

#[cfg(not(test))]
mod imp {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    /// redb's file backend under `dbfile`.
    pub type Backend = redb::backends::FileBackend;
    /// A log file (`wal`).
    pub type LogHandle = File;

    pub fn backend(file: File, _path: &Path) -> io::Result<Backend> {
        Backend::new(file).map_err(io::Error::other)
    }

    pub fn log_handle(file: File, _path: &Path) -> LogHandle {
        file
    }
}

pub use imp::{backend, log_handle, Backend, LogHandle};
#[cfg(test)]
#[allow(unused_imports)] // used by the tests of `store` and of the writer
pub use imp::{Cut, Fault, Plan};

#[cfg(test)]
mod imp {
    use std::fs::{File, Metadata};
    use std::io;
    use std::ops::Bound;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard};

    use redb::backends::FileBackend;
    use redb::{BackendError, StorageBackend};

    /// What an injected failure looks like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// `ENOSPC`: the disk is full.
        Full,
        /// `EIO`: the disk failed.
        Eio,
    }

    impl Fault {
        fn error(self) -> io::Error {
            io::Error::from_raw_os_error(match self {
                Fault::Full => 28,
                Fault::Eio => 5,
            })
        }
    }

    /// What a power cut leaves of the writes not yet fsync'd.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Cut {
        /// None of them.
        DropUnsynced,
        /// All of them, except that each file's last one is torn at a random byte.
        TearLast,
    }

    /// Faults and power cuts for the files of one data directory (see the module doc).
    pub struct Plan {
        dir: PathBuf,
        st: Mutex<State>,
    }

    struct State {
        /// Writes and fsyncs so far.
        ops: u64,
        /// The op number that fails (and, if `sticky`, every later one until `heal`).
        fail_at: Option<u64>,
        sticky: bool,
        fault: Fault,
        injected: u64,
        /// After a power cut: nothing reaches a file any more.
        dead: bool,
        /// Cut the power instead of running this op (see `cut_at`).
        cut_at: Option<(u64, Cut)>,
        files: Vec<Tracked>,
        /// What each op was, when tracing (for test failure messages).
        trace: Option<Vec<String>>,
        rng: u64,
    }

    /// A file as a power cut would leave it.
    struct Tracked {
        path: PathBuf,
        /// The bytes as of the last successful fsync.
        durable: Vec<u8>,
        /// Writes and resizes since, in order (a failed fsync drops them: see the module doc).
        unsynced: Vec<Op>,
    }

    enum Op {
        Write(u64, Vec<u8>),
        SetLen(u64),
    }

    static PLANS: Mutex<Vec<Arc<Plan>>> = Mutex::new(Vec::new());

    fn plans() -> MutexGuard<'static, Vec<Arc<Plan>>> {
        PLANS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan for the directory holding `path`, if one is installed.
    fn plan_for(path: &Path) -> Option<Arc<Plan>> {
        let dir = path.parent()?;
        plans().iter().find(|p| p.dir == dir).cloned()
    }

    impl Plan {
        /// Installs a plan (counting, failing nothing yet) for files opened in `dir` from now
        /// on. It stays until `uninstall`.
        pub fn install(dir: &Path) -> Arc<Plan> {
            let p = Arc::new(Plan {
                dir: dir.to_path_buf(),
                st: Mutex::new(State {
                    ops: 0,
                    fail_at: None,
                    sticky: false,
                    fault: Fault::Full,
                    injected: 0,
                    dead: false,
                    cut_at: None,
                    files: Vec::new(),
                    trace: None,
                    rng: 0x9e37_79b9_7f4a_7c15 ^ dir.as_os_str().len() as u64,
                }),
            });
            let mut all = plans();
            all.retain(|q| q.dir != dir);
            all.push(p.clone());
            p
        }

        /// Files opened in the directory from now on are plain files again.
        pub fn uninstall(&self) {
            plans().retain(|q| q.dir != self.dir);
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            self.st.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Writes and fsyncs counted so far.
        pub fn ops(&self) -> u64 {
            self.lock().ops
        }

        /// Failures injected so far.
        pub fn injected(&self) -> u64 {
            self.lock().injected
        }

        /// Fails the `n`th write or fsync from now (1 = the next one) with `fault`; with
        /// `sticky` also every one after it, until `heal`.
        pub fn fail_nth(&self, n: u64, fault: Fault, sticky: bool) {
            let mut st = self.lock();
            st.fail_at = Some(st.ops + n.max(1));
            st.sticky = sticky;
            st.fault = fault;
        }

        /// No more failures (the disk has space again).
        pub fn heal(&self) {
            self.lock().fail_at = None;
        }

        /// Starts recording a line per op (file, kind, offset) for `take_trace`.
        pub fn trace(&self) {
            self.lock().trace = Some(Vec::new());
        }

        pub fn take_trace(&self) -> Vec<String> {
            self.lock().trace.take().unwrap_or_default()
        }

        /// Seeds the choice of where a torn write ends.
        pub fn seed(&self, seed: u64) {
            self.lock().rng = seed | 1;
        }

        /// Power cut: every later operation fails (the process is dead), and each file is left
        /// as `cut` says (see `Cut`). The caller then drops the store and opens the directory
        /// again.
        pub fn power_cut(&self, cut: Cut) {
            let mut st = self.lock();
            st.dead = true;
            for (path, image) in images(&mut st, cut) {
                // Failing here would make the test meaningless: panic.
                std::fs::write(&path, &image).expect("write the power-cut image");
            }
        }

        /// Cuts the power just before the `n`th write or fsync from now (it never happens).
        pub fn cut_at(&self, n: u64, cut: Cut) {
            let mut st = self.lock();
            st.cut_at = Some((st.ops + n.max(1), cut));
        }

        /// Whether the power is off.
        pub fn is_dead(&self) -> bool {
            self.lock().dead
        }

        /// What a power cut right now would leave, written to the same file names in `to`
        /// (the store goes on).
        pub fn snapshot_to(&self, to: &Path, cut: Cut) {
            let mut st = self.lock();
            for (path, image) in images(&mut st, cut) {
                let name = path.file_name().expect("a file name");
                std::fs::write(to.join(name), &image).expect("write the snapshot");
            }
        }

        /// Attaches a file being opened: its current content counts as on disk.
        fn attach(&self, path: &Path) -> usize {
            let durable = std::fs::read(path).unwrap_or_default();
            let mut st = self.lock();
            match st.files.iter().position(|f| f.path == path) {
                Some(i) => {
                    st.files[i].durable = durable;
                    st.files[i].unsynced.clear();
                    i
                }
                None => {
                    st.files.push(Tracked {
                        path: path.to_path_buf(),
                        durable,
                        unsynced: Vec::new(),
                    });
                    st.files.len() - 1
                }
            }
        }

        /// Runs a write (`Some(data)` at `offset`), a resize or an fsync of file `id` through
        /// the plan: counted, maybe failed, recorded for power cuts.
        fn run(
            &self,
            id: usize,
            op: Kind<'_>,
            real: impl FnOnce() -> io::Result<()>,
        ) -> io::Result<()> {
            let mut st = self.lock();
            if st.dead {
                return Err(io::Error::other("the power is off (simulated)"));
            }
            let counted = !matches!(op, Kind::SetLen(_));
            if counted {
                st.ops += 1;
                let n = st.ops;
                if let Some((at, cut)) = st.cut_at {
                    if n == at {
                        st.dead = true;
                        for (path, image) in images(&mut st, cut) {
                            std::fs::write(&path, &image).expect("write the power-cut image");
                        }
                        return Err(io::Error::other("the power is off (simulated)"));
                    }
                }
                let name = st.files[id]
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(t) = st.trace.as_mut() {
                    t.push(match op {
                        Kind::Write(o, d) => format!("{n}: write {name} {o}+{}", d.len()),
                        Kind::Sync => format!("{n}: fsync {name}"),
                        Kind::SetLen(_) => unreachable!(),
                    });
                }
                let fails = match st.fail_at {
                    Some(at) if st.sticky => n >= at,
                    Some(at) => n == at,
                    None => false,
                };
                if fails {
                    st.injected += 1;
                    if matches!(op, Kind::Sync) {
                        // The writes this fsync should have flushed are lost to a power cut.
                        st.files[id].unsynced.clear();
                    }
                    return Err(st.fault.error());
                }
            }
            real()?;
            let f = &mut st.files[id];
            match op {
                Kind::Write(offset, data) => f.unsynced.push(Op::Write(offset, data.to_vec())),
                Kind::SetLen(len) => f.unsynced.push(Op::SetLen(len)),
                Kind::Sync => {
                    for op in std::mem::take(&mut f.unsynced) {
                        match op {
                            Op::Write(offset, data) => put(&mut f.durable, offset, &data),
                            Op::SetLen(len) => f.durable.resize(len as usize, 0),
                        }
                    }
                }
            }
            Ok(())
        }
    }

    /// Each file as a power cut would leave it (see `Cut`).
    fn images(st: &mut State, cut: Cut) -> Vec<(PathBuf, Vec<u8>)> {
        let mut rng = st.rng;
        let mut out = Vec::new();
        for f in &st.files {
            let mut image = f.durable.clone();
            if cut == Cut::TearLast {
                let last = f
                    .unsynced
                    .iter()
                    .rposition(|op| matches!(op, Op::Write(..)));
                for (i, op) in f.unsynced.iter().enumerate() {
                    match op {
                        Op::SetLen(len) => image.resize(*len as usize, 0),
                        Op::Write(offset, data) => {
                            let keep = if Some(i) == last {
                                rng ^= rng << 13;
                                rng ^= rng >> 7;
                                rng ^= rng << 17;
                                (rng % (data.len() as u64 + 1)) as usize
                            } else {
                                data.len()
                            };
                            put(&mut image, *offset, &data[..keep]);
                        }
                    }
                }
            }
            out.push((f.path.clone(), image));
        }
        st.rng = rng;
        out
    }

    enum Kind<'a> {
        Write(u64, &'a [u8]),
        SetLen(u64),
        Sync,
    }

    fn put(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if image.len() < end {
            image.resize(end, 0);
        }
        image[offset as usize..end].copy_from_slice(data);
    }

    /// redb's file backend, through the directory's plan if there is one.
    #[derive(Debug)]
    pub struct Backend {
        inner: FileBackend,
        plan: Option<(Arc<Plan>, usize)>,
    }

    impl std::fmt::Debug for Plan {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Plan({})", self.dir.display())
        }
    }

    pub fn backend(file: File, path: &Path) -> io::Result<Backend> {
        let plan = plan_for(path).map(|p| {
            let id = p.attach(path);
            (p, id)
        });
        Ok(Backend {
            inner: FileBackend::new(file).map_err(io::Error::other)?,
            plan,
        })
    }

    impl Backend {
        fn run(&self, op: Kind<'_>, real: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
            match &self.plan {
                Some((p, id)) => p.run(*id, op, real),
                None => real(),
            }
        }
    }

    impl StorageBackend for Backend {
        fn len(&self) -> Result<u64, io::Error> {
            self.inner.len()
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            self.inner.read(offset, out)
        }

        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.run(Kind::SetLen(len), || self.inner.set_len(len))
        }

        fn sync_data(&self) -> Result<(), io::Error> {
            self.run(Kind::Sync, || self.inner.sync_data())
        }

        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.run(Kind::Write(offset, data), || self.inner.write(offset, data))
        }

        fn close(&self) -> Result<(), io::Error> {
            self.inner.close()
        }

        fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_range(s, e)
        }

        fn try_lock_shared_range(
            &self,
            s: Bound<u64>,
            e: Bound<u64>,
        ) -> Result<bool, BackendError> {
            self.inner.try_lock_shared_range(s, e)
        }

        fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_range(s, e)
        }

        fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_shared_range(s, e)
        }

        fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
            self.inner.unlock_range(s, e)
        }

        fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.query_lock_range(s, e)
        }
    }

    /// A log file, through the directory's plan if there is one. Has the methods of
    /// `std::fs::File` that the log uses.
    pub struct LogHandle {
        file: File,
        plan: Option<(Arc<Plan>, usize)>,
    }

    pub fn log_handle(file: File, path: &Path) -> LogHandle {
        let plan = plan_for(path).map(|p| {
            let id = p.attach(path);
            (p, id)
        });
        LogHandle { file, plan }
    }

    impl LogHandle {
        fn run(&self, op: Kind<'_>, real: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
            match &self.plan {
                Some((p, id)) => p.run(*id, op, real),
                None => real(),
            }
        }

        pub fn sync_data(&self) -> io::Result<()> {
            self.run(Kind::Sync, || self.file.sync_data())
        }

        pub fn sync_all(&self) -> io::Result<()> {
            self.run(Kind::Sync, || self.file.sync_all())
        }

        pub fn set_len(&self, len: u64) -> io::Result<()> {
            self.run(Kind::SetLen(len), || self.file.set_len(len))
        }

        pub fn metadata(&self) -> io::Result<Metadata> {
            self.file.metadata()
        }
    }

    impl FileExt for LogHandle {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.file.read_at(buf, offset)
        }

        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
            // One counted write per call; a short write is a whole one as far as faults go.
            let mut n = 0;
            self.run(Kind::Write(offset, buf), || {
                n = self.file.write_at(buf, offset)?;
                Ok(())
            })?;
            Ok(n)
        }
    }
}
