//! The validated server configuration, built once from the command line, and `Limits`: every
//! bound and size the server enforces, named in one place with what happens when it is reached.
//! Nothing here does I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Registration, ServeArgs};

/// Everything the running server needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub registration: Registration,
    /// Origins besides our own whose pages may open WebSockets (exact `scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// Add `Secure` to cookies (set when serving over TLS).
    pub secure_cookies: bool,
    /// Serve https/wss with this certificate (loaded by `main`, since this module does no I/O).
    pub tls: Option<std::sync::Arc<crate::tls::Tls>>,
    /// With `--tls-self-signed`: the local certificate authority (DER), served at `/ca.crt`
    /// so phones can fetch it (set by `main`).
    pub ca_der: Option<Vec<u8>>,
    /// Trust X-Real-IP / X-Forwarded-For / X-Forwarded-Proto from a reverse proxy.
    pub behind_proxy: bool,
    /// Serve /metrics to every address, not only loopback.
    pub metrics_public: bool,
    /// `--cache-mb`, if given (`cache_bytes` turns it into the size used).
    pub cache_mb: Option<u64>,
    /// `--search-memory-mb`: the search indexer's buffer.
    pub search_memory_mb: u64,
    pub limits: Limits,
}

/// Smallest and largest page cache chosen without `--cache-mb`, and the size used when the
/// machine's memory is unknown.
const AUTO_CACHE_MIN: u64 = 32 << 20;
const AUTO_CACHE_MAX: u64 = 1 << 30;
const AUTO_CACHE_UNKNOWN: u64 = 256 << 20;

