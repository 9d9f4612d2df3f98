//! Message search over real WebSocket clients: English (case, accents, prefixes), Chinese
//! words inside sentences, phrases, filters, paging; only conversations the user is a member
//! of now; bad queries; searchable within a second of the ack; `history` around a seq; and
//! the index catching up after `kill -9`, and rebuilt when missing or damaged.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::ws::{user, Client, TestUser, NO_SUCH_CONVERSATION};
use crate::support::Server;

/// Runs a search; returns the reply (`search_results` or `error`). Right after a start the
/// index may still be opening (`search_unavailable`, documented as "retry"): retried.
async fn search(c: &mut Client, query: &str, extra: Value) -> Value {
    let mut f = json!({"type": "search", "query": query});
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.request(f.clone()).await;
        if r["code"] != "search_unavailable" || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The (conversation, seq) of each result, in order.
fn hits(reply: &Value) -> Vec<(u64, u64)> {
    assert_eq!(reply["type"], "search_results", "{reply}");
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["conversation"].as_u64().unwrap(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn snippets(reply: &Value) -> Vec<String> {
    assert_eq!(reply["type"], "search_results", "{reply}");
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["snippet"].as_str().unwrap().to_string())
        .collect()
}

/// The highlighted parts of the first result's snippet.
fn marked(reply: &Value) -> Vec<String> {
    let r = &reply["results"][0];
    let chars: Vec<char> = r["snippet"].as_str().unwrap().chars().collect();
    r["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let (a, b) = (
                h[0].as_u64().unwrap() as usize,
                h[1].as_u64().unwrap() as usize,
            );
            chars[a..b].iter().collect()
        })
        .collect()
}

