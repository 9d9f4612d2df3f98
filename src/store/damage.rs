//! Damaged records met while serving: counted (`seen`, shown by `/metrics` as
//! `chatd_store_damaged_records_total` and making `/healthz` say `degraded`) and logged once
//! per record, so a damaged page that every catch-up reads is one ERROR line, not thousands.
//!
//! A record is damaged when its checksum does not match (`codec::open_sealed`), it does not
//! decode, or redb fails or panics reading it. The readers skip it (a message becomes a marker
//! at its seq, see `store::chat`), so nothing loops and nothing is silently dropped; `chatd
//! check` finds every one, `chatd repair` writes a database without them. Process-wide (one
//! server per process); calls nothing outside the store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

static SEEN: AtomicU64 = AtomicU64::new(0);
static LOGGED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
/// Distinct records logged in full; beyond this, every 1,000th report is logged.
const LOG_DISTINCT: usize = 1024;

/// How many times a damaged record was met since the process started.
pub fn seen() -> u64 {
    SEEN.load(Ordering::Relaxed)
}

/// Set by `chatd repair`, which reports what it lost itself.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Stops (or restarts) the ERROR lines of `report`; the count goes on.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Counts a damaged record (`what`: table and key) and logs it the first time.
pub fn report(what: &str, why: &str) {
    let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    let set = logged.get_or_insert_with(HashSet::new);
    if set.contains(what) {
        return;
    }
    if set.len() < LOG_DISTINCT {
        set.insert(what.to_string());
    } else if n % 1000 != 0 {
        return;
    }
    tracing::error!(
        damaged_records = n,
        "damaged record in the database: {what} ({why}); it is skipped (a message shows as \"could not be read\"). Run `chatd check` on a backup (`chatd backup`), then `chatd repair` or `chatd restore` while the server is stopped"
    );
}

/// The text of a caught panic's payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// Runs `f`, turning a panic (redb panics on some damaged pages) into `None`.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}