/// The database page cache size: `--cache-mb` if given, else an eighth of `mem_total` (the
/// machine's memory in bytes, if known) between 32 MiB and 1 GiB. redb's own default, 1 GiB
/// whatever the machine, would let a long-running server on a 1 GiB Raspberry Pi grow past its
/// memory as the database outgrows it.
pub fn cache_bytes(cache_mb: Option<u64>, mem_total: Option<u64>) -> usize {
    let bytes = match (cache_mb, mem_total) {
        (Some(mb), _) => mb.saturating_mul(1 << 20),
        (None, Some(total)) => (total / 8).clamp(AUTO_CACHE_MIN, AUTO_CACHE_MAX),
        (None, None) => AUTO_CACHE_UNKNOWN,
    };
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Every bound the server enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Simultaneous TCP connections; when reached, accepting pauses until one closes.
    pub max_connections: usize,
    /// Largest JSON request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest HTTP request head hyper buffers; larger gets the connection closed (431).
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head; slower ones are disconnected.
    pub header_read_timeout: Duration,
    /// How long a browser login stays valid.
    pub session_ttl: Duration,
    /// Password hashes computed at once (each takes ~19 MiB); more wait their turn.
    pub concurrent_hashes: usize,
    /// Failed logins allowed per (account, client address) before that pair is throttled,
    /// and the refill interval: what one attacker gets against one account.
    pub login_per_account_address: (u32, Duration),
    /// Failed logins allowed per client address (IPv6: per /64) whatever the account, and the
    /// refill interval.
    pub login_per_address: (u32, Duration),
    /// Failed logins allowed per account from browsers without its device cookie, all
    /// addresses together, and the refill interval. It refills faster than one address may
    /// try (`login_per_account_address`), so one attacker cannot keep it empty.
    pub login_per_account: (u32, Duration),
    /// Failed logins allowed per device cookie (a browser that logged in to the account
    /// before; such a login is limited by this alone), and the refill interval.
    pub login_per_device: (u32, Duration),
    /// Registrations allowed per client address, and the refill interval.
    pub register_per_address: (u32, Duration),
    /// Most keys (accounts or addresses) a rate limiter tracks; when full, new keys are refused.
    pub rate_limit_keys: usize,
    /// Time given to open connections to finish after a shutdown signal.
    pub shutdown_grace: Duration,

    // ---- WebSocket sessions ----
    /// Interval of server pings.
    pub ping_interval: Duration,
    /// A connection silent this long is closed (1000 "idle timeout").
    pub idle_timeout: Duration,
    /// Longest message text in UTF-8 bytes (the storage and frame-size bound).
    pub max_message_bytes: usize,
    /// Longest message text in characters (Unicode code points), a quarter of
    /// `max_message_bytes` so any text within it fits; longer gets `text_too_long`. What the
    /// web client counts down to (`/api/server`, `welcome.limits`).
    pub max_message_chars: usize,
    /// Largest WebSocket message/frame accepted; larger closes with 1009. Leaves room for JSON
    /// escaping of a maximal text (up to 6 bytes per byte for `\uXXXX`).
    pub max_frame_bytes: usize,
    /// tungstenite's read buffer, allocated per connection and zero-filled on every read, so all
    /// of it is resident (its default is 128 KiB). Chat frames are small; larger ones just take
    /// more reads.
    pub ws_read_buffer: usize,
    /// tungstenite's cap on a connection's unsent bytes: a safety net. Frames of 4 KiB and
    /// more do not enter tungstenite's buffer (the session writes them to the socket itself,
    /// `session::write_direct`), and the buffer is written out past 8 KiB, so it holds at most
    /// ~12 KiB; a stuck client is closed by `write_timeout`, not by this. The cap is still kept
    /// above the largest frame built, the `welcome` with `conversations_max` conversations (up
    /// to ~1.6 KiB each with escaped titles and previews) and a page of messages (`from_args`
    /// raises it for a large `--max-message-bytes`). A frame over it would end the connection,
    /// so the session logs it as a bug.
    pub ws_max_write_buffer: usize,
    /// Time one socket write may take before the client counts as stalled: the connection is
    /// dropped without a close frame (nothing more can be written) and counted as a slow client.
    pub write_timeout: Duration,
    /// Frames queued for one connection; when full the client is too slow and is closed with
    /// 1008 (it resumes with `sync`, nothing is lost).
    pub outbox_frames: usize,
    /// After a client's outbox overflowed: how long its socket gets to take the rest of the
    /// frame being written and the close frame (1008). A client that reads nothing at all
    /// cannot take them; it is dropped without a close frame when this runs out.
    pub slow_close_grace: Duration,
    /// How long a closing connection waits for the client's close frame after sending its own
    /// (the close handshake) before it drops the connection.
    pub close_wait: Duration,
    /// Connections (devices) one user may hold; more get HTTP 429.
    pub max_connections_per_user: usize,
    /// Frame rate limit per connection: burst and refill interval per frame.
    pub frame_burst: u32,
    pub frame_refill: Duration,
    /// Consecutive rate-limited frames after which the connection is closed (1008).
    pub flood_close_after: u32,
    /// Typing frames forwarded per conversation per connection, at most one per this interval.
    pub typing_interval: Duration,
    /// Messages per catch-up page read from the store.
    pub catchup_page: usize,
    /// Most messages per `history` reply.
    pub history_max: u32,
    /// A catch-up page or `history` reply also ends once its message texts add up to this many
    /// bytes (it always holds at least one message), so a page of long messages stays one
    /// modest frame: encoded, at most ~6× this (JSON escapes) plus one message.
    pub page_text_bytes: usize,
    /// Most conversations listed in `welcome`/`conversations`.
    pub conversations_max: usize,
    /// Presence and read receipts are broadcast only in groups up to this size.
    pub broadcast_group_max: u64,

    // ---- message writer ----
    /// Operations waiting for the writer; when full, senders wait (backpressure).
    pub writer_queue: usize,
    /// Most operations committed in one transaction.
    pub writer_batch_max: usize,
    /// Largest upload (`POST /api/files`); larger gets 413 `file_too_large` before the body is
    /// read (`--max-upload-mb`).
    pub max_upload_bytes: u64,
    /// Total bytes of stored files; an upload that would pass it gets 413 `quota_exceeded`
    /// (`--files-quota-mb`; `None` = unlimited).
    pub files_quota_bytes: Option<u64>,
    /// Files one message may carry (`--max-attachments`).
    pub max_attachments: usize,
    /// Uploads running at once (all users); more get 429 `rate_limited`.
    pub concurrent_uploads: usize,
    /// An upload whose body stalls this long is dropped (no file remains).
    pub upload_stall: Duration,
    /// Uploads never attached to a message are removed after this long.
    pub unattached_file_ttl: Duration,
    /// Threads running store reads for sessions and HTTP handlers (`App::db`). Reads are
    /// short CPU work on cached pages, so about the core count; a few more let reads that
    /// wait for the disk overlap.
    pub store_readers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            concurrent_hashes: 2,
            login_per_account_address: (5, Duration::from_secs(60)),
            login_per_address: (20, Duration::from_secs(15)),
            login_per_account: (30, Duration::from_secs(20)),
            login_per_device: (10, Duration::from_secs(60)),
            register_per_address: (10, Duration::from_secs(60)),
            rate_limit_keys: 100_000,
            shutdown_grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_message_bytes: 16 * 1024,
            max_message_chars: 4 * 1024,
            max_frame_bytes: 6 * 16 * 1024 + 4096,
            ws_read_buffer: 1024,
            ws_max_write_buffer: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            outbox_frames: 1024,
            slow_close_grace: Duration::from_secs(2),
            close_wait: Duration::from_secs(2),
            max_connections_per_user: 16,
            frame_burst: 200,
            frame_refill: Duration::from_millis(10),
            flood_close_after: 50,
            typing_interval: Duration::from_secs(2),
            catchup_page: 100,
            history_max: 100,
            page_text_bytes: 64 * 1024,
            conversations_max: 1000,
            broadcast_group_max: 256,
            writer_queue: 8192,
            writer_batch_max: 2048,
            max_upload_bytes: 25 * 1024 * 1024,
            files_quota_bytes: None,
            max_attachments: 10,
            concurrent_uploads: 64,
            upload_stall: Duration::from_secs(30),
            unattached_file_ttl: Duration::from_secs(24 * 3600),
            store_readers: 4,
        }
    }
}

