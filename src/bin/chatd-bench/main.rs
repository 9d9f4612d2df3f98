//! chatd-bench: chatd's own load generator (not shipped in the packages).
//!
//! It seeds a fresh data directory (users, bearer tokens, conversations) through the store,
//! starts the real `chatd` binary on it, drives it over loopback with real WebSocket clients
//! speaking docs/PROTOCOL.md, and reports the server's own CPU-seconds (utime+stime from
//! /proc) and RSS, latencies, errors, and messages per redb commit (from /metrics).
//!
//! Sends follow an open-loop schedule: each message has a planned send time and latency is
//! measured from that plan, so a stalled server cannot hide its latency by slowing the senders.
//! Every message carries its sender, sequence number and planned time; receivers check that each
//! expected delivery arrives exactly once.
//!
//! Clients bind to 127.0.0.2, 127.0.0.3, ... (20,000 connections per address) to stay clear of
//! the per-address ephemeral port limit. Raise `ulimit -n` first for large runs.
//!
//! This file holds the command line, the shared harness (the server under test, seeding,
//! clients, measurements, the open-loop messaging driver) and the dispatch; each scenario is its
//! own module next to it and may call anything here.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use chatd::model::{now_ms, ConversationId, UserId};

mod ack;
mod broadcast;
mod catchup;
mod direct;
/// The durability scenarios (crashloop, restart, dbsize).
mod durability;
mod files;
mod idle;
mod logins;
mod rooms;
mod search;
mod storm;

use chatd::store::chat::{MemberCache, Target};
use chatd::store::Store;

