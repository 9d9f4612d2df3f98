//! The `broadcast` scenario: one group of M members where `senders` members each keep one
//! message in flight; fan-out cost per delivery. With `--react` the senders toggle reactions
//! on one message instead (each an event fanned out like a message; the timing rides in the
//! event's `client_id`).
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

pub(crate) async fn run(
    bin: &Path,
    dir: &Path,
    members: usize,
    senders: usize,
    secs: u64,
    react: bool,
    r: &mut Report,
) -> Res<()> {
    r.scenario = if react {
        "broadcast-react"
    } else {
        "broadcast"
    }
    .into();
    r.params = format!("members={members} senders={senders} secs={secs}");
    let (store, seed) = seed_users(dir, members)?;
    let ids = seed_groups(&store, &seed, &[(0..members).collect()])?;
    // The message the reactions go to (seq 2, after the "created" line).
    let mut cache = MemberCache::default();
    let target = store
        .chat_batch(&mut cache, |b| {
            let conv = Target::Conversation(ConversationId(ids[0]));
            let sent = b.send(
                seed.users[0],
                "u0",
                conv,
                "bench-target",
                "react to me",
                now_ms(),
            )?;
            Ok(sent.map(|s| s.message.seq).unwrap_or(0))
        })
        .map_err(|e| e.to_string())?;
    drop(store);
    const EMOJI: [&str; 4] = ["👍", "❤️", "😂", "🎉"];
    let srv = Server::start(bin, dir, &[])?;
    let clients = connect_many(srv.addr, members, 256, |i| seed.tokens[i].clone()).await?;
    // Closed loop for senders: one in flight each, so the offered rate follows the
    // server; planned time = actual send time.
    let c = Arc::new(Counters::default());
    let (cpu0, _) = srv.usage();
    let g0 = cpu_s("self");
    let (commits0, msgs0) = srv.metrics().await;
    let t0 = Instant::now();
    let stop_at = t0 + Duration::from_secs(secs) + Duration::from_secs(3);
    let conv = ids[0];
    let mut tasks = Vec::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let c = c.clone();
        let sender = i < senders;
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut seen = HashSet::new();
            let mut lat = Vec::new();
            let mut k = 0u64;
            let end = t0 + Duration::from_secs(secs);
            let mut in_flight = false;
            loop {
                if sender && !in_flight && Instant::now() < end {
                    let at = micros_since(t0);
                    let f = if react {
                        json!({"type":"react","client_id":format!("{i} {k} {at}"),"conversation":conv,
                            "seq":target,"emoji":EMOJI[(k as usize / 2) % EMOJI.len()]})
                    } else {
                        json!({"type":"send","client_id":format!("{i}-{k}-{at}"),"conversation":conv,"text":payload(i, k, at)})
                    };
                    if sink.send(Message::Text(f.to_string().into())).await.is_err() {
                        break;
                    }
                    c.sent.fetch_add(1, Relaxed);
                    k += 1;
                    in_flight = true;
                }
                let m = match tokio::time::timeout_at(stop_at.into(), stream.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Frame>(t.as_str()) else { continue };
                match v.kind {
                    "message" => {
                        let timing = if react { v.client_id } else { v.text };
                        if let Some((s, kk, planned)) = timing.and_then(parse_payload) {
                            if !seen.insert((s, kk)) {
                                c.duplicates.fetch_add(1, Relaxed);
                            }
                            c.delivered.fetch_add(1, Relaxed);
                            lat.push(micros_since(t0).saturating_sub(planned));
                        }
                    }
                    "ack" => {
                        c.acked.fetch_add(1, Relaxed);
                        in_flight = false;
                    }
                    "error" => {
                        c.errors.fetch_add(1, Relaxed);
                        in_flight = false;
                    }
                    _ => {}
                }
            }
            c.delivery_lat.add(lat);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (cpu1, rss) = srv.usage();
    r.bench_cpu_s = cpu_s("self") - g0;
    let (commits1, msgs1) = srv.metrics().await;
    r.wall_s = secs as f64;
    r.sent = c.sent.load(Relaxed);
    r.acked = c.acked.load(Relaxed);
    r.delivered = c.delivered.load(Relaxed);
    r.expected_deliveries = r.acked * (members as u64 - 1);
    r.duplicates = c.duplicates.load(Relaxed);
    r.errors = c.errors.load(Relaxed);
    r.rate_per_s = r.acked as f64 / r.wall_s;
    r.deliveries_per_s = r.delivered as f64 / r.wall_s;
    r.server_cpu_s = cpu1 - cpu0;
    r.deliveries_per_cpu_s = r.delivered as f64 / r.server_cpu_s.max(0.01);
    r.server_rss_mb = rss as f64 / 1048576.0;
    (r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms) = c.delivery_lat.summary();
    r.messages_per_commit =
        msgs1.saturating_sub(msgs0) as f64 / commits1.saturating_sub(commits0).max(1) as f64;
    Ok(())
}
