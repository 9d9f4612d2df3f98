//! Operational counters, gauges and histograms, and their Prometheus text rendering for
//! `GET /metrics`. Everything here is a relaxed atomic: the writer, the fan-out, sessions and
//! the accept loop bump them without locks; `render` reads them. Figures that live in the
//! database (users, messages stored, file size) are passed in by the HTTP handler, which reads
//! them through `App::db`. This module calls nothing.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A fixed-bucket histogram (cumulative when rendered, as Prometheus wants).
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the +Inf bucket.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of observations in millionths (µs for seconds), to stay integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add((v * 1_000_000.0).round() as u64, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1_000_000.0;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Relaxed));
    }
}

/// Commit latency buckets, seconds: an fsync takes 0.1–10 ms on SSDs, far more on SD cards.
const COMMIT_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Operations per commit (group commit batch size).
const COMMIT_OPS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2048.0,
];

/// Every in-process metric of one server.
pub struct Metrics {
    /// Write transactions committed (fsync'd) by the message writer.
    pub commits: AtomicU64,
    /// Operations applied by the writer (sends, reads, membership changes).
    pub ops: AtomicU64,
    /// New messages stored since start (duplicates excluded).
    pub messages: AtomicU64,
    /// Message frames queued to recipients' sessions by the fan-out.
    pub deliveries: AtomicU64,
    pub commit_seconds: Histogram,
    pub commit_ops: Histogram,
    /// Checkpoints: durable redb commits that make the logged batches durable in the database.
    pub checkpoint_seconds: Histogram,
    /// Open HTTP connections (until they upgrade to WebSocket).
    pub http_connections: AtomicI64,
    /// Accepted WebSocket upgrades since start.
    pub ws_upgrades: AtomicU64,
    /// Sessions closed because their outbox overflowed (slow clients).
    pub slow_closes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            commit_seconds: Histogram::new(COMMIT_SECONDS),
            commit_ops: Histogram::new(COMMIT_OPS),
            checkpoint_seconds: Histogram::new(COMMIT_SECONDS),
            http_connections: AtomicI64::new(0),
            ws_upgrades: AtomicU64::new(0),
            slow_closes: AtomicU64::new(0),
        }
    }
}

/// Figures read elsewhere (hub, store) at scrape time.
pub struct Snapshot {
    pub sessions: u64,
    pub users_online: u64,
    /// From the database; `None` if it could not be read (then omitted).
    pub users: Option<u64>,
    pub messages_in_store: Option<u64>,
    pub db_bytes: Option<u64>,
    pub uptime: Duration,
    /// Why writes to the data directory are refused (`storage_full`, `storage_error`), or
    /// `None` while they are accepted.
    pub storage_refusing: Option<&'static str>,
    /// Times writing stopped, and writes refused, since the server started.
    pub storage_stops: u64,
    pub storage_refused: u64,
    /// Damaged records met since the start (`store::damage::seen`).
    pub damaged_records: u64,
}

/// The reasons `chatd_storage_unwritable` has a series for.
const STORAGE_REASONS: [&str; 2] = ["storage_full", "storage_error"];

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, s: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP chatd_build_info Always 1; the version is in the label.\n# TYPE chatd_build_info gauge\nchatd_build_info{{version=\"{}\"}} 1",
            crate::VERSION.replace(['"', '\\'], "'")
        );
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        put(
            "chatd_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            s.uptime.as_secs().to_string(),
        );
        put(
            "chatd_http_connections",
            "gauge",
            "Open HTTP connections (a WebSocket leaves this count when it upgrades; see chatd_websocket_sessions).",
            self.http_connections.load(Relaxed).max(0).to_string(),
        );
        put(
            "chatd_websocket_sessions",
            "gauge",
            "Open WebSocket sessions.",
            s.sessions.to_string(),
        );
        put(
            "chatd_users_online",
            "gauge",
            "Users with at least one open session.",
            s.users_online.to_string(),
        );
        put(
            "chatd_websocket_upgrades_total",
            "counter",
            "WebSocket sessions accepted.",
            c(&self.ws_upgrades),
        );
        put(
            "chatd_slow_client_disconnects_total",
            "counter",
            "Sessions closed because they did not read their frames fast enough.",
            c(&self.slow_closes),
        );
        put(
            "chatd_messages_stored_total",
            "counter",
            "New messages stored since the server started.",
            c(&self.messages),
        );
        put(
            "chatd_messages_delivered_total",
            "counter",
            "Message frames queued to recipients' open sessions.",
            c(&self.deliveries),
        );
        put(
            "chatd_writer_commits_total",
            "counter",
            "Write transactions committed (fsync'd) by the message writer.",
            c(&self.commits),
        );
        put(
            "chatd_writer_ops_total",
            "counter",
            "Operations applied by the message writer (sends, reads, membership changes).",
            c(&self.ops),
        );
        put(
            "chatd_storage_writable",
            "gauge",
            "1 while the server can write to its data directory; 0 while writes are refused (disk full or failing: the reason is in chatd_storage_unwritable and /healthz).",
            u8::from(s.storage_refusing.is_none()).to_string(),
        );
        put(
            "chatd_storage_write_stops_total",
            "counter",
            "Times writing to the data directory stopped since the server started.",
            s.storage_stops.to_string(),
        );
        put(
            "chatd_storage_refused_writes_total",
            "counter",
            "Writes (sends, reads, logins, ...) refused because the data directory could not be written.",
            s.storage_refused.to_string(),
        );
        if let Some(n) = s.users {
            put(
                "chatd_users",
                "gauge",
                "Accounts in the database.",
                n.to_string(),
            );
        }
        if let Some(n) = s.messages_in_store {
            put(
                "chatd_messages_in_store",
                "gauge",
                "Messages in the database.",
                n.to_string(),
            );
        }
        if let Some(n) = s.db_bytes {
            put(
                "chatd_database_bytes",
                "gauge",
                "Size of the database file.",
                n.to_string(),
            );
        }
        put(
            "chatd_store_damaged_records_total",
            "counter",
            "Times a damaged database record was met and skipped (a message shows as unreadable); nonzero makes /healthz say degraded. Run chatd check.",
            s.damaged_records.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP chatd_storage_unwritable 1 for the reason writes are refused, while they are.\n# TYPE chatd_storage_unwritable gauge"
        );
        for reason in STORAGE_REASONS {
            let on = u8::from(s.storage_refusing == Some(reason));
            let _ = writeln!(out, "chatd_storage_unwritable{{reason=\"{reason}\"}} {on}");
        }
        self.commit_seconds.render(
            &mut out,
            "chatd_commit_duration_seconds",
            "Time to commit one batch of the message writer: log append and fsync, then the non-durable redb commit.",
        );
        self.checkpoint_seconds.render(
            &mut out,
            "chatd_checkpoint_duration_seconds",
            "Time of one checkpoint (durable redb commit of the logged batches, then the log emptied).",
        );
        self.commit_ops.render(
            &mut out,
            "chatd_commit_batch_ops",
            "Operations per write transaction (group commit).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(0.0005);
        h.observe(0.002);
        h.observe(0.002);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 5.0045\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }
}