type Ws = WebSocketStream<TcpStream>;
type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "chatd-bench",
    about = "Load generator and benchmarks for chatd"
)]
struct Cli {
    /// The chatd binary to start (use the release build for figures)
    #[arg(long, default_value = "target/release/chatd")]
    chatd: PathBuf,
    /// Write the results as JSON to this file as well
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the server's data (a fresh subdirectory is made; default: the system temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Hold N authenticated idle connections; report server RSS per connection
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold them (heartbeats keep running)
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
    /// N users send 1:1 messages to random peers (4 each) at a total offered rate
    Direct {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Messages per second, all senders together
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Many groups of `size` members with a total ingest rate
    Rooms {
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        size: usize,
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// One group of M members; `senders` members each keep one message in flight
    Broadcast {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 4)]
        senders: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Send reactions (`react`, toggling one of four emoji on one message) instead of
        /// short messages: an event fanned out to every member, like a message (issue 23)
        #[arg(long)]
        react: bool,
    },
    /// One sender, one message at a time; compared with the disk's own write+fsync latency
    Ack {
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Open N connections as fast as possible (upgrade + session check + welcome)
    Storm {
        #[arg(long, default_value_t = 10000)]
        conns: usize,
        /// Handshakes in flight at once
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
    },
    /// Upload and download throughput of one large file, the thumbnail time of a
    /// 12-megapixel JPEG, and server RSS during `concurrent` uploads at once
    /// (src/bin/chatd-bench/files.rs)
    Files {
        /// Size of each upload, MiB
        #[arg(long, default_value_t = 25)]
        mib: u64,
        #[arg(long, default_value_t = 20)]
        concurrent: usize,
    },
    /// N concurrent password logins; server RSS at idle, at peak, after, and `settle` s later
    /// (src/bin/chatd-bench/logins.rs)
    Logins {
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Seconds to keep watching RSS after the burst
        #[arg(long, default_value_t = 60)]
        settle: u64,
    },
    /// N clients reconnect at once, each missing `missed` messages, while `rooms` runs
    Catchup {
        #[arg(long, default_value_t = 10000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        missed: usize,
        /// Background `rooms` load during the catch-up: groups of 10 (0 = none)
        #[arg(long, default_value_t = 100)]
        rooms_groups: usize,
        /// Background `rooms` ingest rate, messages/s
        #[arg(long, default_value_t = 2000)]
        rooms_rate: u64,
        /// How long the background load sends
        #[arg(long, default_value_t = 6)]
        rooms_secs: u64,
        /// Ask for one `message` frame per replayed message instead of `messages` frames of
        /// up to a page each (`sync` with `batch: true`, as the web client does)
        #[arg(long)]
        no_batch: bool,
    },
    /// Senders with acks and resends; the server is killed (SIGKILL) at random moments for N
    /// cycles; then every acked message must be stored exactly once at its seq
    Crashloop(durability::CrashloopArgs),
    /// Time until the server is back after kill -9 under load, on a database of N messages
    Restart(durability::RestartArgs),
    /// Bytes per message on disk against message count, sent through the server
    Dbsize(durability::DbsizeArgs),
    /// Message search on a large history: index build time and size, query p50/p95
    /// (src/bin/chatd-bench/search.rs)
    Search(search::SearchArgs),
}

// ---- the server under test ---------------------------------------------------------------

struct Server {
    child: Child,
    addr: SocketAddr,
    pid: u32,
    dir: PathBuf,
}

impl Server {
    fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Res<Server> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--log-level",
                "warn,chatd=info",
            ])
            .args([
                "--max-connections",
                "1000000",
                "--max-connections-per-user",
                "100000",
            ])
            // Benchmarks measure the server, not its flood protection.
            .args(["--max-frames-per-second", "1000000"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (build it with cargo build --release)",
                    bin.display()
                )
            })?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("listening on http://") {
                    let a = line[i + 20..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(a);
                    }
                } else if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("chatd: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "chatd did not start")?
            .parse()
            .map_err(|e| format!("bad address: {e}"))?;
        let pid = child.id();
        Ok(Server {
            child,
            addr,
            pid,
            dir: dir.to_path_buf(),
        })
    }

    /// (CPU seconds utime+stime, RSS bytes) of the server process.
    fn usage(&self) -> (f64, u64) {
        let cpu = cpu_s(&self.pid.to_string());
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let rss_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        (cpu, rss_kb * 1024)
    }

    /// (commits, messages stored) from /metrics.
    async fn metrics(&self) -> (u64, u64) {
        let v = self
            .metric_values(&["chatd_writer_commits_total", "chatd_messages_stored_total"])
            .await;
        (v[0] as u64, v[1] as u64)
    }

    /// Values of plain samples (`name value` lines) from /metrics; 0 when absent.
    async fn metric_values(&self, names: &[&str]) -> Vec<f64> {
        let text = http_get(self.addr, "/metrics").await.unwrap_or_default();
        names
            .iter()
            .map(|name| {
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0.0)
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// utime+stime in seconds of a process ("self" for the generator) from /proc.
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // CLK_TCK is 100 on Linux.
    ticks as f64 / 100.0
}

async fn http_get(addr: SocketAddr, path: &str) -> Res<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default())
}

// ---- seeding -----------------------------------------------------------------------------

struct Seed {
    users: Vec<UserId>,
    tokens: Vec<String>,
}

/// Creates `n` users with bearer tokens in a fresh store at `dir`.
fn seed_users(dir: &Path, n: usize) -> Res<(Store, Seed)> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let hash = chatd::auth::hash_password("bench-password").map_err(|e| e.to_string())?;
    let mut tokens = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, h) = chatd::auth::new_token().map_err(|e| e.to_string())?;
        tokens.push(t);
        hashes.push(h);
    }
    let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    let mut users = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(10_000) {
        let r = chunk * 10_000..((chunk + 1) * 10_000).min(n);
        let made = store
            .seed_users(&names[r.clone()], &hash, &hashes[r], now_ms())
            .map_err(|e| e.to_string())?;
        users.extend(made.into_iter().map(|u| u.id));
    }
    Ok((store, Seed { users, tokens }))
}

