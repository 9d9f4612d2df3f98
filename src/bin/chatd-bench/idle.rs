//! The `idle` scenario: hold N authenticated idle connections (heartbeats running) and report
//! the server's RSS per connection.
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

pub(crate) async fn run(
    bin: &Path,
    dir: &Path,
    conns: usize,
    hold: u64,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "idle".into();
    r.params = format!("conns={conns} hold={hold}s");
    let users = conns.clamp(1, 1000);
    let (store, seed) = seed_users(dir, users)?;
    drop(store);
    let srv = Server::start(bin, dir, &[])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss0) = srv.usage();
    let t0 = Instant::now();
    let clients = connect_many(srv.addr, conns, 256, |i| seed.tokens[i % users].clone()).await?;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let (cpu, rss1) = srv.usage();
    r.wall_s = t0.elapsed().as_secs_f64();
    r.server_cpu_s = cpu;
    r.server_rss_mb = rss1 as f64 / 1048576.0;
    r.rss_per_conn_kb = rss1.saturating_sub(rss0) as f64 / 1024.0 / conns as f64;
    drop(clients);
    Ok(())
}
