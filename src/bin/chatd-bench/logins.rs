//! The `logins` scenario: a burst of concurrent password logins (argon2id, 19 MiB each) and the
//! server's memory around it: RSS at idle, the highest seen during the burst (sampled every
//! 20 ms), right after, and after `settle` seconds. Every login must succeed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{seed_users, Latencies, Report, Res, Server};

/// One `POST /api/login` on its own connection; returns the status code.
async fn login(addr: SocketAddr, name: &str) -> Res<u16> {
    let body = serde_json::json!({"name": name, "password": "bench-password"}).to_string();
    let req = format!(
        "POST /api/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&out[..out.len().min(16)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply: {head:?}"))
}

pub async fn run(
    bin: &std::path::Path,
    dir: &std::path::Path,
    concurrency: usize,
    settle: u64,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "logins".into();
    r.params = format!("concurrency={concurrency} settle={settle}s");
    let users = concurrency.clamp(1, 100);
    let (store, _seed) = seed_users(dir, users)?;
    drop(store);
    let srv = Server::start(bin, dir, &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mb = |b: u64| b as f64 / 1048576.0;
    let (cpu0, idle) = srv.usage();
    r.rss_idle_mb = mb(idle);

    let pid = srv.pid;
    let (peak, sampler) = super::rss_peak_sampler(pid, idle);
    let lat = std::sync::Arc::new(Latencies::default());
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let (addr, lat) = (srv.addr, lat.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = login(addr, &format!("u{}", i % users)).await;
            lat.add(vec![t.elapsed().as_micros() as u64]);
            status
        }));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(200)) => r.acked += 1,
            Ok(Ok(s)) => {
                eprintln!("chatd-bench: login answered {s}");
                r.errors += 1;
            }
            _ => r.errors += 1,
        }
    }
    r.wall_s = t0.elapsed().as_secs_f64();
    r.sent = concurrency as u64;
    r.rate_per_s = r.acked as f64 / r.wall_s.max(0.001);
    let (cpu1, after) = srv.usage();
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed).max(after);
    r.server_cpu_s = cpu1 - cpu0;
    r.rss_peak_mb = mb(peak);
    r.server_rss_mb = mb(after);
    (r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms) = lat.summary();
    eprintln!(
        "logins: {} ok in {:.2} s; RSS idle {:.1} MB, peak {:.1}, after {:.1}",
        r.acked, r.wall_s, r.rss_idle_mb, r.rss_peak_mb, r.server_rss_mb
    );
    for s in (5..=settle).step_by(5) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!(
            "logins: RSS {:.1} MB {s} s after the burst",
            mb(srv.usage().1)
        );
    }
    r.rss_settled_mb = mb(srv.usage().1);
    Ok(())
}