/// Creates direct conversations between the given index pairs (one seed message each).
fn seed_pairs(store: &Store, seed: &Seed, pairs: &[(usize, usize)]) -> Res<Vec<u64>> {
    let mut cache = MemberCache::default();
    let mut convs = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(5000) {
        let made = store
            .chat_batch(&mut cache, |b| {
                let mut out = Vec::new();
                for (i, (a, c)) in chunk.iter().enumerate() {
                    let r = b.send(
                        seed.users[*a],
                        "seed",
                        Target::User(seed.users[*c]),
                        &format!("seed-{a}-{c}-{i}"),
                        "hello",
                        now_ms(),
                    )?;
                    out.push(r.map(|o| o.message.conversation.0).unwrap_or(0));
                }
                Ok(out)
            })
            .map_err(|e| e.to_string())?;
        convs.extend(made);
    }
    Ok(convs)
}

/// Creates groups; each is a list of user indexes, the first is the owner.
fn seed_groups(store: &Store, seed: &Seed, groups: &[Vec<usize>]) -> Res<Vec<u64>> {
    let mut cache = MemberCache::default();
    let mut out = Vec::with_capacity(groups.len());
    for chunk in groups.chunks(1000) {
        let made = store
            .chat_batch(&mut cache, |b| {
                let mut ids = Vec::new();
                for g in chunk {
                    let members: Vec<UserId> = g[1..].iter().map(|i| seed.users[*i]).collect();
                    let r = b.create_group(seed.users[g[0]], "bench", &members, now_ms())?;
                    ids.push(r.map(|o| o.conversation.0).unwrap_or(0));
                }
                Ok(ids)
            })
            .map_err(|e| e.to_string())?;
        out.extend(made);
    }
    Ok(out)
}

// ---- clients -----------------------------------------------------------------------------

/// The loopback source address for client `i`: 20,000 clients per address, and a block of
/// addresses chosen per run, so sockets a previous run left in TIME_WAIT do not slow this one.
fn source_ip(i: usize) -> IpAddr {
    let run = (std::process::id() as usize % 4000) * 64;
    let k = run + i / 20_000;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (k / 62_500) as u8,
        (k / 250 % 250) as u8,
        (k % 250) as u8 + 2,
    ))
}

/// Connects as the holder of `token` from a loopback source address chosen by `i`, reads
/// `welcome`, and syncs "from now" (cursor = last_seq for every conversation).
async fn connect(addr: SocketAddr, token: &str, i: usize) -> Res<(Ws, Value)> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(source_ip(i), 0))
        .map_err(|e| format!("bind: {e}"))?;
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let auth = format!("Bearer {token}").parse().map_err(|_| "bad token")?;
    req.headers_mut().insert("authorization", auth);
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(cfg))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let welcome = next_json(&mut ws).await?;
    let cursors: Vec<Value> = welcome["conversations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| json!({"conversation": c["id"], "seq": c["last_seq"]}))
                .collect()
        })
        .unwrap_or_default();
    send(&mut ws, &json!({"type": "sync", "cursors": cursors})).await?;
    loop {
        let v = next_json(&mut ws).await?;
        if v["type"] == "synced" {
            return Ok((ws, welcome));
        }
    }
}

async fn send(ws: &mut Ws, v: &Value) -> Res<()> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| e.to_string())
}

async fn next_json(ws: &mut Ws) -> Res<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| e.to_string())
            }
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Just the type (and seq) of a frame: catch-up clients read a million frames, and parsing
/// each into a full `Value` would cost the generator more CPU than the server spends on it.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    seq: Option<u64>,
    /// A `messages` frame's messages (just their seqs).
    messages: Option<Vec<SeqOnly>>,
}

#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
}

enum Kind {
    Message(u64),
    /// The seqs of a `messages` frame, in order.
    Messages(Vec<u64>),
    Synced,
    Other,
}

