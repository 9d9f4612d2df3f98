//! Whether the store can write right now, and the one place that says so in the log.
//!
//! A write to the data directory can fail: the file system is full (`ENOSPC`, `EDQUOT`), or the
//! disk reports an I/O error. The store then stops taking writes (`Health::stop`): every write
//! is refused at once with `StoreError::Unwritable` (clients get `storage_full` or
//! `storage_error`) without touching a file, reads go on, and nothing acknowledged is lost (it
//! is in the log or in redb's durable state). The store's sync thread retries what is owed
//! every `RETRY` (see `Store::heal`) and calls `resume` once it has all been written and
//! fsync'd. The log gets one line when writing stops (with the reason) and one when it resumes,
//! however many writes were refused between them; `/healthz` and `/metrics` read `status`.
//!
//! Only `store` changes this; the HTTP layer reads it through `Store::write_health`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the store retries a stopped write path.
pub const RETRY: Duration = Duration::from_millis(500);

/// Why writes are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The file system (or the user's quota) is full.
    Full,
    /// Any other failure to write or fsync (a disk error, a read-only remount, ...).
    Io,
}

impl Problem {
    /// The failure an I/O error stands for.
    pub fn of(e: &io::Error) -> Problem {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Problem::Full,
            _ if matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT)) => Problem::Full,
            _ => Problem::Io,
        }
    }

    /// The machine-readable code clients, `/healthz` and `/metrics` see.
    pub fn code(self) -> &'static str {
        match self {
            Problem::Full => "storage_full",
            Problem::Io => "storage_error",
        }
    }
}

/// A refused write: why, in words for people.
#[derive(Clone, Debug)]
pub struct Unwritable {
    pub problem: Problem,
    pub detail: String,
}

impl Unwritable {
    /// What a client is told (the detail, with file names, is for the log and the admin).
    pub fn client_message(&self) -> &'static str {
        match self.problem {
            Problem::Full => {
                "the server's disk is full: nothing was stored; retry later (writing resumes by itself once space is free)"
            }
            Problem::Io => {
                "the server cannot write to its disk: nothing was stored; retry later"
            }
        }
    }
}

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problem {
            Problem::Full => write!(
                f,
                "the server's disk is full ({}); writes resume by themselves once space is free",
                self.detail
            ),
            Problem::Io => write!(
                f,
                "the server cannot write to its disk ({}); it keeps retrying",
                self.detail
            ),
        }
    }
}

/// What `/healthz` and `/metrics` show while writes are refused.
#[derive(Clone, Debug)]
pub struct Status {
    pub problem: Problem,
    pub detail: String,
    /// Wall-clock milliseconds when writing stopped.
    pub since_ms: u64,
    /// Free space needed before writing can resume (a lower bound: what must still be written
    /// to the database file, plus room for the log); 0 if unknown.
    pub needs_bytes: u64,
}

/// The write health of one store. Shared by every handle of it.
pub struct Health {
    writable: AtomicBool,
    stopped: Mutex<Option<Stopped>>,
    /// Times writing stopped since the store was opened.
    stops: AtomicU64,
    /// Writes refused while stopped (since the store was opened).
    refused: AtomicU64,
    /// `RETRY`, except in tests (milliseconds).
    retry_ms: AtomicU64,
}

