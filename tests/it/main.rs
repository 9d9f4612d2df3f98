//! One integration-test binary: every test starts the real `chatd` binary on an ephemeral port
//! with a temporary data directory and talks to it over the network.
mod accounts;
mod admin_api;
mod assets;
mod bench_smoke;
mod build_fresh;
mod cli;
mod damage;
mod files;
mod first_hour;
mod http_edge;
mod observability;
mod ops;
mod profile;
mod search;
mod storage_full;
mod support;
mod tls;
mod ws_basics;
mod ws_groups;
mod ws_lifecycle;
mod ws_presence;
mod ws_robustness;
mod ws_unread;
