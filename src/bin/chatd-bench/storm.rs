//! The `storm` scenario: open N connections as fast as possible (upgrade, session check,
//! welcome) and report handshakes per second and their latency.
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

pub(crate) async fn run(
    bin: &Path,
    dir: &Path,
    conns: usize,
    concurrency: usize,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "storm".into();
    r.params = format!("conns={conns} concurrency={concurrency}");
    let users = conns.clamp(1, 10_000);
    let (store, seed) = seed_users(dir, users)?;
    drop(store);
    let srv = Server::start(bin, dir, &[])?;
    let (cpu0, _) = srv.usage();
    let g0 = cpu_s("self");
    let t0 = Instant::now();
    let clients = connect_many(srv.addr, conns, concurrency, |i| {
        seed.tokens[i % users].clone()
    })
    .await?;
    r.wall_s = t0.elapsed().as_secs_f64();
    r.upgrades_per_s = clients.len() as f64 / r.wall_s;
    let (cpu1, rss) = srv.usage();
    r.bench_cpu_s = cpu_s("self") - g0;
    r.server_cpu_s = cpu1 - cpu0;
    r.server_rss_mb = rss as f64 / 1048576.0;
    Ok(())
}
