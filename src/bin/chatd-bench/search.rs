//! The `search` scenario: message search on a large history.
//!
//! Seeds `messages` messages in `conversations` groups of 10 members (one user, the searcher,
//! is in every group: each query runs over the whole history, the worst case for the
//! membership filter) straight into the store, with English and Chinese text drawn from
//! Zipf-distributed vocabularies (so "the" is everywhere and most words are rare), plus a rare
//! word in 20 messages, the phrase "release notes" and the Chinese word 评审 at middling
//! frequencies. Then starts chatd on it with no index, so the server builds the index from
//! the database (timed, with its peak RSS), and runs each kind of query `queries` times over
//! a WebSocket, one at a time: p50 and p95 of the round trip. Reports index size against the
//! database's.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{connect, next_json, seed_users, send, Report, Res, Server};
use chatd::model::{now_ms, ConversationId};
use chatd::store::chat::{MemberCache, Target};

/// The arguments of `chatd-bench search`.
#[derive(clap::Args, Clone)]
pub struct SearchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long, default_value_t = 1000)]
    conversations: usize,
    /// Users (each group has the searcher and 9 of them)
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Times each kind of query is run
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// The server's --search-memory-mb
    #[arg(long, default_value_t = 32)]
    memory_mb: u64,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Words with Zipf weights (rank r: 1/r), sampled by binary search of the cumulative sums.
struct Zipf {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(words: Vec<String>) -> Zipf {
        let mut sum = 0.0;
        let cumulative = (1..=words.len())
            .map(|r| {
                sum += 1.0 / r as f64;
                sum
            })
            .collect();
        Zipf { words, cumulative }
    }
    fn pick(&self, rng: &mut Rng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.unit() * total;
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.words[i.min(self.words.len() - 1)]
    }
}

const ENGLISH: &str = "the to and a of i it is you that in we for on this be have with are \
    not do at can so will just but what if my me all get from was about your they up out \
    there as by know good now should like one think time here or no when more make need \
    see today see meeting let new work also how an back then team check did still going yes \
    thanks any been fix build test done look go please after some could would sure ok day \
    use code update before way why well call review week who next week plan issue server";

const CHINESE: &str = "我们 今天 明天 可以 这个 没有 一下 已经 问题 时间 大家 需要 现在 开会 \
    谢谢 什么 看看 项目 测试 上午 下午 发布 服务器 客户 文档 部署 代码 修改 版本 周末 \
    晚上 设计 讨论 进度 计划 同事 确认 环境 数据 用户";

/// Syllables for the long tail of made-up (rare) words.
const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "da", "go", "zu", "fa", "bi", "ke",
    "ro", "su", "te", "wa", "yo",
];
const HANZI: &str = "山水火木金土日月风云雨雪花草鸟鱼书笔纸墨茶酒歌舞诗画桥路门窗灯星海河";

fn vocabularies() -> (Zipf, Zipf) {
    let mut en: Vec<String> = ENGLISH.split_whitespace().map(str::to_string).collect();
    // The tail: 20,000 made-up words of 2-4 syllables.
    for n in 0..20_000u64 {
        let mut w = String::new();
        let mut k = n + 400;
        while k > 0 {
            w.push_str(SYLLABLES[(k % 20) as usize]);
            k /= 20;
        }
        en.push(w);
    }
    let mut zh: Vec<String> = CHINESE.split_whitespace().map(str::to_string).collect();
    let hanzi: Vec<char> = HANZI.chars().collect();
    for a in &hanzi {
        for b in &hanzi {
            zh.push([*a, *b].iter().collect());
        }
    }
    (Zipf::new(en), Zipf::new(zh))
}