async fn next_kind(ws: &mut Ws) -> Res<Kind> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let h: Head<'_> = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                return Ok(match h.kind {
                    "message" => Kind::Message(h.seq.unwrap_or(0)),
                    "messages" => Kind::Messages(
                        h.messages
                            .unwrap_or_default()
                            .iter()
                            .map(|m| m.seq)
                            .collect(),
                    ),
                    "synced" => Kind::Synced,
                    _ => Kind::Other,
                });
            }
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Opens connections with bounded concurrency; `token_of(i)` picks the account.
async fn connect_many(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    token_of: impl Fn(usize) -> String,
) -> Res<Vec<Ws>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n);
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("connected", done.clone(), n as u64);
    for i in 0..n {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let token = token_of(i);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let r = connect(addr, &token, i).await.map(|x| x.0);
            done.fetch_add(1, Relaxed);
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(|e| e.to_string())??);
    }
    progress.abort();
    eprintln!();
    Ok(out)
}

fn spawn_progress(
    what: &'static str,
    counter: Arc<AtomicU64>,
    total: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprint!(
                "\r{what}: {}/{} ({:.0} s)   ",
                counter.load(Relaxed),
                total,
                t0.elapsed().as_secs_f64()
            );
        }
    })
}

// ---- measurements ------------------------------------------------------------------------

#[derive(Default)]
struct Latencies(Mutex<Vec<u64>>);

impl Latencies {
    fn add(&self, v: Vec<u64>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(v);
    }
    /// (p50, p99, max) in milliseconds.
    fn summary(&self) -> (f64, f64, f64) {
        let mut v = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if v.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        v.sort_unstable();
        let p = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
        (p(0.5), p(0.99), *v.last().unwrap_or(&0) as f64 / 1000.0)
    }
}

/// The row each scenario reports.
#[derive(Default, serde::Serialize)]
struct Report {
    scenario: String,
    params: String,
    wall_s: f64,
    sent: u64,
    acked: u64,
    delivered: u64,
    expected_deliveries: u64,
    duplicates: u64,
    errors: u64,
    rate_per_s: f64,
    deliveries_per_s: f64,
    server_cpu_s: f64,
    /// The load generator's own CPU over the same interval (it shares the machine).
    bench_cpu_s: f64,
    deliveries_per_cpu_s: f64,
    server_rss_mb: f64,
    rss_per_conn_kb: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    fsync_p50_ms: f64,
    /// write(4 KiB)+fdatasync over blocks the file already has (chatd's log reuses its files
    /// so; no journal commit for a size change): the floor for a reused log.
    fsync_overwrite_p50_ms: f64,
    /// Mean time of one redb commit inside the server (from its /metrics histogram).
    commit_mean_ms: f64,
    messages_per_commit: f64,
    /// Checkpoints (durable redb commits of the logged batches) during the run, and their mean.
    checkpoints: u64,
    checkpoint_mean_ms: f64,
    upgrades_per_s: f64,
    /// catchup: the background rooms load (acked, deliveries, latency while catching up).
    background_acked: u64,
    background_delivered: u64,
    background_latency_p50_ms: f64,
    background_latency_p99_ms: f64,
    /// Figures of scenarios with their own (the durability scenarios).
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
    /// logins: server RSS before the burst, the highest during it, and `settle` s after it.
    rss_idle_mb: f64,
    rss_peak_mb: f64,
    rss_settled_mb: f64,
}

fn print_report(r: &Report) {
    println!("\n== {} ({}) ==", r.scenario, r.params);
    let v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if k == "scenario" || k == "params" || val == &json!(0) || val == &json!(0.0) {
                continue;
            }
            let shown = match val.as_f64() {
                Some(f) if f.fract() != 0.0 => format!("{f:.3}"),
                _ => val.to_string(),
            };
            println!("  {k:<22} {shown}");
        }
    }
}

fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Text carrying sender index, message number and planned send time (µs since t0).
fn payload(sender: usize, k: u64, planned_us: u64) -> String {
    format!("{sender} {k} {planned_us} bench message padding to a typical chat line length")
}

