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
    /// Add `Secure` to cookies (set when serving over TLS).
    pub secure_cookies: bool,
    pub limits: Limits,
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
    /// Failed logins allowed per account before it is throttled, and the refill interval.
    pub login_per_account: (u32, Duration),
    /// Failed logins allowed per client address, and the refill interval.
    pub login_per_address: (u32, Duration),
    /// Registrations allowed per client address, and the refill interval.
    pub register_per_address: (u32, Duration),
    /// Most keys (accounts or addresses) a rate limiter tracks; when full, new keys are refused.
    pub rate_limit_keys: usize,
    /// Time given to open connections to finish after a shutdown signal.
    pub shutdown_grace: Duration,
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
            login_per_account: (5, Duration::from_secs(60)),
            login_per_address: (20, Duration::from_secs(15)),
            register_per_address: (10, Duration::from_secs(60)),
            rate_limit_keys: 100_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Builds the configuration from `chatd serve` flags.
    pub fn from_args(args: &ServeArgs, data_dir: PathBuf) -> Result<Config, String> {
        if args.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if args.session_days == 0 {
            return Err("--session-days must be at least 1".into());
        }
        let limits = Limits {
            max_connections: args.max_connections,
            session_ttl: Duration::from_secs(u64::from(args.session_days) * 24 * 3600),
            ..Limits::default()
        };
        Ok(Config {
            listen: SocketAddr::new(args.bind, args.port),
            data_dir,
            registration: args.registration,
            secure_cookies: false,
            limits,
        })
    }
}