struct Stopped {
    status: Status,
    at: Instant,
    refused_before: u64,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            writable: AtomicBool::new(true),
            stopped: Mutex::new(None),
            stops: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retry_ms: AtomicU64::new(RETRY.as_millis() as u64),
        }
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Stopped>> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How often the store retries while stopped.
    pub fn retry(&self) -> Duration {
        Duration::from_millis(self.retry_ms.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub fn set_retry(&self, d: Duration) {
        self.retry_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether writes are accepted.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// `Ok` while writes are accepted; otherwise the reason (and the refusal is counted).
    pub fn check(&self) -> Result<(), Unwritable> {
        self.check_ops(1)
    }

    /// `check` for `n` writes at once (a batch of the message writer).
    pub fn check_ops(&self, n: u64) -> Result<(), Unwritable> {
        if self.writable() {
            return Ok(());
        }
        match self.lock().as_ref() {
            Some(s) => {
                self.refused.fetch_add(n, Ordering::Relaxed);
                Err(Unwritable {
                    problem: s.status.problem,
                    detail: s.status.detail.clone(),
                })
            }
            // Resumed meanwhile.
            None => Ok(()),
        }
    }

    /// Stops writes because `what` failed with `e` (`needs_bytes`: see `Status`). Logs once per
    /// episode; a later failure while stopped only updates the reason.
    pub fn stop(&self, what: &str, e: &io::Error, needs_bytes: u64) -> Unwritable {
        let problem = Problem::of(e);
        let detail = format!("{what}: {e}");
        let mut s = self.lock();
        match s.as_mut() {
            Some(s) => {
                s.status.problem = problem;
                s.status.detail = detail.clone();
                s.status.needs_bytes = needs_bytes;
            }
            None => {
                self.stops.fetch_add(1, Ordering::Relaxed);
                let need = match needs_bytes {
                    0 => String::new(),
                    n => format!(" (it needs at least {} KiB free)", n.div_ceil(1024)),
                };
                let what_to_do = match problem {
                    Problem::Full => "free space on the data directory's file system",
                    Problem::Io => "check the disk (dmesg, SMART)",
                };
                tracing::error!(
                    reason = problem.code(),
                    "writing stopped: {detail}. Reads go on; writes are refused ({}) until chatd can write again, which it retries every {} ms by itself{need}: {what_to_do}. Nothing acknowledged is lost",
                    problem.code(),
                    RETRY.as_millis()
                );
                *s = Some(Stopped {
                    status: Status {
                        problem,
                        detail: detail.clone(),
                        since_ms: crate::model::now_ms(),
                        needs_bytes,
                    },
                    at: Instant::now(),
                    refused_before: self.refused.load(Ordering::Relaxed),
                });
                self.writable.store(false, Ordering::Release);
            }
        }
        Unwritable { problem, detail }
    }

    /// Writes are accepted again (everything owed is on disk). Logs once.
    pub fn resume(&self) {
        let mut s = self.lock();
        if let Some(stopped) = s.take() {
            self.writable.store(true, Ordering::Release);
            let refused = self.refused.load(Ordering::Relaxed) - stopped.refused_before;
            tracing::info!(
                after_ms = stopped.at.elapsed().as_millis() as u64,
                refused,
                "writing resumed: everything owed is on disk ({} writes were refused while stopped, over {:.1} s)",
                refused,
                stopped.at.elapsed().as_secs_f64()
            );
        }
    }

    /// Why writes are refused, or `None` while they are accepted.
    pub fn status(&self) -> Option<Status> {
        if self.writable() {
            return None;
        }
        self.lock().as_ref().map(|s| s.status.clone())
    }

    /// Times writing stopped, and writes refused, since the store was opened.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stops.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_other_errors_are_told_apart() {
        assert_eq!(
            Problem::of(&io::Error::from_raw_os_error(28)),
            Problem::Full
        );
        assert_eq!(
            Problem::of(&io::Error::from_raw_os_error(122)),
            Problem::Full
        );
        assert_eq!(Problem::of(&io::Error::from_raw_os_error(5)), Problem::Io);
        assert_eq!(
            Problem::of(&io::Error::new(io::ErrorKind::StorageFull, "x")),
            Problem::Full
        );
    }

    #[test]
    fn one_stop_one_resume_and_refusals_are_counted() {
        let h = Health::default();
        assert!(h.check().is_ok() && h.status().is_none());
        h.stop("a", &io::Error::from_raw_os_error(28), 4096);
        h.stop("b", &io::Error::from_raw_os_error(5), 0);
        assert!(!h.writable());
        let s = h.status().unwrap();
        // The text after "b: " is the C library's (glibc and musl word EIO differently).
        let eio = io::Error::from_raw_os_error(5).to_string();
        assert_eq!(
            (s.problem, s.detail.as_str()),
            (Problem::Io, format!("b: {eio}").as_str())
        );
        for _ in 0..3 {
            assert_eq!(h.check().unwrap_err().problem, Problem::Io);
        }
        assert_eq!(h.counts(), (1, 3), "one episode, three refusals");
        h.resume();
        h.resume();
        assert!(h.check().is_ok() && h.status().is_none());
        assert_eq!(h.counts(), (1, 3));
    }
}
