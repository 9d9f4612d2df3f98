//! chatd-bench's durability scenarios (issue 20), kept out of the main file:
//!
//! - `crashloop`: senders with acks and idempotent resends against a server killed with
//!   SIGKILL at random moments (under load, and sometimes while it is still recovering), for N
//!   cycles; at the end every acknowledged message must be in the database exactly once, at the
//!   seq its ack named, and `chatd check` must find nothing.
//! - `restart`: how long the server takes to be back after kill -9 under load, against the
//!   database's size (seeded quickly through the store: `--messages`).
//! - `dbsize`: bytes per message on disk against message count, for messages sent through the
//!   server as clients send them.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;

use super::*;

#[derive(clap::Args, Clone)]
pub struct CrashloopArgs {
    /// Kill-and-restart cycles
    #[arg(long, default_value_t = 20)]
    pub cycles: usize,
    /// Sending connections (in pairs sharing a direct conversation)
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Messages each sender keeps in flight
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Longest run of load before the kill, ms (each cycle picks at random below it)
    #[arg(long, default_value_t = 1000)]
    pub max_run_ms: u64,
    /// Seed of the random kill moments (default: the time)
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(clap::Args, Clone)]
pub struct RestartArgs {
    /// Messages in the database before the first kill (seeded through the store)
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Kill-and-restart cycles measured
    #[arg(long, default_value_t = 5)]
    pub cycles: usize,
    /// Seconds of load before each kill
    #[arg(long, default_value_t = 2)]
    pub load_secs: u64,
    /// Sending connections during the load (each keeps 8 messages in flight)
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Extra flags for the server (e.g. "--cache-mb 64")
    #[arg(long, allow_hyphen_values = true)]
    pub server_args: Option<String>,
}

#[derive(clap::Args, Clone)]
pub struct DbsizeArgs {
    /// Messages to send through the server
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Report the file size after every this many messages
    #[arg(long, default_value_t = 50_000)]
    pub every: u64,
    /// Sending connections (in pairs sharing a direct conversation)
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Length of each message's text
    #[arg(long, default_value_t = 40)]
    pub text_len: usize,
    /// At the end, run `chatd compact` and report the size after it too
    #[arg(long)]
    pub compact: bool,
}

/// A small xorshift generator: kill moments need to be random, not secure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A port nobody listens on now (the server is restarted on the same one, as after a crash).
fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A chatd process on a fixed port; its log is kept.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(bin: &Path, dir: &Path, port: u16, extra: &[String]) -> Res<Proc> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--log-level",
                "warn,chatd=info",
            ])
            .args(["--port", &port.to_string()])
            .args(["--max-frames-per-second", "1000000"])
            .args(["--max-connections-per-user", "100000"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("ERROR") || line.contains("panicked") {
                        eprintln!("chatd: {line}");
                    }
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Ok(Proc { child, log })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGKILL, like a power cut from the process's point of view.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait.
    fn stop(&mut self) -> Res<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "chatd exited with {status} on SIGTERM:\n{}",
                self.log()
            ))
        }
    }

    /// The process ended by itself (a failed start).
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(format!("chatd exited with {s}:\n{}", self.log())),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The HTTP status of GET /healthz, if anything answers.
async fn health(addr: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split(' ').nth(1)?.parse().ok()
}

