//! The `direct` scenario: N users send 1:1 messages to a few peers each at a total offered
//! rate (open loop); latency from the planned send time to each delivery.
//! Called from `main.rs`; uses the shared harness there (server, seeding, clients, reports).

use super::*;

pub(crate) async fn run(
    bin: &Path,
    dir: &Path,
    users: usize,
    rate: u64,
    secs: u64,
    r: &mut Report,
) -> Res<()> {
    r.scenario = "direct".into();
    r.params = format!("users={users} rate={rate}/s secs={secs}");
    let (store, seed) = seed_users(dir, users)?;
    let mut pairs = Vec::new();
    for a in 0..users {
        for d in [1, 2] {
            pairs.push((a, (a + d * 7 + 1) % users));
        }
    }
    pairs.retain(|(a, b)| a != b);
    let convs = seed_pairs(&store, &seed, &pairs)?;
    let mut peers: Vec<Vec<u64>> = vec![Vec::new(); users];
    for ((a, b), conv) in pairs.iter().zip(&convs) {
        peers[*a].push(*conv);
        peers[*b].push(*conv);
    }
    drop(store);
    let srv = Server::start(bin, dir, &[])?;
    let clients = connect_many(srv.addr, users, 256, |i| seed.tokens[i].clone()).await?;
    let plan = plans(users, rate, secs, |s, k| {
        let p = &peers[s];
        json!({"conversation": p[(k as usize * 31 + s) % p.len()]})
    });
    run_messaging(&srv, clients, plan, 1, secs, r).await;
    Ok(())
}
