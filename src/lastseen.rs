//! When each user last had a connection open, cheaply: a session that ends notes the time in
//! memory (`LastSeen::touch`, a map insert, no I/O), and `flush` writes what changed to the
//! store in one transaction, every `FLUSH_INTERVAL` and once more at shutdown. Nothing is
//! written per frame or per connection; a crash loses at most the last interval's times.
//! Users online right now are "seen now" (the hub says who).
//!
//! Calls `store` (on the blocking pool) and `hub`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::App;
use crate::model::{now_ms, UserId};

/// How often noted times are written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Last-seen times not yet written to the store.
#[derive(Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<UserId, u64>>,
}

impl LastSeen {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `user` had a connection open until now.
    pub fn touch(&self, user: UserId) {
        self.lock().insert(user, now_ms());
    }

    /// The times noted since the last flush.
    pub fn pending(&self) -> HashMap<UserId, u64> {
        self.lock().clone()
    }

    /// Every user's last-seen time: `now` for users online, else the newer of the noted and
    /// the stored time. `stored` comes from `Store::last_seen`.
    pub fn merged(
        &self,
        stored: HashMap<UserId, u64>,
        online: impl Fn(UserId) -> bool,
        users: impl Iterator<Item = UserId>,
    ) -> HashMap<UserId, u64> {
        let pending = self.pending();
        let now = now_ms();
        users
            .filter_map(|u| {
                if online(u) {
                    return Some((u, now));
                }
                let t = stored.get(&u).copied().max(pending.get(&u).copied())?;
                Some((u, t))
            })
            .collect()
    }
}

/// Writes the noted times to the store; on failure keeps them for the next try.
pub async fn flush(app: &Arc<App>) {
    let batch: Vec<(UserId, u64)> = {
        let mut map = app.last_seen.lock();
        map.drain().collect()
    };
    if batch.is_empty() {
        return;
    }
    let store = app.store.clone();
    let again = batch.clone();
    let r = tokio::task::spawn_blocking(move || store.record_last_seen(&again)).await;
    let failed = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::warn!("cannot store last-seen times (kept for the next try): {failed}");
    let mut map = app.last_seen.lock();
    for (u, t) in batch {
        let e = map.entry(u).or_insert(t);
        *e = (*e).max(t);
    }
}

/// Flushes every `FLUSH_INTERVAL` until the task is aborted.
pub async fn flush_periodically(app: Arc<App>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        flush(&app).await;
    }
}
