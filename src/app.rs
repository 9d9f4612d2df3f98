//! The shared state of one running server: configuration, the store handle and authentication
//! state. Handlers receive an `Arc<App>`; there is no global. `App::db` is how async code reaches
//! the blocking store: on tokio's blocking pool, never on a runtime worker.

use crate::auth::Auth;
use crate::config::Config;
use crate::store::{Store, StoreError};

pub struct App {
    pub config: Config,
    pub store: Store,
    pub auth: Auth,
}

impl App {
    /// Runs a store operation on the blocking pool and waits for it.
    pub async fn db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Io(std::io::Error::other(format!(
                "store task failed: {e}"
            )))),
        }
    }
}
