//! Store reader threads: a fixed set of threads (`Limits::store_readers`) that run store
//! reads for the async code, so a redb read (which may wait for the disk) never runs on a
//! runtime worker. `App::db` is the only caller; this module calls nothing but the closures it
//! is given (which call `store`).
//!
//! Why not tokio's blocking pool: it starts a thread for every call that finds none idle (up
//! to 512), and under a reconnect storm each of thousands of short reads woke its own thread.
//! A `catchup` profile showed about a fifth of the server's CPU in thread switches. Here jobs
//! queue in one FIFO; a reader that finishes a job takes the next without sleeping, and a
//! sleeping reader is woken only when one is needed. The queue is bounded by its callers:
//! every caller awaits its result, so there is at most one job per session or request.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::store::{Store, StoreError};

type Job = Box<dyn FnOnce(&Store) + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Readers waiting on `ready`.
    idle: usize,
    /// The pool was dropped: readers finish what is queued and exit.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    /// A panic in a job is caught outside the lock, so a poisoned lock only means a panic in
    /// this module's own few lines; the queue is still consistent.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the reader threads; dropping it lets them exit once the queue is empty.
pub struct Readers {
    shared: Arc<Shared>,
}

impl Readers {
    /// Starts `threads` readers (at least one) on `store`.
    pub fn start(store: Store, threads: usize) -> std::io::Result<Readers> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let store = store.clone();
            std::thread::Builder::new()
                .name(format!("chatd-read-{i}"))
                .spawn(move || reader(&shared, &store))?;
        }
        Ok(Readers { shared })
    }

    /// Runs `f` on a reader thread and waits for its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let r = catch_unwind(AssertUnwindSafe(|| f(store))).unwrap_or_else(|_| {
                Err(StoreError::Io(std::io::Error::other(
                    "a store read panicked",
                )))
            });
            let _ = tx.send(r);
        });
        {
            let mut q = self.shared.lock();
            q.jobs.push_back(job);
            // A job never waits behind a slow one (a read from a cold disk) while a reader
            // sleeps. (Waking one only when more jobs wait than readers run saved ~8 % of the
            // thread switches in a reconnect storm, within the noise, but a job could then wait
            // a whole disk read.)
            if q.idle > 0 {
                self.shared.ready.notify_one();
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Io(std::io::Error::other(
                "the store readers have stopped",
            )))
        })
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

fn reader(shared: &Shared, store: &Store) {
    let mut q = shared.lock();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job(store);
            q = shared.lock();
        } else if q.closed {
            return;
        } else {
            q.idle += 1;
            q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_concurrently_survives_a_panic_and_stops_when_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let readers = Arc::new(Readers::start(store, 3).expect("threads"));

        // Many callers at once, each gets its own answer.
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let r = readers.clone();
            tasks.push(tokio::spawn(async move {
                r.run(move |s| Ok((i, s.user_count()?))).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.expect("task").expect("read"), (i as u64, 0));
        }

        // Three jobs that wait for each other only finish if three readers run them at once.
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let waits: Vec<_> = (0..3)
            .map(|_| {
                let (r, b) = (readers.clone(), barrier.clone());
                tokio::spawn(async move {
                    r.run(move |_| {
                        b.wait();
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        for w in waits {
            w.await.expect("task").expect("job");
        }

        // A panicking read is an error for its caller; the reader keeps serving.
        let e = readers
            .run(|_| -> Result<(), StoreError> { panic!("boom") })
            .await;
        assert!(e.is_err());
        for _ in 0..5 {
            assert_eq!(readers.run(|s| s.user_count()).await.expect("read"), 0);
        }

        // Dropping the pool lets the threads exit (they hold the store).
        let shared = readers.shared.clone();
        drop(readers);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&shared) > 1 {
            assert!(std::time::Instant::now() < deadline, "readers did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
