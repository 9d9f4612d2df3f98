//! The `rooms` scenario: many groups of `size` members with a total ingest rate (open loop);
//! latency of every delivery to every member.
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

pub(crate) async fn run(
    bin: &Path,
    dir: &Path,
    groups: usize,
    size: usize,
    rate: u64,
    secs: u64,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "rooms".into();
    r.params = format!("groups={groups} size={size} rate={rate}/s secs={secs}");
    let users = groups * size;
    let (store, seed) = seed_users(dir, users)?;
    let gs: Vec<Vec<usize>> = (0..groups)
        .map(|g| (g * size..(g + 1) * size).collect())
        .collect();
    let ids = seed_groups(&store, &seed, &gs)?;
    drop(store);
    let srv = Server::start(bin, dir, &[])?;
    let clients = connect_many(srv.addr, users, 256, |i| seed.tokens[i].clone()).await?;
    let plan = plans(
        users,
        rate,
        secs,
        |s, _| json!({"conversation": ids[s / size]}),
    );
    run_messaging(&srv, clients, plan, (size - 1) as u64, secs, r).await;
    Ok(())
}