fn parse_payload(text: &str) -> Option<(usize, u64, u64)> {
    let mut it = text.split(' ');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// The fields receivers look at, borrowed from the frame text (the bench's own payloads have
/// no escapes), so the load generator spends as little CPU as possible per frame.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    text: Option<&'a str>,
    #[serde(default)]
    client_id: Option<&'a str>,
}

/// Shared counters of a messaging run.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
    delivery_lat: Latencies,
    ack_lat: Latencies,
}

/// Runs one connection: sends `plan` (planned µs offset, target JSON) open-loop and records
/// everything it receives. Returns when the plan is done and `quiet` has passed with no frame.
async fn run_client(
    ws: Ws,
    me: usize,
    plan: Vec<(u64, Value)>,
    t0: Instant,
    c: Arc<Counters>,
    stop_at: Instant,
) {
    let (mut sink, mut stream) = ws.split();
    let c2 = c.clone();
    let reader = tokio::spawn(async move {
        let mut seen: HashSet<(usize, u64)> = HashSet::new();
        let mut lat = Vec::new();
        let mut acks = Vec::new();
        loop {
            let m = match tokio::time::timeout_at(stop_at.into(), stream.next()).await {
                Ok(Some(Ok(m))) => m,
                _ => break,
            };
            let Message::Text(t) = m else { continue };
            let Ok(v) = serde_json::from_str::<Frame>(t.as_str()) else {
                continue;
            };
            match v.kind {
                "message" => {
                    if let Some((s, k, planned)) = v.text.and_then(parse_payload) {
                        if !seen.insert((s, k)) {
                            c2.duplicates.fetch_add(1, Relaxed);
                        }
                        c2.delivered.fetch_add(1, Relaxed);
                        lat.push(micros_since(t0).saturating_sub(planned));
                    }
                }
                "ack" => {
                    c2.acked.fetch_add(1, Relaxed);
                    if let Some(planned) = v
                        .client_id
                        .and_then(|s| s.rsplit('-').next())
                        .and_then(|x| x.parse::<u64>().ok())
                    {
                        acks.push(micros_since(t0).saturating_sub(planned));
                    }
                }
                "error" => {
                    c2.errors.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
        c2.delivery_lat.add(lat);
        c2.ack_lat.add(acks);
    });
    for (k, (at, target)) in plan.into_iter().enumerate() {
        tokio::time::sleep_until((t0 + Duration::from_micros(at)).into()).await;
        let mut f = json!({
            "type": "send",
            "client_id": format!("{me}-{k}-{at}"),
            "text": payload(me, k as u64, at),
        });
        if let (Some(obj), Some(t)) = (f.as_object_mut(), target.as_object()) {
            for (key, val) in t {
                obj.insert(key.clone(), val.clone());
            }
        }
        if sink
            .send(Message::Text(f.to_string().into()))
            .await
            .is_err()
        {
            c.errors.fetch_add(1, Relaxed);
            break;
        }
        c.sent.fetch_add(1, Relaxed);
    }
    let _ = reader.await;
}

/// Open-loop plans: `senders` connections share a total `rate` for `secs`; `target(i, k)` gives
/// each message's destination.
fn plans(
    senders: usize,
    rate: u64,
    secs: u64,
    target: impl Fn(usize, u64) -> Value,
) -> Vec<Vec<(u64, Value)>> {
    let total = rate * secs;
    let mut out = vec![Vec::new(); senders];
    let step = 1_000_000.0 / rate as f64;
    for n in 0..total {
        let s = (n as usize) % senders;
        let at = 500_000 + (n as f64 * step) as u64;
        let k = out[s].len() as u64;
        out[s].push((at, target(s, k)));
    }
    out
}

/// Runs a messaging scenario over `clients` (index = user index) and fills a report.
async fn run_messaging(
    srv: &Server,
    clients: Vec<Ws>,
    plan: Vec<Vec<(u64, Value)>>,
    fanout: u64,
    secs: u64,
    r: &mut Report,
) {
    let c = Arc::new(Counters::default());
    let (cpu0, _) = srv.usage();
    let g0 = cpu_s("self");
    let (commits0, msgs0) = srv.metrics().await;
    let t0 = Instant::now();
    let stop_at = t0 + Duration::from_secs(secs) + Duration::from_millis(3500);
    let c3 = c.clone();
    let prog = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprint!(
                "\r{:.0} s: sent {} acked {} delivered {} errors {}   ",
                t0.elapsed().as_secs_f64(),
                c3.sent.load(Relaxed),
                c3.acked.load(Relaxed),
                c3.delivered.load(Relaxed),
                c3.errors.load(Relaxed)
            );
        }
    });
    let mut tasks = Vec::new();
    let mut plan = plan.into_iter();
    for (i, ws) in clients.into_iter().enumerate() {
        let p = plan.next().unwrap_or_default();
        tasks.push(tokio::spawn(run_client(ws, i, p, t0, c.clone(), stop_at)));
    }
    for t in tasks {
        let _ = t.await;
    }
    prog.abort();
    eprintln!();
    let (cpu1, rss) = srv.usage();
    r.bench_cpu_s = cpu_s("self") - g0;
    let (commits1, msgs1) = srv.metrics().await;
    let wall = secs as f64;
    r.wall_s = wall;
    r.sent = c.sent.load(Relaxed);
    r.acked = c.acked.load(Relaxed);
    r.delivered = c.delivered.load(Relaxed);
    r.expected_deliveries = r.acked * fanout;
    r.duplicates = c.duplicates.load(Relaxed);
    r.errors = c.errors.load(Relaxed) + r.sent.saturating_sub(r.acked);
    r.rate_per_s = r.acked as f64 / wall;
    r.deliveries_per_s = r.delivered as f64 / wall;
    r.server_cpu_s = cpu1 - cpu0;
    r.deliveries_per_cpu_s = if r.server_cpu_s > 0.0 {
        r.delivered as f64 / r.server_cpu_s
    } else {
        0.0
    };
    r.server_rss_mb = rss as f64 / 1048576.0;
    let (p50, p99, max) = c.delivery_lat.summary();
    (r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms) = (p50, p99, max);
    let (a50, a99, _) = c.ack_lat.summary();
    (r.ack_p50_ms, r.ack_p99_ms) = (a50, a99);
    let commits = commits1.saturating_sub(commits0).max(1);
    r.messages_per_commit = msgs1.saturating_sub(msgs0) as f64 / commits as f64;
    let v = srv
        .metric_values(&[
            "chatd_checkpoint_duration_seconds_sum",
            "chatd_checkpoint_duration_seconds_count",
        ])
        .await;
    r.checkpoints = v[1] as u64;
    r.checkpoint_mean_ms = v[0] * 1000.0 / v[1].max(1.0);
    // The search index follows the store off the writer's path: how far behind it was when
    // the load stopped, and how long it took to catch up.
    let lag = srv.metric_values(&["chatd_search_lag_messages"]).await[0];
    r.extra.insert("search_lag_at_end".into(), json!(lag));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if srv.metric_values(&["chatd_search_lag_messages"]).await[0] == 0.0 {
            r.extra.insert(
                "search_caught_up_s".into(),
                json!(t.elapsed().as_secs_f64()),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Measures write(4 KiB)+fsync latency p50 in `dir`, the floor for any durable ack: appended
/// (`overwrite` false: the file grows, so each fsync also commits the file system's journal)
/// or written over blocks written (zeros) and synced before (`overwrite` true: a data flush).
fn fsync_p50(dir: &Path, n: usize, overwrite: bool) -> f64 {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let Ok(mut f) = std::fs::File::create(&path) else {
        return 0.0;
    };
    let buf = vec![7u8; 4096];
    if overwrite && (f.write_all(&vec![0u8; 4096 * n]).is_err() || f.sync_all().is_err()) {
        return 0.0;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let ok = if overwrite {
            f.write_all_at(&buf, (i * 4096) as u64).is_ok() && f.sync_data().is_ok()
        } else {
            f.write_all(&buf).is_ok() && f.sync_all().is_ok()
        };
        if !ok {
            return 0.0;
        }
        v.push(t.elapsed().as_micros() as u64);
    }
    let _ = std::fs::remove_file(&path);
    v.sort_unstable();
    v[v.len() / 2] as f64 / 1000.0
}

// ---- scenarios ---------------------------------------------------------------------------

async fn scenario(cli: &Cli, dir: &Path) -> Res<Report> {
    let mut r = Report::default();
    let bin = cli.chatd.as_path();
    match cli.scenario.clone() {
        Scenario::Crashloop(a) => durability::crashloop(bin, dir, a, &mut r).await?,
        Scenario::Restart(a) => durability::restart(bin, dir, a, &mut r).await?,
        Scenario::Dbsize(a) => durability::dbsize(bin, dir, a, &mut r).await?,
        Scenario::Search(a) => search::run(bin, dir, a, &mut r).await?,
        Scenario::Logins {
            concurrency,
            settle,
        } => logins::run(bin, dir, concurrency, settle, &mut r).await?,
        Scenario::Files { mib, concurrent } => {
            files::run(bin, dir, mib, concurrent, &mut r).await?
        }
        Scenario::Idle { conns, hold } => idle::run(bin, dir, conns, hold, &mut r).await?,
        Scenario::Direct { users, rate, secs } => {
            direct::run(bin, dir, users, rate, secs, &mut r).await?
        }
        Scenario::Rooms {
            groups,
            size,
            rate,
            secs,
        } => rooms::run(bin, dir, groups, size, rate, secs, &mut r).await?,
        Scenario::Broadcast {
            members,
            senders,
            secs,
            react,
        } => broadcast::run(bin, dir, members, senders, secs, react, &mut r).await?,
        Scenario::Ack { count } => ack::run(bin, dir, count, &mut r).await?,
        Scenario::Storm { conns, concurrency } => {
            storm::run(bin, dir, conns, concurrency, &mut r).await?
        }
        Scenario::Catchup {
            clients,
            missed,
            rooms_groups,
            rooms_rate,
            rooms_secs,
            no_batch,
        } => {
            catchup::run(
                bin,
                dir,
                clients,
                missed,
                rooms_groups,
                rooms_rate,
                rooms_secs,
                no_batch,
                &mut r,
            )
            .await?
        }
    }
    Ok(r)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Thousands of client sockets: take the whole hard limit (the server, our child, inherits
    // it and raises its own as far as it needs).
    let (soft, hard) = chatd::server::raise_fd_limit(u64::MAX);
    if soft < 4096 {
        eprintln!("chatd-bench: open-file limit {soft} (hard {hard}): large runs will fail");
    }
    let base = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("chatd-bench-{}-{}", std::process::id(), now_ms()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("chatd-bench: cannot create {}: {e}", dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatd-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(scenario(&cli, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(r) => {
            print_report(&r);
            if let Some(path) = &cli.json {
                let text = serde_json::to_string_pretty(&r).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("chatd-bench: cannot write {}: {e}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            let lost = r.expected_deliveries.saturating_sub(r.delivered);
            if r.duplicates > 0 || lost > 0 || r.errors > 0 {
                eprintln!(
                    "chatd-bench: FAILED: {lost} lost, {} duplicated, {} errors",
                    r.duplicates, r.errors
                );
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatd-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Samples the server's RSS (`VmRSS` of `/proc/<pid>/status`) every 20 ms and keeps the
/// highest value seen, starting from `start` bytes; abort the task to stop it.
fn rss_peak_sampler(
    pid: u32,
    start: u64,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(start));
    let seen = peak.clone();
    let task = tokio::spawn(async move {
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb: u64 = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            seen.fetch_max(kb * 1024, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (peak, task)
}