/// Waits until /healthz says 200; returns (first answer of any kind, 200) since `t0`.
async fn wait_ready(p: &mut Proc, addr: SocketAddr, t0: Instant) -> Res<(Duration, Duration)> {
    let mut first = None;
    loop {
        match health(addr).await {
            Some(200) => return Ok((first.unwrap_or(t0.elapsed()), t0.elapsed())),
            Some(_) => {
                first.get_or_insert(t0.elapsed());
            }
            None => {}
        }
        if let Some(e) = p.exited() {
            return Err(e);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err("chatd did not become ready in 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One sender's state across crashes: what it sent, what was acknowledged and where.
#[derive(Default)]
struct SenderState {
    me: usize,
    /// The sender's user id.
    user: u64,
    conv: u64,
    next: u64,
    /// Sent (maybe more than once), not acknowledged yet.
    unacked: BTreeSet<u64>,
    /// k → the seq its ack named.
    acked: HashMap<u64, u64>,
    /// Acks that named another seq than an earlier ack of the same message.
    conflicts: u64,
    resent: u64,
}

fn client_id(me: usize, k: u64) -> String {
    format!("cl-{me}-{k}")
}

fn text_of(me: usize, k: u64) -> String {
    format!("crashloop {me} {k}")
}

/// Sends (resending what is unacknowledged first, then new messages) with `window` in flight,
/// until the connection fails or `stop` is set and nothing is in flight.
async fn sender_run(
    addr: SocketAddr,
    token: String,
    st: Arc<Mutex<SenderState>>,
    window: usize,
    stop: Arc<AtomicBool>,
    limit: Option<u64>,
) -> Res<()> {
    let me = st.lock().map_err(|_| "poisoned")?.me;
    let (ws, _) = connect(addr, &token, me).await?;
    let (mut sink, mut stream) = ws.split();
    let (conv, mut queue): (u64, Vec<u64>) = {
        let s = st.lock().map_err(|_| "poisoned")?;
        (s.conv, s.unacked.iter().copied().collect())
    };
    queue.reverse();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    loop {
        while in_flight.len() < window {
            let k = match queue.pop() {
                Some(k) => {
                    st.lock().map_err(|_| "poisoned")?.resent += 1;
                    k
                }
                None => {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let mut s = st.lock().map_err(|_| "poisoned")?;
                    if limit.is_some_and(|l| s.next >= l) {
                        break;
                    }
                    let k = s.next;
                    s.next += 1;
                    s.unacked.insert(k);
                    k
                }
            };
            let f = json!({"type": "send", "conversation": conv, "client_id": client_id(me, k), "text": text_of(me, k)});
            sink.send(Message::Text(f.to_string().into()))
                .await
                .map_err(|e| e.to_string())?;
            in_flight.insert(k);
        }
        if in_flight.is_empty() {
            return Ok(());
        }
        let m = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("connection ended".into()),
            Err(_) => return Err("no ack in 30 s".into()),
        };
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("ack") => {
                let cid = v["client_id"].as_str().unwrap_or("");
                let Some(k) = cid.rsplit('-').next().and_then(|x| x.parse::<u64>().ok()) else {
                    continue;
                };
                let seq = v["seq"].as_u64().unwrap_or(0);
                let mut s = st.lock().map_err(|_| "poisoned")?;
                s.unacked.remove(&k);
                if let Some(old) = s.acked.insert(k, seq) {
                    if old != seq {
                        s.conflicts += 1;
                    }
                }
                in_flight.remove(&k);
            }
            Some("error") => return Err(format!("error frame: {v}")),
            _ => {}
        }
    }
}

/// Checks the stopped server's database: every acknowledged message exactly once at its seq.
/// Returns (messages checked, problems).
fn verify(dir: &Path, states: &[Arc<Mutex<SenderState>>]) -> Res<(u64, Vec<String>)> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut by_conv: HashMap<u64, Vec<Arc<Mutex<SenderState>>>> = HashMap::new();
    for s in states {
        let conv = s.lock().map_err(|_| "poisoned")?.conv;
        by_conv.entry(conv).or_default().push(s.clone());
    }
    for (conv, senders) in by_conv {
        let reader = UserId(senders[0].lock().map_err(|_| "poisoned")?.user);
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .messages_after(reader, ConversationId(conv), after, 1000)
                .map_err(|e| e.to_string())?
                .ok_or("not a member")?;
            if page.is_empty() {
                break;
            }
            after = page.last().map_or(after, |m| m.seq);
            all.extend(page);
        }
        let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
        for (i, m) in all.iter().enumerate() {
            if m.seq != i as u64 + 1 {
                problems.push(format!(
                    "conversation {conv}: seq {} at position {}",
                    m.seq,
                    i + 1
                ));
            }
            if m.unreadable {
                problems.push(format!("conversation {conv}: seq {} unreadable", m.seq));
            }
            seen.entry(m.client_id.as_str()).or_default().push(m.seq);
        }
        for s in senders {
            let s = s.lock().map_err(|_| "poisoned")?;
            if s.conflicts > 0 {
                problems.push(format!(
                    "sender {}: {} acks named another seq than before",
                    s.me, s.conflicts
                ));
            }
            for (k, seq) in &s.acked {
                checked += 1;
                let cid = client_id(s.me, *k);
                match seen.get(cid.as_str()).map(Vec::as_slice) {
                    Some([at]) if at == seq => {
                        let m = &all[(*at - 1) as usize];
                        if m.text != text_of(s.me, *k) {
                            problems.push(format!("{cid}: other text at seq {seq}"));
                        }
                    }
                    Some(ats) => {
                        problems.push(format!("{cid}: acked at seq {seq}, stored at {ats:?}"))
                    }
                    None => problems.push(format!("{cid}: acked at seq {seq}, not stored")),
                }
            }
        }
    }
    drop(store);
    let report = chatd::store::check::check_dir(dir).map_err(|e| e.to_string())?;
    for d in report.damage {
        problems.push(format!("chatd check: {d}"));
    }
    Ok((checked, problems))
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.99), v[v.len() - 1])
}

