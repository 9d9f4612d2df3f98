//! The `ack` scenario: one sender, one message at a time, ack latency compared with the disk's
//! own write+fsync latency (`fsync_p50`).
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

pub(crate) async fn run(bin: &Path, dir: &Path, count: usize, r: &mut Report) -> Res<()> {
    r.scenario = "ack".into();
    r.params = format!("count={count}");
    let (store, seed) = seed_users(dir, 2)?;
    let convs = seed_pairs(&store, &seed, &[(0, 1)])?;
    drop(store);
    r.fsync_p50_ms = fsync_p50(dir, 500, false);
    r.fsync_overwrite_p50_ms = fsync_p50(dir, 500, true);
    let srv = Server::start(bin, dir, &[])?;
    let (mut ws, _) = connect(srv.addr, &seed.tokens[0], 0).await?;
    let mut lat = Vec::with_capacity(count);
    let t0 = Instant::now();
    for k in 0..count {
        let t = Instant::now();
        send(&mut ws, &json!({"type":"send","client_id":format!("a-{k}"),"conversation":convs[0],"text":"ping"})).await?;
        loop {
            let v = next_json(&mut ws).await?;
            if v["type"] == "ack" {
                break;
            }
            if v["type"] == "error" {
                if r.errors == 0 {
                    eprintln!("first error: {v}");
                }
                r.errors += 1;
                break;
            }
        }
        lat.push(t.elapsed().as_micros() as u64);
        r.acked += 1;
    }
    r.wall_s = t0.elapsed().as_secs_f64();
    r.rate_per_s = r.acked as f64 / r.wall_s;
    let l = Latencies::default();
    l.add(lat);
    let (p50, p99, _) = l.summary();
    (r.ack_p50_ms, r.ack_p99_ms) = (p50, p99);
    r.server_cpu_s = srv.usage().0;
    let v = srv
        .metric_values(&[
            "chatd_commit_duration_seconds_sum",
            "chatd_commit_duration_seconds_count",
        ])
        .await;
    r.commit_mean_ms = v[0] * 1000.0 / v[1].max(1.0);
    Ok(())
}