/// Searches until there are `n` results (the index follows the store within a second), for at
/// most `within`; returns the last reply.
async fn wait_for(c: &mut Client, query: &str, n: usize, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = search(c, query, json!({})).await;
        if r["type"] == "search_results" && r["results"].as_array().unwrap().len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{query:?}: fewer than {n} results after {within:?}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn group(c: &mut Client, title: &str, members: &[&TestUser]) -> u64 {
    let ids: Vec<u64> = members.iter().map(|u| u.id).collect();
    let g = c
        .request(json!({"type": "create_group", "title": title, "members": ids}))
        .await;
    g["conversation"]["id"].as_u64().expect("group id")
}

#[tokio::test]
async fn finds_chinese_words_english_without_case_or_accents_prefixes_phrases_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    // Seq 1 of a group is its "created" line: the messages below are seqs 2 to 5.
    let g = group(&mut a, "Release crew", &[&bob]).await;
    let at = json!({"conversation": g});
    a.say(at.clone(), "m1", "明天上午十点的评审会议").await;
    b.say(at.clone(), "m2", "The Café reopens Monday").await;
    a.say(at.clone(), "m3", "release notes are ready").await;
    b.say(at.clone(), "m4", "notes about the release").await;
    let dm = b
        .say(json!({"to": alice.id}), "m5", "Résumé attached, 评审 done")
        .await;
    let dm_conv = dm["conversation"].as_u64().unwrap();

    // Within a second of the last ack.
    let acked = Instant::now();
    let r = wait_for(&mut a, "résumé", 1, Duration::from_secs(1)).await;
    assert!(acked.elapsed() < Duration::from_secs(1));
    assert_eq!(hits(&r), [(dm_conv, 1)]);

    // A Chinese word inside a sentence without spaces, highlighted; newest first.
    let r = search(&mut a, "评审", json!({})).await;
    assert_eq!(hits(&r), [(dm_conv, 1), (g, 2)]);
    let first = &r["results"][0];
    assert_eq!(first["sender"], bob.id);
    assert_eq!(first["sender_name"], "bob");
    assert!(first["time"].as_u64().unwrap() > 0);
    let r = search(&mut a, "评审", json!({"conversation": g})).await;
    assert_eq!(snippets(&r), ["明天上午十点的评审会议"]);
    assert_eq!(marked(&r), ["评审"]);
    // A longer word, a single character, and a word that is not there.
    assert_eq!(hits(&search(&mut a, "评审会议", json!({})).await), [(g, 2)]);
    assert_eq!(hits(&search(&mut a, "议", json!({})).await), [(g, 2)]);
    assert!(hits(&search(&mut a, "会评", json!({})).await).is_empty());

    // Case- and accent-insensitive, both ways.
    for q in ["cafe", "CAFÉ", "café", "Cafe\u{301}"] {
        assert_eq!(hits(&search(&mut a, q, json!({})).await), [(g, 3)], "{q}");
    }
    assert_eq!(
        hits(&search(&mut a, "resume", json!({})).await),
        [(dm_conv, 1)]
    );
    // The last word is a prefix while typing; a trailing space ends it.
    let r = search(&mut a, "reop", json!({})).await;
    assert_eq!(hits(&r), [(g, 3)]);
    assert_eq!(marked(&r), ["reopens"]);
    assert!(hits(&search(&mut a, "reop ", json!({})).await).is_empty());
    // Words anywhere vs. a phrase.
    assert_eq!(
        hits(&search(&mut a, "release notes", json!({})).await),
        [(g, 5), (g, 4)]
    );
    assert_eq!(
        hits(&search(&mut a, "\"release notes\"", json!({})).await),
        [(g, 4)]
    );
    assert_eq!(
        hits(&search(&mut a, "\"notes release\"", json!({})).await),
        Vec::<(u64, u64)>::new()
    );

    // Filters.
    assert_eq!(
        hits(&search(&mut a, "notes from:bob", json!({})).await),
        [(g, 5)]
    );
    assert_eq!(
        hits(&search(&mut a, "notes from:BOB", json!({})).await),
        [(g, 5)]
    );
    assert!(hits(&search(&mut a, "notes from:nobody", json!({})).await).is_empty());
    assert_eq!(
        hits(&search(&mut a, "评审 in:\"release crew\"", json!({})).await),
        [(g, 2)]
    );
    assert_eq!(
        hits(&search(&mut a, "评审 in:bob", json!({})).await),
        [(dm_conv, 1)]
    );
    assert!(hits(&search(&mut a, "评审 in:\"no such group\"", json!({})).await).is_empty());
    assert_eq!(
        hits(&search(&mut a, "notes after:2000-01-01", json!({})).await).len(),
        2
    );
    assert!(hits(&search(&mut a, "notes before:2000-01-01", json!({})).await).is_empty());
    // Filters alone: everything bob sent, newest first.
    assert_eq!(
        hits(&search(&mut a, "from:bob", json!({})).await),
        [(dm_conv, 1), (g, 5), (g, 3)]
    );

    // Paging: `next` resumes after the last result, nothing twice, and ends.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10 {
        let mut extra = json!({"limit": 2});
        if let Some(b) = &before {
            extra["before"] = json!(b);
        }
        let r = search(&mut a, "from:bob", extra).await;
        seen.extend(hits(&r));
        match r["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, [(dm_conv, 1), (g, 5), (g, 3)]);
}

#[tokio::test]
async fn results_only_come_from_conversations_the_user_is_in_now() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let dave = user(&srv, "dave").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let mut c = Client::connect_synced(&srv, &carol).await;
    let mut d = Client::connect_synced(&srv, &dave).await;
    let all = group(&mut a, "all three", &[&bob, &carol]).await;
    let ab = group(&mut a, "alice and bob", &[&bob]).await;
    a.say(json!({"conversation": all}), "1", "secret plan one")
        .await;
    a.say(json!({"conversation": ab}), "2", "secret plan two")
        .await;
    let dm = a
        .say(json!({"to": carol.id}), "3", "secret plan three")
        .await;
    let dm = dm["conversation"].as_u64().unwrap();
    b.say(json!({"to": dave.id}), "4", "secret plan four").await;

    let set = |r: Value| hits(&r).into_iter().map(|h| h.0).collect::<HashSet<u64>>();
    let ad = wait_for(&mut a, "secret", 3, Duration::from_secs(5)).await;
    assert_eq!(set(ad), HashSet::from([all, ab, dm]));
    let bd = wait_for(&mut b, "secret", 3, Duration::from_secs(5)).await;
    assert_eq!(hits(&bd).len(), 3);
    assert!(!set(bd).contains(&dm));
    let cr = search(&mut c, "secret", json!({})).await;
    assert_eq!(set(cr), HashSet::from([all, dm]));
    let dr = wait_for(&mut d, "secret", 1, Duration::from_secs(5)).await;
    assert_eq!(hits(&dr).len(), 1);
    // Searching a conversation one is not in is an error, whatever it holds.
    let e = c
        .request_err(json!({"type": "search", "query": "secret", "conversation": ab}))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    // Filters cannot reach around membership either.
    assert!(hits(&search(&mut c, "secret in:\"alice and bob\"", json!({})).await).is_empty());
    assert_eq!(
        set(search(&mut c, "from:alice", json!({})).await),
        HashSet::from([all, dm])
    );

    // Removed from a group: its messages are gone from carol's results at once.
    let r = a
        .request(json!({"type": "remove_member", "conversation": all, "user": carol.id}))
        .await;
    assert_ne!(r["type"], "error", "{r}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = set(search(&mut c, "secret", json!({})).await);
        if now == HashSet::from([dm]) {
            break;
        }
        assert!(Instant::now() < deadline, "still {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = c
        .request_err(json!({"type": "search", "query": "secret", "conversation": all}))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    // Alice still finds it.
    assert_eq!(hits(&search(&mut a, "secret", json!({})).await).len(), 3);
}

#[tokio::test]
async fn bad_queries_get_clear_errors_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    a.say(json!({"to": bob.id}), "1", "a star * and a caret ^ here")
        .await;
    wait_for(&mut a, "caret", 1, Duration::from_secs(5)).await;

    let long = "word ".repeat(2048);
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"query": ""}), "bad_query", "empty"),
        (json!({"query": "   "}), "bad_query", "empty"),
        (json!({"query": long}), "bad_query", "longer than"),
        (json!({"query": "\"unbalanced"}), "bad_query", "quote"),
        (json!({"query": "from:"}), "bad_query", "from:"),
        (json!({"query": "caret in:"}), "bad_query", "in:"),
        (
            json!({"query": "* ~ ^ :"}),
            "bad_query",
            "nothing to search",
        ),
        (json!({"query": "before:2026-13-40"}), "bad_query", "date"),
        (
            json!({"query": "caret", "conversation": NO_SUCH_CONVERSATION}),
            "not_found",
            "",
        ),
        (json!({"query": "caret", "limit": 0}), "bad_frame", "limit"),
        (json!({"query": "caret", "limit": 51}), "bad_frame", "limit"),
        (
            json!({"query": "caret", "before": "junk"}),
            "bad_frame",
            "before",
        ),
        (json!({"query": 5}), "bad_frame", ""),
        (json!({}), "bad_frame", ""),
    ];
    for (extra, code, words) in cases {
        let mut f = json!({"type": "search"});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        let e = a.request_err(f.clone()).await;
        assert_eq!(e["code"], code, "{f}: {e}");
        assert!(e["message"].as_str().unwrap().contains(words), "{f}: {e}");
    }
    // Operators are plain text next to a word; tantivy syntax means nothing.
    for q in [
        "caret*",
        "caret~2",
        "caret^3",
        "text:caret",
        "(caret)",
        "caret AND",
        "+caret",
    ] {
        let r = search(&mut a, q, json!({})).await;
        assert_eq!(r["type"], "search_results", "{q}: {r}");
    }
    assert_eq!(hits(&search(&mut a, "caret*", json!({})).await).len(), 1);
    // Still connected and working.
    assert_eq!(hits(&search(&mut a, "star", json!({})).await).len(), 1);
}

