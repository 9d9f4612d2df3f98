//! chatd: a self-hosted real-time chat server in one binary.
//!
//! The parts, each in its own module:
//! - `cli` / `config`: command-line flags (with `CHATD_*` environment fallbacks) and the validated
//!   configuration built from them.
//! - `server`: binds the listener, accepts connections, runs hyper, shuts down gracefully.
//! - `tls`: optional https/wss with rustls, certificate reload on SIGHUP.
//! - `selfsigned`: `--tls-self-signed`, a local certificate authority kept in the data
//!   directory and a server certificate for this machine's names, made at start.
//! - `http`: the one routing table, static assets, the JSON account API, security headers.
//! - `auth`: password hashing (argon2id), session tokens, cookies, login rate limits.
//! - `http::ws`: the WebSocket upgrade (Origin, session and per-user limit checks).
//! - `session`: one task per WebSocket: decodes `proto` frames, resume/catch-up, heartbeat.
//! - `proto`: the wire contract (typed frames, error codes, protocol version), frame decoding
//!   and validation.
//! - `strict_json`: the checks every client JSON document passes first (one object, no repeated
//!   key, bounded depth).
//! - `hub`: who is online and fan-out of encoded frames to bounded per-session outboxes.
//! - `writer`: the group-commit thread applying every chat mutation, then acking and fanning out.
//! - `store`: the only code that touches redb; every table and transaction.
//! - `readers`: the threads that run store reads for async code (`App::db`).
//! - `metrics`: lock-free counters and histograms, rendered for Prometheus at /metrics.
//! - `model`: identifiers and domain records shared by all of the above.
//! - `admin`: the `chatd user|token|backup|restore` commands, working on the store (or, for a
//!   backup while the server runs, through `control`).
//! - `control`: the Unix control socket in the data directory (backups of a running server).
//! - `audit`: the audit trail of admin actions (who did what to whom, from the shell or the web).
//! - `lastseen`: when each user last had a connection open (in memory, written in batches).
//! - `search`: message search: the full-text index (tantivy, derived from the store and kept
//!   following it by an indexer thread), the query language, the `search` frame.
//! - `netinfo`: the machine's addresses, for the start-up line and the self-signed certificate.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod files;
pub mod files_backup;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod lastseen;
pub mod metrics;
pub mod model;
pub mod netinfo;
pub mod proto;
pub mod ratelimit;
pub mod readers;
pub mod search;
pub mod selfsigned;
pub mod server;
pub mod session;
#[cfg(test)]
mod storage_fault_tests;
pub mod store;
pub mod strict_json;
pub mod thumbs;
pub mod tls;
pub mod writer;

/// Version string shown by `--version`, `/healthz` and the web page.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHATD_GIT_COMMIT"),
    ")"
);
