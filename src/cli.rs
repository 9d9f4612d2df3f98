//! Command-line interface: clap types only. Every flag has a `CHATD_*` environment fallback and
//! its doc comment is its `--help` text. Turning these into a validated `Config` is `config`'s job;
//! running the commands is `main`'s and `admin`'s.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// chatd: a self-hosted real-time chat server. Run without a subcommand to serve.
#[derive(Parser, Debug)]
#[command(name = "chatd", version = crate::VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Directory holding the database (created if missing)
    #[arg(
        long,
        env = "CHATD_DATA_DIR",
        default_value = "./chatd-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Log verbosity: error, warn, info, debug, trace, or per-module directives such as
    /// "info,chatd=debug"
    #[arg(long, env = "CHATD_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    /// Log line format: "text" for people, "json" (one object per line) for log collectors
    #[arg(long, env = "CHATD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the chat server (the default when no subcommand is given)
    Serve(ServeArgs),
    /// Manage accounts. Works while the server runs (through the control socket in the data
    /// directory; signing a user out also closes their open connections) or while it is stopped
    #[command(subcommand)]
    User(UserCommand),
    /// Manage bearer tokens for bots and scripts. Works while the server runs or is stopped
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a consistent copy of the database to a new file. Works while the server runs (it
    /// asks the server through the control socket in the data directory, and chat goes on) or
    /// while it is stopped
    Backup {
        /// The file to write (must not exist yet)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace the database with a backup file. Stop the server first; the replaced database is
    /// kept beside it as chatd.redb.before-restore-<time>
    Restore {
        /// A file written by `chatd backup`
        file: PathBuf,
    },
    /// Verify the data directory without changing it: redb's integrity check, every record's
    /// checksum, each conversation's seqs, the indexes, the log against the database. Prints a
    /// summary and exits non-zero on damage. On a running server it checks a snapshot (taken
    /// like `chatd backup`)
    Check {
        /// Check this database file (a backup) instead of the data directory
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Write a new database from everything readable in a damaged one (unreadable messages
    /// become markers at their seq), keep the old file as chatd.redb.before-repair-<time>, and
    /// print what was lost. Never changes the damaged file. Stop the server first
    Repair,
    /// Rewrite the database densely (a copy in key order, like `chatd backup` makes) and put
    /// it in place, keeping the old file as chatd.redb.before-compact-<time>: a busy database
    /// shrinks to about half. Stop the server first
    Compact,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token that logs in as NAME (sent as `Authorization: Bearer <token>`); prints it
    /// once. It stays valid until the password changes or the account is disabled
    Create {
        name: String,
        /// A note to tell tokens apart, e.g. "build bot"
        #[arg(long, default_value = "")]
        label: String,
    },
}

/// Flags of the server.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TCP port to listen on (0 picks a free port and logs it)
    #[arg(long, env = "CHATD_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on (0.0.0.0 = every IPv4 interface, :: = every interface)
    #[arg(long, env = "CHATD_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Who may create an account from the web page: "open" (anyone who can reach the server) or
    /// "closed" (only admins, with `chatd user add` or the admin screen, and people with an
    /// invite link). While no account exists the first one may always register; the first
    /// account ever created is an admin. Once an admin sets the mode in the admin screen, the
    /// stored setting wins over this flag
    #[arg(long, env = "CHATD_REGISTRATION", value_enum, default_value_t = Registration::Open)]
    pub registration: Registration,

    /// Most simultaneous TCP connections; further ones wait in the kernel's accept queue
    /// [default: 100000]. chatd raises its open-file limit to fit; when the hard limit is
    /// lower, it says so at start if this was given (at debug level otherwise)
    #[arg(long, env = "CHATD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Days a browser login stays valid
    #[arg(long, env = "CHATD_SESSION_DAYS", default_value_t = 30)]
    pub session_days: u32,

    /// Another origin (scheme://host[:port]) whose pages may open WebSocket connections, besides
    /// the server's own; repeat for several, or separate with commas in the variable
    #[arg(
        long = "allowed-origin",
        env = "CHATD_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Seconds between WebSocket pings the server sends
    #[arg(long, env = "CHATD_PING_INTERVAL", default_value_t = 20)]
    pub ping_interval: u64,

    /// Seconds of silence (no frame, no pong) after which a connection is closed
    #[arg(long, env = "CHATD_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,

    /// Longest message text, in UTF-8 bytes
    #[arg(long, env = "CHATD_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024)]
    pub max_message_bytes: usize,

    /// Largest file upload, in MiB (larger gets 413 file_too_large)
    #[arg(long, env = "CHATD_MAX_UPLOAD_MB", default_value_t = 25)]
    pub max_upload_mb: u64,

    /// Total size of all stored files, in MiB; an upload that would pass it gets 413
    /// quota_exceeded (default: unlimited)
    #[arg(long, env = "CHATD_FILES_QUOTA_MB")]
    pub files_quota_mb: Option<u64>,

    /// Seconds after which an upload never attached to a message is removed (a day). Hidden:
    /// for tests and unusual setups
    #[arg(long, env = "CHATD_UNATTACHED_FILE_TTL_SECS", default_value_t = 24 * 3600,
          hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub unattached_file_ttl_secs: u64,

    /// Files one message may carry
    #[arg(long, env = "CHATD_MAX_ATTACHMENTS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub max_attachments: u64,

    /// Frames per second one WebSocket connection may send on average (bursts of twice that are
    /// fine); beyond it frames get a rate_limited error, and persistent floods are disconnected
    #[arg(long, env = "CHATD_MAX_FRAMES_PER_SECOND", default_value_t = 100)]
    pub max_frames_per_second: u32,

    /// Most simultaneous WebSocket connections (devices, tabs) per user
    #[arg(long, env = "CHATD_MAX_CONNECTIONS_PER_USER", default_value_t = 16)]
    pub max_connections_per_user: usize,

    /// Memory for the database's page cache, in MiB: recently read pages and the writes of the
    /// last half second. Default: an eighth of the machine's memory, between 32 and 1024
    #[arg(long, env = "CHATD_CACHE_MB")]
    pub cache_mb: Option<u64>,

    /// Memory for building the message search index, in MiB (tantivy's indexing buffer; a
    /// full buffer is written out as a new segment). At least 16
    #[arg(long, env = "CHATD_SEARCH_MEMORY_MB", default_value_t = 32)]
    pub search_memory_mb: u64,

    /// PEM certificate chain: serve https and wss (with --tls-key). Send SIGHUP to reload a
    /// renewed certificate without a restart
    #[arg(
        long,
        env = "CHATD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(
        long,
        env = "CHATD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve https and wss with a certificate chatd makes itself: a small certificate
    /// authority kept in <data-dir>/tls/ (created on first use, valid 10 years; trust it once
    /// on each device, see docs/OPERATIONS.md) signs, at each start, a certificate for this
    /// machine's names and addresses. Its SHA-256 fingerprint is printed at start
    #[arg(
        long,
        env = "CHATD_TLS_SELF_SIGNED",
        conflicts_with_all = ["tls_cert", "tls_key"]
    )]
    pub tls_self_signed: bool,

    /// chatd runs behind a reverse proxy on this machine or network: take the client address
    /// from X-Real-IP / X-Forwarded-For (for logs, rate limits and the loopback-only /metrics)
    /// and https from X-Forwarded-Proto (for Secure cookies). Only set it when clients cannot
    /// reach chatd except through the proxy, or they could fake their address
    #[arg(long, env = "CHATD_BEHIND_PROXY")]
    pub behind_proxy: bool,

    /// Serve GET /metrics to every client address, not only loopback
    #[arg(long, env = "CHATD_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// Start over with a new, empty database although this data directory held one that is now
    /// missing or empty (chatd refuses that otherwise). Every account and message of the old
    /// one is gone; `chatd restore` a backup instead if you have one. Use once, then remove
    #[arg(long, env = "CHATD_NEW_DATABASE")]
    pub new_database: bool,

    /// Start although the write-ahead log does not match the database (damaged records with
    /// intact ones after them, a missing or foreign log, a gap after the database's state),
    /// without the logged changes that cannot be applied: they are lost, and the log files are
    /// kept aside as chatd.wal*.damaged-<time>. chatd refuses such a start otherwise. Use
    /// once, then remove
    #[arg(long, env = "CHATD_DISCARD_DAMAGED_LOG")]
    pub discard_damaged_log: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account (asks for the password twice on a terminal)
    Add {
        /// The account name: 1-32 letters, digits, '_', '-' or '.'
        name: String,
        /// Give the account admin rights
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input instead of asking
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (signs the account out everywhere)
    Passwd {
        name: String,
        /// Read the password from the first line of standard input instead of asking
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every account
    List,
    /// Lock an account out: it cannot log in and its sessions stop working at once
    Disable { name: String },
    /// Allow a disabled account to log in again
    Enable { name: String },
}
