//! The shared state of one running server: configuration, the store handle, authentication
//! state, the hub (who is online), the message writer, and the shutdown signal. Handlers and
//! sessions receive an `Arc<App>`; there is no global. `App::db` is how async code reaches the
//! blocking store: on the store reader threads (`readers`), never on a runtime worker.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use crate::auth::Auth;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::readers::Readers;
use crate::store::{Store, StoreError};
use crate::writer::Writer;

pub struct App {
    pub config: Config,
    pub store: Store,
    pub auth: Auth,
    pub hub: Arc<Hub>,
    pub writer: Writer,
    /// The threads that run `App::db` calls.
    readers: Readers,
    /// Counters and histograms for /metrics.
    pub metrics: Arc<Metrics>,
    /// When the server started (for uptime).
    pub started: std::time::Instant,
    /// One permit per WebSocket session (they outlive their HTTP connection), so the limit on
    /// connections covers them and shutdown can wait for them.
    pub sessions: Arc<Semaphore>,
    /// Last-seen times noted since they were last written (`lastseen`).
    pub last_seen: crate::lastseen::LastSeen,
    /// Profile changes per user (each is a write and a frame to everyone online): 10 at once,
    /// then one every 6 s.
    pub profile_updates: crate::ratelimit::KeyedLimiter<u64>,
    /// Uploaded files on disk (`files`).
    pub files: Arc<crate::files::Blobs>,
    /// Message search (`search`): the index and its indexer thread.
    pub search: crate::search::Search,
    /// Flips to true when the server begins shutting down; sessions close with 1001.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

impl App {
    /// Builds the state and starts the writer thread.
    pub fn new(
        config: Config,
        store: Store,
        auth: Auth,
    ) -> std::io::Result<(Arc<App>, std::thread::JoinHandle<()>)> {
        let hub = Arc::new(Hub::default());
        let stats = Arc::new(Metrics::default());
        let l = &config.limits;
        let (search, hints) =
            crate::search::Search::start(store.clone(), &config.data_dir, config.search_memory_mb)?;
        let (writer, thread) = Writer::start(
            store.clone(),
            hub.clone(),
            l.writer_queue,
            l.writer_batch_max,
            l.broadcast_group_max,
            stats.clone(),
            Some(hints),
        )?;
        let readers = Readers::start(store.clone(), l.store_readers)?;
        let files = Arc::new(crate::files::Blobs::open(&config.data_dir, l)?);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let sessions = Arc::new(Semaphore::new(l.max_connections));
        let profile_updates = crate::ratelimit::KeyedLimiter::new(
            10,
            std::time::Duration::from_secs(6),
            l.rate_limit_keys,
        );
        Ok((
            Arc::new(App {
                config,
                store,
                auth,
                hub,
                writer,
                readers,
                metrics: stats,
                started: std::time::Instant::now(),
                sessions,
                last_seen: Default::default(),
                profile_updates,
                files,
                search,
                shutdown,
                shutdown_tx,
            }),
            thread,
        ))
    }

    /// Tells every session to close (1001).
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }

    /// Runs a store operation on a store reader thread and waits for it.
    pub async fn db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.readers.run(f).await
    }
}