impl Config {
    /// Builds the configuration from `chatd serve` flags.
    pub fn from_args(args: &ServeArgs, data_dir: PathBuf) -> Result<Config, String> {
        let max_connections = args
            .max_connections
            .unwrap_or(Limits::default().max_connections);
        if max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if args.session_days == 0 {
            return Err("--session-days must be at least 1".into());
        }
        if args.ping_interval == 0 || args.idle_timeout <= args.ping_interval {
            return Err("--idle-timeout must be longer than --ping-interval, which must be at least 1 second".into());
        }
        if !(1..=1024 * 1024).contains(&args.max_message_bytes) {
            return Err("--max-message-bytes must be between 1 and 1048576".into());
        }
        if args.max_frames_per_second == 0 {
            return Err("--max-frames-per-second must be at least 1".into());
        }
        if args.max_connections_per_user == 0 {
            return Err("--max-connections-per-user must be at least 1".into());
        }
        if let Some(mb) = args.cache_mb {
            if !(4..=1024 * 1024).contains(&mb) {
                return Err("--cache-mb must be between 4 and 1048576".into());
            }
        }
        if !(16..=4096).contains(&args.search_memory_mb) {
            return Err("--search-memory-mb must be between 16 and 4096".into());
        }
        for o in &args.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(format!(
                    "--allowed-origin {o:?} must look like http://host[:port] or https://host[:port]"
                ));
            }
        }
        let limits = Limits {
            max_connections,
            session_ttl: Duration::from_secs(u64::from(args.session_days) * 24 * 3600),
            ping_interval: Duration::from_secs(args.ping_interval),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            max_message_bytes: args.max_message_bytes,
            max_message_chars: (args.max_message_bytes / 4).max(1),
            max_frame_bytes: 6 * args.max_message_bytes + 4096,
            max_connections_per_user: args.max_connections_per_user,
            frame_burst: args.max_frames_per_second.saturating_mul(2),
            frame_refill: Duration::from_secs(1) / args.max_frames_per_second,
            max_upload_bytes: args.max_upload_mb.saturating_mul(1024 * 1024),
            files_quota_bytes: args.files_quota_mb.map(|m| m.saturating_mul(1024 * 1024)),
            max_attachments: args.max_attachments as usize,
            unattached_file_ttl: Duration::from_secs(args.unattached_file_ttl_secs),
            ..Limits::default()
        };
        // The largest frame built stays under the write cap (see `ws_max_write_buffer`): a
        // page of texts up to `page_text_bytes` plus one message, every byte escaped (6×), and
        // the fields of up to 100 messages.
        let page_max = 6 * (limits.page_text_bytes + limits.max_message_bytes) + 100 * 1024;
        let limits = Limits {
            ws_max_write_buffer: limits.ws_max_write_buffer.max(page_max),
            ..limits
        };
        Ok(Config {
            listen: SocketAddr::new(args.bind, args.port),
            data_dir,
            registration: args.registration,
            allowed_origins: args.allowed_origins.clone(),
            secure_cookies: args.tls_cert.is_some() || args.tls_self_signed,
            tls: None,
            ca_der: None,
            behind_proxy: args.behind_proxy,
            metrics_public: args.metrics_public,
            cache_mb: args.cache_mb,
            search_memory_mb: args.search_memory_mb,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::cache_bytes;

    #[test]
    fn the_page_cache_is_an_eighth_of_memory_within_bounds_unless_given() {
        const MIB: u64 = 1 << 20;
        // A 1 GiB Raspberry Pi: 128 MiB, not redb's 1 GiB.
        assert_eq!(cache_bytes(None, Some(1024 * MIB)), 128 << 20);
        assert_eq!(cache_bytes(None, Some(24 * 1024 * MIB)), 1 << 30);
        assert_eq!(cache_bytes(None, Some(128 * MIB)), 32 << 20);
        assert_eq!(cache_bytes(None, None), 256 << 20);
        assert_eq!(cache_bytes(Some(64), Some(24 * 1024 * MIB)), 64 << 20);
        assert_eq!(cache_bytes(Some(4096), Some(1024 * MIB)), 4096 << 20);
    }
}