/// The text of message `k`.
fn text(k: u64, rng: &mut Rng, en: &Zipf, zh: &Zipf) -> String {
    let words = 4 + rng.below(14) as usize;
    let chinese = rng.below(10) < 3;
    let mut parts: Vec<&str> = (0..words)
        .map(|_| if chinese { zh.pick(rng) } else { en.pick(rng) })
        .collect();
    // Planted: a rare word in 20 messages, a phrase and a Chinese word at middling rates.
    if k % 50_000 == 7 {
        parts.push("xylophonist");
    }
    if !chinese && rng.below(1000) < 2 {
        parts.insert(parts.len() / 2, "release notes");
    }
    if chinese && rng.below(1000) < 5 {
        parts.insert(parts.len() / 2, "评审");
    }
    if chinese {
        parts.concat()
    } else {
        parts.join(" ")
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

pub async fn run(
    bin: &std::path::Path,
    dir: &std::path::Path,
    a: SearchArgs,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "search".into();
    r.params = format!(
        "messages={} conversations={} users={} queries={} memory_mb={}",
        a.messages, a.conversations, a.users, a.queries, a.memory_mb
    );
    let users = a.users.max(10);
    let (store, seed) = seed_users(dir, users)?;
    let groups: Vec<Vec<usize>> = (0..a.conversations)
        .map(|g| {
            let mut m = vec![0];
            m.extend((0..9).map(|k| 1 + (g * 7 + k * 13) % (users - 1)));
            m.sort_unstable();
            m.dedup();
            m
        })
        .collect();
    let t0 = Instant::now();
    let start_ms = now_ms().saturating_sub(365 * 86_400_000);
    // The groups are created a year ago (a conversation's message times never go back before
    // its last activity), the messages spread over the year since.
    let mut cache = MemberCache::default();
    let mut ids = Vec::with_capacity(groups.len());
    for chunk in groups.chunks(1000) {
        let made = store
            .chat_batch(&mut cache, |b| {
                let mut out = Vec::new();
                for g in chunk {
                    let members: Vec<_> = g[1..].iter().map(|i| seed.users[*i]).collect();
                    let r = b.create_group(seed.users[g[0]], "bench", &members, start_ms)?;
                    out.push(r.map(|o| o.conversation.0).unwrap_or(0));
                }
                Ok(out)
            })
            .map_err(|e| e.to_string())?;
        ids.extend(made);
    }
    let (en, zh) = vocabularies();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let step = (365 * 86_400_000 / a.messages.max(1)).max(1);
    let mut k = 0u64;
    while k < a.messages {
        let n = (a.messages - k).min(10_000);
        let batch: Vec<(usize, usize, String)> = (k..k + n)
            .map(|i| {
                let g = rng.below(ids.len() as u64) as usize;
                let sender = groups[g][rng.below(groups[g].len() as u64) as usize];
                (g, sender, text(i, &mut rng, &en, &zh))
            })
            .collect();
        let refused = store
            .chat_batch(&mut cache, |b| {
                let mut refused = 0;
                for (j, (g, sender, t)) in batch.iter().enumerate() {
                    let i = k + j as u64;
                    let sent = b.send(
                        seed.users[*sender],
                        "seed",
                        Target::Conversation(ConversationId(ids[*g])),
                        &format!("s{i}"),
                        t,
                        start_ms + i * step,
                    )?;
                    refused += usize::from(sent.is_err());
                }
                Ok(refused)
            })
            .map_err(|e| e.to_string())?;
        if refused > 0 {
            return Err(format!("{refused} seed messages refused"));
        }
        k += n;
        if k % 100_000 == 0 {
            eprint!("\rseeded {k} messages ");
        }
    }
    eprintln!();
    drop(store);
    r.extra
        .insert("seed_s".into(), json!(t0.elapsed().as_secs_f64()));

    // The server builds the index from the database.
    let srv = Server::start(bin, dir, &["--search-memory-mb", &a.memory_mb.to_string()])?;
    let t1 = Instant::now();
    let mut peak = 0u64;
    loop {
        let v = srv
            .metric_values(&["chatd_search_indexed_messages", "chatd_messages_in_store"])
            .await;
        peak = peak.max(srv.usage().1);
        if v[1] > 0.0 && v[0] >= v[1] {
            break;
        }
        if t1.elapsed() > Duration::from_secs(3600) {
            return Err("the index was not built within an hour".into());
        }
        eprint!("\rindexed {} of {} ", v[0], v[1]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!();
    let mb = |b: f64| b / 1048576.0;
    r.extra
        .insert("rebuild_s".into(), json!(t1.elapsed().as_secs_f64()));
    r.extra
        .insert("rebuild_rss_peak_mb".into(), json!(mb(peak as f64)));
    // Let the background merges of the freshly built index finish (its size stops changing)
    // before timing queries, as on a server that has been running for a while.
    let mut last = 0.0;
    let mut still = 0;
    let settle = Instant::now();
    while still < 3 && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = srv.metric_values(&["chatd_search_index_bytes"]).await[0];
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    let v = srv
        .metric_values(&["chatd_search_index_bytes", "chatd_database_bytes"])
        .await;
    r.extra.insert("index_mb".into(), json!(mb(v[0])));
    r.extra.insert("database_mb".into(), json!(mb(v[1])));
    r.extra.insert(
        "index_share_of_database".into(),
        json!(v[0] / v[1].max(1.0)),
    );

    let (mut ws, _) = connect(srv.addr, &seed.tokens[0], 0).await?;
    let kinds = [
        ("rare", "xylophonist"),
        ("common", "the"),
        ("chinese", "评审"),
        ("phrase", "\"release notes\""),
        ("prefix", "relea"),
        ("filtered", "the from:u1 after:2000-01-01"),
    ];
    let mut reference = 0u64;
    for (name, q) in kinds {
        let mut lat = Vec::with_capacity(a.queries);
        let mut found = 0usize;
        for _ in 0..a.queries {
            reference += 1;
            let t = Instant::now();
            send(
                &mut ws,
                &json!({"type": "search", "ref": reference, "query": q, "limit": 20}),
            )
            .await?;
            let reply: Value = loop {
                let v = next_json(&mut ws).await?;
                if v["ref"] == reference {
                    break v;
                }
            };
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            if reply["type"] != "search_results" {
                return Err(format!("{q}: {reply}"));
            }
            found = reply["results"].as_array().map_or(0, Vec::len);
        }
        r.extra
            .insert(format!("{name}_p50_ms"), json!(percentile(&mut lat, 0.5)));
        r.extra
            .insert(format!("{name}_p95_ms"), json!(percentile(&mut lat, 0.95)));
        r.extra.insert(format!("{name}_results"), json!(found));
    }
    let (_, rss) = srv.usage();
    r.server_rss_mb = mb(rss as f64);
    Ok(())
}