pub async fn crashloop(bin: &Path, dir: &Path, a: CrashloopArgs, r: &mut Report) -> Res<()> {
    let pairs = a.senders.div_ceil(2).max(1);
    let (store, seed) = seed_users(dir, pairs * 2)?;
    let convs = seed_pairs(
        &store,
        &seed,
        &(0..pairs).map(|i| (2 * i, 2 * i + 1)).collect::<Vec<_>>(),
    )?;
    store.checkpoint().map_err(|e| e.to_string())?;
    drop(store);
    let states: Vec<Arc<Mutex<SenderState>>> = (0..pairs * 2)
        .map(|i| {
            Arc::new(Mutex::new(SenderState {
                me: i,
                user: seed.users[i].0,
                conv: convs[i / 2],
                ..SenderState::default()
            }))
        })
        .collect();
    let seed_value = a.seed.unwrap_or_else(|| now_ms() | 1);
    let mut rng = Rng(seed_value);
    r.scenario = "crashloop".into();
    r.params = format!(
        "cycles={} senders={} window={} max_run_ms={} seed={seed_value}",
        a.cycles,
        pairs * 2,
        a.window,
        a.max_run_ms
    );
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t_all = Instant::now();
    let mut ready_ms = Vec::new();
    let mut during_recovery = 0u64;
    for cycle in 0..=a.cycles {
        let last = cycle == a.cycles;
        let t0 = Instant::now();
        let mut p = Proc::spawn(bin, dir, port, &[])?;
        // One cycle in five is killed while the server may still be opening the database.
        if !last && rng.below(5) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            p.kill();
            during_recovery += 1;
            continue;
        }
        let (_, ready) = wait_ready(&mut p, addr, t0)
            .await
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, st)| {
                tokio::spawn(sender_run(
                    addr,
                    seed.tokens[i].clone(),
                    st.clone(),
                    a.window,
                    stop.clone(),
                    None,
                ))
            })
            .collect();
        if last {
            // Resend whatever is unacknowledged, send nothing new, stop cleanly.
            stop.store(true, Relaxed);
            for t in tasks {
                t.await.map_err(|e| e.to_string())??;
            }
            p.stop()?;
        } else {
            tokio::time::sleep(Duration::from_millis(20 + rng.below(a.max_run_ms))).await;
            p.kill();
            for t in tasks {
                let _ = t.await;
            }
        }
        if cycle % 50 == 49 {
            eprintln!(
                "crashloop: {} cycles, {:.0} s",
                cycle + 1,
                t_all.elapsed().as_secs_f64()
            );
        }
    }
    let (checked, problems) = verify(dir, &states)?;
    let mut resent = 0;
    let mut unacked = 0;
    for s in &states {
        let s = s.lock().map_err(|_| "poisoned")?;
        resent += s.resent;
        unacked += s.unacked.len() as u64;
    }
    for p in problems.iter().take(20) {
        eprintln!("crashloop: {p}");
    }
    let (p50, p99, max) = percentiles(ready_ms);
    r.wall_s = t_all.elapsed().as_secs_f64();
    r.acked = checked;
    r.sent = checked + unacked;
    r.errors = problems.len() as u64 + unacked;
    r.extra.insert("cycles".into(), json!(a.cycles));
    r.extra
        .insert("killed_while_opening".into(), json!(during_recovery));
    r.extra.insert("resent".into(), json!(resent));
    r.extra.insert("ready_p50_ms".into(), json!(p50));
    r.extra.insert("ready_p99_ms".into(), json!(p99));
    r.extra.insert("ready_max_ms".into(), json!(max));
    Ok(())
}

