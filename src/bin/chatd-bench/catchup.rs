//! The `catchup` scenario: N clients reconnect at once, each having missed `missed` messages,
//! while a background `rooms` load runs; time until every client is caught up, exactly once.
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

// The flags of `chatd-bench catchup`, one argument each.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    bin: &Path,
    dir: &Path,
    n: usize,
    missed: usize,
    rooms_groups: usize,
    rooms_rate: u64,
    rooms_secs: u64,
    no_batch: bool,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "catchup".into();
    r.params = format!(
        "clients={n} missed={missed} background rooms={rooms_groups}x10 at {rooms_rate}/s{}",
        if no_batch { " no-batch" } else { "" }
    );
    // Pairs (2i, 2i+1): each client of an odd user misses `missed` messages from its peer.
    // The rooms members come after them.
    let room_users = rooms_groups * 10;
    let users = n * 2 + room_users;
    let (store, seed) = seed_users(dir, users)?;
    let gs: Vec<Vec<usize>> = (0..rooms_groups)
        .map(|g| (n * 2 + g * 10..n * 2 + (g + 1) * 10).collect())
        .collect();
    let room_ids = seed_groups(&store, &seed, &gs)?;
    let pairs: Vec<(usize, usize)> = (0..n).map(|i| (2 * i + 1, 2 * i)).collect();
    let convs = seed_pairs(&store, &seed, &pairs)?;
    // The seed message is seq 1 (from the receiver); the missed ones follow.
    let mut cache = MemberCache::default();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        store
            .chat_batch(&mut cache, |b| {
                for i in chunk {
                    for k in 0..missed {
                        let _ = b.send(
                            seed.users[2 * i],
                            "p",
                            Target::Conversation(ConversationId(convs[*i])),
                            &format!("m-{i}-{k}"),
                            &payload(2 * i, k as u64, 0),
                            now_ms(),
                        )?;
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
    }
    drop(store);
    let srv = Server::start(bin, dir, &[])?;
    // The rooms members are online first; their load runs through the catch-up.
    let room_clients = connect_many(srv.addr, room_users, 256, |i| {
        seed.tokens[n * 2 + i].clone()
    })
    .await?;
    let bg_secs = rooms_secs;
    let background = async {
        let mut br = Report::default();
        if room_users > 0 && rooms_rate > 0 {
            let plan = plans(
                room_users,
                rooms_rate,
                bg_secs,
                |s, _| json!({"conversation": room_ids[s / 10]}),
            );
            run_messaging(&srv, room_clients, plan, 9, bg_secs, &mut br).await;
        }
        br
    };
    let (cpu0, _) = srv.usage();
    let g0 = cpu_s("self");
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(1024));
    let got = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("messages", got.clone(), (n * missed) as u64);
    let mut tasks = Vec::new();
    for (i, &conv) in convs.iter().enumerate().take(n) {
        let token = seed.tokens[2 * i + 1].clone();
        let sem = sem.clone();
        let got = got.clone();
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            sock.bind(SocketAddr::new(source_ip(i), 0))
                .map_err(|e| e.to_string())?;
            let stream = sock.connect(addr).await.map_err(|e| e.to_string())?;
            let mut req = format!("ws://{addr}/ws")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().map_err(|_| "token")?,
            );
            // tungstenite zero-fills its whole read buffer on every read: the
            // default 128 KiB cost more than the reads themselves.
            let cfg = WebSocketConfig::default().read_buffer_size(16 * 1024);
            let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(cfg))
                .await
                .map_err(|e| e.to_string())?;
            next_json(&mut ws).await?;
            send(
                &mut ws,
                &json!({"type":"sync","cursors":[{"conversation":conv,"seq":1}],
                        "batch": !no_batch}),
            )
            .await?;
            let mut n = 0u64;
            let mut last = 1u64;
            let mut next_seq = |seq: u64| {
                if seq != last + 1 {
                    return Err(format!("gap or duplicate: {last} then {seq}"));
                }
                last = seq;
                n += 1;
                Ok(())
            };
            loop {
                match next_kind(&mut ws).await? {
                    Kind::Message(seq) => {
                        next_seq(seq)?;
                        got.fetch_add(1, Relaxed);
                    }
                    Kind::Messages(seqs) => {
                        for &seq in &seqs {
                            next_seq(seq)?;
                        }
                        got.fetch_add(seqs.len() as u64, Relaxed);
                    }
                    // The connection stays open (as a reconnected client's would)
                    // until every client has caught up, held by a duplicate of its
                    // socket: the client's WebSocket buffers are freed for the next
                    // clients to reuse. A real client's buffers are on its own device;
                    // here, 10,000 idle ones only cost the generator page faults on
                    // the server's two cores (a quarter of the generator's CPU).
                    Kind::Synced => {
                        let held = ws
                            .get_ref()
                            .as_fd()
                            .try_clone_to_owned()
                            .map_err(|e| e.to_string())?;
                        return Ok::<(u64, Duration, OwnedFd), String>((n, t0.elapsed(), held));
                    }
                    Kind::Other => {}
                }
            }
        }));
    }
    let catch_up = async {
        let mut slowest = Duration::ZERO;
        let (mut delivered, mut errors) = (0u64, 0u64);
        let mut open = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await {
                Ok(Ok((k, d, ws))) => {
                    delivered += k;
                    slowest = slowest.max(d);
                    open.push(ws);
                }
                Ok(Err(e)) => {
                    errors += 1;
                    if errors < 5 {
                        eprintln!("client error: {e}");
                    }
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("client task failed: {e}");
                }
            }
        }
        (slowest, delivered, errors, open)
    };
    let ((slowest, delivered, errors, open), br) = tokio::join!(catch_up, background);
    r.delivered = delivered;
    r.errors = errors + br.errors;
    r.duplicates = br.duplicates;
    r.background_acked = br.acked;
    r.background_delivered = br.delivered;
    r.background_latency_p50_ms = br.latency_p50_ms;
    r.background_latency_p99_ms = br.latency_p99_ms;
    let bg_lost = br.expected_deliveries.saturating_sub(br.delivered);
    if bg_lost > 0 {
        eprintln!("background rooms: {bg_lost} deliveries lost");
        r.errors += bg_lost;
    }
    progress.abort();
    eprintln!();
    r.expected_deliveries = (n * missed) as u64;
    r.wall_s = slowest.as_secs_f64();
    r.deliveries_per_s = r.delivered as f64 / r.wall_s.max(0.001);
    let (cpu1, rss) = srv.usage();
    r.bench_cpu_s = cpu_s("self") - g0;
    r.server_cpu_s = cpu1 - cpu0;
    r.server_rss_mb = rss as f64 / 1048576.0;
    drop(open);
    Ok(())
}