#[tokio::test]
async fn history_around_a_seq_loads_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut c = Client::connect_synced(&srv, &carol).await;
    let mut conv = 0;
    for i in 1..=30 {
        let ack = a
            .say(
                json!({"to": bob.id}),
                &format!("c{i}"),
                &format!("message {i}"),
            )
            .await;
        conv = ack["conversation"].as_u64().unwrap();
    }
    let seqs = |r: &Value| -> Vec<u64> {
        assert_eq!(r["type"], "history", "{r}");
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let h = |around: u64| json!({"type": "history", "conversation": conv, "around": around, "limit": 10});
    assert_eq!(seqs(&a.request(h(15)).await), (10..=19).collect::<Vec<_>>());
    let first = a.request(h(1)).await;
    assert_eq!(seqs(&first), (1..=10).collect::<Vec<_>>());
    assert_eq!(first["complete"], true);
    assert_eq!(seqs(&a.request(h(30)).await), (21..=30).collect::<Vec<_>>());
    assert_eq!(seqs(&a.request(h(29)).await), (21..=30).collect::<Vec<_>>());
    // Paging on from there: older with `before`, newer with `before` = last + limit + 1.
    let older = a
        .request(json!({"type": "history", "conversation": conv, "before": 10, "limit": 5}))
        .await;
    assert_eq!(seqs(&older), (5..=9).collect::<Vec<_>>());
    let e = a
        .request_err(json!({"type": "history", "conversation": conv, "around": 3, "before": 5}))
        .await;
    assert_eq!(e["code"], "bad_frame", "{e}");
    let e = c.request_err(h(15)).await;
    assert_eq!(e["code"], "not_found", "{e}");
}

/// Every result of `query` for `c`, through all pages.
async fn all_hits(c: &mut Client, query: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut extra = json!({"limit": 50});
        if let Some(b) = &before {
            extra["before"] = json!(b);
        }
        let r = search(c, query, extra).await;
        out.extend(hits(&r));
        match r["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => return out,
        }
    }
}