/// Seeds `n` messages into `pairs` direct conversations through the store (fast: one durable
/// commit per 20,000), as a server would have stored them.
fn seed_messages(
    store: &Store,
    seed: &Seed,
    pairs: usize,
    n: u64,
    text_len: usize,
) -> Res<Vec<u64>> {
    let convs = seed_pairs(
        store,
        seed,
        &(0..pairs).map(|i| (2 * i, 2 * i + 1)).collect::<Vec<_>>(),
    )?;
    let mut cache = MemberCache::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let text: String = "bench message padding to a typical chat line length; "
        .chars()
        .cycle()
        .take(text_len)
        .collect();
    let mut done = 0u64;
    let t0 = Instant::now();
    while done < n {
        let chunk = (n - done).min(20_000);
        store
            .chat_batch(&mut cache, |b| {
                for i in 0..chunk {
                    let p = rng.below(pairs as u64) as usize;
                    let who = 2 * p + (i % 2) as usize;
                    let _ = b.send(
                        seed.users[who],
                        "",
                        Target::Conversation(ConversationId(convs[p])),
                        &format!("seed-{}", done + i),
                        &text,
                        now_ms(),
                    )?;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        done += chunk;
        if done % 1_000_000 == 0 {
            eprintln!(
                "seeded {done} messages in {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(convs)
}

pub async fn restart(bin: &Path, dir: &Path, a: RestartArgs, r: &mut Report) -> Res<()> {
    let pairs = 500;
    let (store, seed) = seed_users(dir, pairs * 2)?;
    let t_seed = Instant::now();
    seed_messages(&store, &seed, pairs, a.messages, 40)?;
    store.checkpoint().map_err(|e| e.to_string())?;
    drop(store);
    let seed_s = t_seed.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(dir.join(chatd::store::DB_FILE)).map_or(0, |m| m.len());
    r.scenario = "restart".into();
    r.params = format!(
        "messages={} cycles={} load_secs={} senders={}",
        a.messages, a.cycles, a.load_secs, a.senders
    );
    let extra: Vec<String> = a
        .server_args
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let states: Vec<Arc<Mutex<SenderState>>> = (0..a.senders.min(pairs * 2))
        .map(|i| {
            Arc::new(Mutex::new(SenderState {
                me: i,
                conv: 0,
                ..SenderState::default()
            }))
        })
        .collect();
    // The senders' conversations (the seeded pairs, in order).
    {
        let store = Store::open(dir).map_err(|e| e.to_string())?;
        for s in &states {
            let mut s = s.lock().map_err(|_| "poisoned")?;
            let u = seed.users[s.me];
            s.conv = store
                .conversations_of(u, 1)
                .map_err(|e| e.to_string())?
                .first()
                .map_or(0, |c| c.id.0);
        }
    }
    let (mut answer_ms, mut ready_ms, mut back_ms, mut open_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut redb_ms, mut log_ms, mut replay_ms, mut batches) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut p = Proc::spawn(bin, dir, port, &extra)?;
    wait_ready(&mut p, addr, Instant::now()).await?;
    for cycle in 0..=a.cycles {
        // Load, then kill -9 in the middle of it.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, st)| {
                tokio::spawn(sender_run(
                    addr,
                    seed.tokens[i].clone(),
                    st.clone(),
                    8,
                    stop.clone(),
                    None,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(a.load_secs)).await;
        if cycle == a.cycles {
            stop.store(true, Relaxed);
            for t in tasks {
                let _ = t.await;
            }
            p.stop()?;
            break;
        }
        p.kill();
        let killed = Instant::now();
        for t in tasks {
            let _ = t.await;
        }
        p = Proc::spawn(bin, dir, port, &extra)?;
        let (first, ready) = wait_ready(&mut p, addr, killed).await?;
        // Chat is back when a client connects, syncs and gets an ack.
        let st = Arc::new(Mutex::new(SenderState {
            me: 0,
            conv: states[0].lock().map_err(|_| "poisoned")?.conv,
            next: 1_000_000_000 + cycle as u64 * 10,
            ..SenderState::default()
        }));
        sender_run(
            addr,
            seed.tokens[0].clone(),
            st,
            1,
            Arc::new(AtomicBool::new(false)),
            Some(1_000_000_000 + cycle as u64 * 10 + 1),
        )
        .await?;
        back_ms.push(killed.elapsed().as_secs_f64() * 1000.0);
        answer_ms.push(first.as_secs_f64() * 1000.0);
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        let log = p.log();
        let field = |name: &str| -> Option<f64> {
            let line = log
                .lines()
                .rev()
                .find(|l| l.contains("opened the database in"))?;
            let at = line.find(name)? + name.len() + 1;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if let Some(v) = log
            .lines()
            .rev()
            .find_map(|l| l.split("opened the database in ").nth(1))
            .and_then(|x| x.split(' ').next())
            .and_then(|x| x.parse::<f64>().ok())
        {
            open_ms.push(v);
        }
        for (name, into) in [
            ("redb_ms", &mut redb_ms),
            ("log_ms", &mut log_ms),
            ("replay_ms", &mut replay_ms),
            ("batches", &mut batches),
        ] {
            if let Some(v) = field(name) {
                into.push(v);
            }
        }
    }
    let acked: u64 = states
        .iter()
        .map(|s| s.lock().map(|s| s.acked.len() as u64).unwrap_or(0))
        .sum();
    let final_bytes = std::fs::metadata(dir.join(chatd::store::DB_FILE)).map_or(0, |m| m.len());
    r.acked = acked;
    let put = |r: &mut Report, name: &str, v: Vec<f64>| {
        let (p50, p99, max) = percentiles(v);
        r.extra.insert(format!("{name}_p50_ms"), json!(p50));
        r.extra.insert(format!("{name}_p99_ms"), json!(p99));
        r.extra.insert(format!("{name}_max_ms"), json!(max));
    };
    put(r, "answers", answer_ms);
    put(r, "healthz_ok", ready_ms);
    put(r, "chat_back", back_ms);
    put(r, "store_open", open_ms);
    put(r, "redb_open", redb_ms);
    put(r, "log_read", log_ms);
    put(r, "log_replay", replay_ms);
    let (b50, _, bmax) = percentiles(batches);
    r.extra.insert("replayed_batches_p50".into(), json!(b50));
    r.extra.insert("replayed_batches_max".into(), json!(bmax));
    r.extra.insert("seed_s".into(), json!(seed_s));
    r.extra
        .insert("db_mb_seeded".into(), json!(db_bytes as f64 / 1048576.0));
    r.extra
        .insert("db_mb_after".into(), json!(final_bytes as f64 / 1048576.0));
    Ok(())
}

pub async fn dbsize(bin: &Path, dir: &Path, a: DbsizeArgs, r: &mut Report) -> Res<()> {
    let pairs = a.senders.div_ceil(2).max(1);
    // Accounts made by the chatd under test (`chatd user add`, `chatd token create`), not
    // through this build's store: any chatd's files can be measured, also older ones.
    let mut users = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..pairs * 2 {
        let run = |args: &[&str], input: Option<&str>| -> Res<String> {
            use std::io::Write;
            let mut c = Command::new(bin)
                .args(args)
                .arg("--data-dir")
                .arg(dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            if let (Some(mut w), Some(t)) = (c.stdin.take(), input) {
                w.write_all(t.as_bytes()).map_err(|e| e.to_string())?;
            }
            let out = c.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let name = format!("u{i}");
        let made = run(
            &["user", "add", &name, "--password-stdin"],
            Some("bench-password\n"),
        )?;
        let id: u64 = made
            .split("(id ")
            .nth(1)
            .and_then(|x| x.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| format!("no user id in {made:?}"))?;
        let token = run(&["token", "create", &name], None)?;
        users.push(id);
        tokens.push(token.trim().to_string());
    }
    r.scenario = "dbsize".into();
    r.params = format!(
        "messages={} senders={} text_len={}",
        a.messages,
        pairs * 2,
        a.text_len
    );
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut p = Proc::spawn(bin, dir, port, &[])?;
    wait_ready(&mut p, addr, Instant::now()).await?;
    let db = dir.join(chatd::store::DB_FILE);
    let text: String = "bench message padding to a typical chat line length; "
        .chars()
        .cycle()
        .take(a.text_len)
        .collect();
    let per = a.messages.div_ceil(pairs as u64 * 2);
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..pairs * 2)
        .map(|i| {
            let (token, peer, text, sent) =
                (tokens[i].clone(), users[i ^ 1], text.clone(), sent.clone());
            tokio::spawn(async move {
                let (mut ws, _) = connect(addr, &token, i).await?;
                let mut in_flight = 0u64;
                let mut k = 0u64;
                while k < per || in_flight > 0 {
                    while in_flight < 16 && k < per {
                        let f = json!({"type": "send", "to": peer, "client_id": format!("c-{i}-{k}-{}", now_ms()), "text": text});
                        super::send(&mut ws, &f).await?;
                        k += 1;
                        in_flight += 1;
                    }
                    let v = next_json(&mut ws).await?;
                    if v["type"] == "ack" {
                        in_flight -= 1;
                        sent.fetch_add(1, Relaxed);
                    } else if v["type"] == "error" {
                        return Err(format!("{v}"));
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let mut rows = Vec::new();
    let mut next = a.every;
    loop {
        let n = sent.load(Relaxed);
        if n >= next || tasks.iter().all(|t| t.is_finished()) {
            let (bytes, used) = sizes(&db);
            if let Some(per_message) = bytes.checked_div(n) {
                eprintln!(
                    "dbsize: {n} messages, {:.1} MiB ({:.1} MiB on disk), {per_message} bytes per message ({} on disk) ({:.0} s)",
                    bytes as f64 / 1048576.0,
                    used as f64 / 1048576.0,
                    used / n,
                    t0.elapsed().as_secs_f64()
                );
                rows.push((n, bytes, used));
            }
            next += a.every;
            if tasks.iter().all(|t| t.is_finished()) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    p.stop()?;
    let n = sent.load(Relaxed);
    let (bytes, used) = sizes(&db);
    // Where the bytes go (what `chatd check` reports).
    let report = chatd::store::check::check_dir(dir).map_err(|e| e.to_string())?;
    for f in &report.facts {
        eprintln!("{f}");
    }
    if !report.damage.is_empty() {
        return Err(format!("chatd check: {}", report.damage.join("; ")));
    }
    r.acked = n;
    r.wall_s = t0.elapsed().as_secs_f64();
    r.extra
        .insert("db_mb_stopped".into(), json!(bytes as f64 / 1048576.0));
    r.extra
        .insert("bytes_per_message_stopped".into(), json!(bytes / n.max(1)));
    r.extra.insert(
        "disk_bytes_per_message_stopped".into(),
        json!(used / n.max(1)),
    );
    if a.compact {
        let out = Command::new(bin)
            .arg("compact")
            .arg("--data-dir")
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "chatd compact: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let (bytes, used) = sizes(&db);
        r.extra.insert(
            "bytes_per_message_compacted".into(),
            json!(bytes / n.max(1)),
        );
        r.extra.insert(
            "disk_bytes_per_message_compacted".into(),
            json!(used / n.max(1)),
        );
        let report = chatd::store::check::check_dir(dir).map_err(|e| e.to_string())?;
        for f in &report.facts {
            eprintln!("compacted: {f}");
        }
    }
    for (n, b, u) in rows {
        r.extra
            .insert(format!("bytes_per_message_at_{n}"), json!(b / n.max(1)));
        r.extra.insert(
            format!("disk_bytes_per_message_at_{n}"),
            json!(u / n.max(1)),
        );
    }
    Ok(())
}

/// (the file's size, the disk space its blocks take: redb grows a file in steps, and the part
/// not written yet is a hole).
fn sizes(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or((0, 0), |m| (m.len(), m.blocks() * 512))
}