/// Waits until `query` finds exactly `want` (as a set, each once).
async fn wait_exactly(c: &mut Client, query: &str, want: &HashSet<(u64, u64)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = all_hits(c, query).await;
        let set: HashSet<(u64, u64)> = got.iter().copied().collect();
        assert_eq!(set.len(), got.len(), "a message found twice: {got:?}");
        assert!(set.is_subset(want), "found what was never acked");
        if &set == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acked messages found",
            set.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn index_catches_up_after_kill_9_and_is_rebuilt_when_missing_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let g = group(&mut a, "crash crew", &[&bob, &carol]).await;
    let mut acked: HashSet<(u64, u64)> = HashSet::new();
    // Bursts of sends without waiting, then every ack, then kill -9 at once: the last
    // messages are acked (durable in the store) but most likely not yet committed to the
    // index.
    for round in 0..3 {
        for i in 0..150 {
            if i == 75 {
                // Half acked and committed to the index (it commits every 250 ms), so the
                // restart finds an index with some of this round and not the rest.
                for _ in 0..75 {
                    let ack = a.recv_type("ack").await;
                    acked.insert((
                        ack["conversation"].as_u64().unwrap(),
                        ack["seq"].as_u64().unwrap(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            let target = match i % 3 {
                0 => json!({"conversation": g}),
                1 => json!({"to": bob.id}),
                _ => json!({"to": carol.id}),
            };
            let mut f = json!({"type": "send", "client_id": format!("r{round}-{i}"), "text": format!("crashword number {i} of round {round}")});
            for (k, v) in target.as_object().unwrap() {
                f[k] = v.clone();
            }
            a.send(f).await;
        }
        for _ in 75..150 {
            let ack = a.recv_type("ack").await;
            acked.insert((
                ack["conversation"].as_u64().unwrap(),
                ack["seq"].as_u64().unwrap(),
            ));
        }
        srv.kill();
        srv = Server::start(dir.path(), &[]);
        a = Client::connect_synced(&srv, &alice).await;
        wait_exactly(&mut a, "crashword", &acked).await;
    }
    assert_eq!(acked.len(), 450);
    let lag = srv.metric("chatd_search_lag_messages").await;
    assert_eq!(lag, 0.0);
    assert!(srv.metric("chatd_search_index_bytes").await > 0.0);

    // The index removed while stopped: rebuilt from the database, with a word in the log.
    srv.kill();
    std::fs::remove_dir_all(dir.path().join("search")).unwrap();
    srv = Server::start(dir.path(), &[]);
    a = Client::connect_synced(&srv, &alice).await;
    wait_exactly(&mut a, "crashword", &acked).await;
    srv.wait_log("building it from the database");

    // A damaged index file: detected at start, rebuilt.
    srv.kill();
    let mut damaged = 0;
    for e in std::fs::read_dir(dir.path().join("search")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".idx") || name.ends_with(".term") {
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    srv = Server::start(dir.path(), &[]);
    a = Client::connect_synced(&srv, &alice).await;
    wait_exactly(&mut a, "crashword", &acked).await;
    srv.wait_log("rebuilding it from the database");

    // A garbled meta.json (tantivy cannot open the index at all): rebuilt too.
    srv.kill();
    std::fs::write(dir.path().join("search").join("meta.json"), b"{not json").unwrap();
    srv = Server::start(dir.path(), &[]);
    a = Client::connect_synced(&srv, &alice).await;
    wait_exactly(&mut a, "crashword", &acked).await;
    srv.wait_log("cannot be opened");
}

/// Edits and deletions (issue 24 on issue 23): an edited message is found by its new words and
/// no longer by its old ones; a deleted message is never found again, also after a restart.
#[tokio::test]
async fn edits_and_deletions_change_what_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let m = a
        .say(json!({"to": bob.id}), "k1", "kumquat planning at noon")
        .await;
    let conv = m["conversation"].as_u64().unwrap();
    let seq = m["seq"].as_u64().unwrap();
    a.say(json!({"to": bob.id}), "k2", "kumquat recipes").await;
    assert_eq!(
        hits(&wait_for(&mut b, "kumquat", 2, Duration::from_secs(5)).await).len(),
        2
    );

    let r = a
        .request(json!({"type": "edit", "conversation": conv, "seq": seq, "text": "durian planning at noon"}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
    let found = wait_for(&mut b, "durian", 1, Duration::from_secs(5)).await;
    assert_eq!(hits(&found), [(conv, seq)]);
    assert_eq!(snippets(&found), ["durian planning at noon"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = search(&mut b, "kumquat", json!({})).await;
        if hits(&r).len() == 1 {
            assert_ne!(hits(&r)[0], (conv, seq), "the old text is not found");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old text is still found: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = a
        .request(json!({"type": "delete", "conversation": conv, "seq": seq}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = search(&mut b, "durian", json!({})).await;
        if hits(&r).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "a deleted message is found: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((a, b));
    srv.kill();
    srv = Server::start(dir.path(), &[]);
    let mut b = Client::connect_synced(&srv, &bob).await;
    assert!(hits(&search(&mut b, "durian", json!({})).await).is_empty());
    assert_eq!(
        hits(&wait_for(&mut b, "kumquat", 1, Duration::from_secs(5)).await).len(),
        1
    );
}
