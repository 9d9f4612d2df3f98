//! Read positions and the conversation list over real WebSocket clients: unread counts and
//! previews in `welcome`, `read` receipts to the reader's other devices and to the peer, read
//! positions that never move back and are clamped, sending marks read, `members` read
//! positions, and the list's order (newest activity first), presence, previews and titles.

use serde_json::{json, Value};

use crate::support::ws::{types, user, wait_clock_past, Client};
use crate::support::Server;

/// The user's view of one conversation, from a fresh `conversations` request.
async fn summary(c: &mut Client, conv: u64) -> Value {
    let list = c.request(json!({"type": "conversations"})).await;
    assert_eq!(list["type"], "conversations", "{list}");
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == conv)
        .unwrap_or_else(|| panic!("conversation {conv} not listed: {list}"))
        .clone()
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn unread_counts_read_receipts_and_read_positions() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    // Bob is offline while alice writes.
    let mut conv = 0;
    for i in 1..=3 {
        let ack = a
            .say(json!({"to": bob.id}), &format!("a{i}"), &format!("m{i}"))
            .await;
        conv = ack["conversation"].as_u64().unwrap();
    }

    let mut b1 = Client::connect(&srv, &bob).await;
    let list = &b1.welcome["conversations"];
    assert_eq!(ids(list), vec![conv]);
    let c = &list[0];
    assert_eq!(c["kind"], "direct");
    assert_eq!(c["title"], "alice");
    assert_eq!(c["peer"]["id"], alice.id);
    assert_eq!(c["peer"]["online"], true);
    assert_eq!(c["last_seq"], 3);
    assert_eq!(c["read_seq"], 0);
    assert_eq!(c["unread"], 3);
    assert_eq!(c["last_message"]["seq"], 3);
    assert_eq!(c["last_message"]["sender"], alice.id);
    assert_eq!(c["last_message"]["sender_name"], "alice");
    assert_eq!(c["last_message"]["text"], "m3");
    assert_eq!(c["last_time"], c["last_message"]["time"]);
    b1.send(json!({"type": "sync"})).await;
    b1.recv_type("synced").await;
    let mut b2 = Client::connect_synced(&srv, &bob).await;
    // Alice's own view: she has read everything she sent.
    let mine = summary(&mut a, conv).await;
    assert_eq!(
        (mine["read_seq"].clone(), mine["unread"].clone()),
        (json!(3), json!(0))
    );

    // Bob reads up to 2: his other device and alice hear it; the reading connection does not.
    b1.send(json!({"type": "read", "conversation": conv, "seq": 2}))
        .await;
    let expect = json!({"type": "read", "conversation": conv, "user": bob.id, "seq": 2});
    assert_eq!(b2.recv_type("read").await, expect);
    assert_eq!(a.recv_type("read").await, expect);
    let seen = b1.writer_barrier().await;
    assert!(
        seen.iter().all(|f| f["type"] != "read"),
        "the reading connection got {:?}",
        types(&seen)
    );
    let s = summary(&mut b1, conv).await;
    assert_eq!(
        (s["read_seq"].clone(), s["unread"].clone()),
        (json!(2), json!(1))
    );

    // A lower seq later never moves it back, and is no news for anyone.
    b1.send(json!({"type": "read", "conversation": conv, "seq": 1}))
        .await;
    let seen = b1.writer_barrier().await;
    assert!(seen.iter().all(|f| f["type"] != "error"), "{seen:?}");
    let s = summary(&mut b1, conv).await;
    assert_eq!(
        (s["read_seq"].clone(), s["unread"].clone()),
        (json!(2), json!(1))
    );
    // Same seq again: no receipt either. Bob's barrier ran after both reads.
    b1.send(json!({"type": "read", "conversation": conv, "seq": 2}))
        .await;
    b1.writer_barrier().await;
    for x in [&mut b2, &mut a] {
        let seen = x.writer_barrier().await;
        assert!(
            seen.iter().all(|f| f["type"] != "read"),
            "a read that moved nothing was announced: {seen:?}"
        );
    }

    // Beyond the last message: clamped to it.
    b2.send(json!({"type": "read", "conversation": conv, "seq": 1_000_000}))
        .await;
    let expect = json!({"type": "read", "conversation": conv, "user": bob.id, "seq": 3});
    assert_eq!(b1.recv_type("read").await, expect);
    assert_eq!(a.recv_type("read").await, expect);
    let s = summary(&mut b2, conv).await;
    assert_eq!(
        (s["read_seq"].clone(), s["unread"].clone()),
        (json!(3), json!(0))
    );

    // Alice writes two more; bob has two unread. Then bob answers: sending marks read.
    a.say(json!({"conversation": conv}), "a4", "m4").await;
    a.say(json!({"conversation": conv}), "a5", "m5").await;
    assert_eq!(b1.recv_type("message").await["seq"], 4);
    assert_eq!(b1.recv_type("message").await["seq"], 5);
    let s = summary(&mut b1, conv).await;
    assert_eq!(
        (s["read_seq"].clone(), s["unread"].clone()),
        (json!(3), json!(2))
    );
    let ack = b1
        .say(json!({"conversation": conv}), "b1", "got them")
        .await;
    assert_eq!(ack["seq"], 6);
    let s = summary(&mut b1, conv).await;
    assert_eq!(
        (s["read_seq"].clone(), s["unread"].clone()),
        (json!(6), json!(0))
    );
    assert_eq!(s["last_message"]["text"], "got them");
    assert_eq!(s["last_message"]["sender_name"], "bob");
    let s = summary(&mut a, conv).await;
    assert_eq!(
        (s["read_seq"].clone(), s["unread"].clone()),
        (json!(5), json!(1))
    );

    // `members` shows each member's position.
    let m = a
        .request(json!({"type": "members", "conversation": conv}))
        .await;
    assert_eq!(m["type"], "members", "{m}");
    let mut got: Vec<(u64, String, u64, bool)> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_u64().unwrap(),
                x["name"].as_str().unwrap().to_string(),
                x["read_seq"].as_u64().unwrap(),
                x["online"].as_bool().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (alice.id, "alice".to_string(), 5, true),
            (bob.id, "bob".to_string(), 6, true)
        ]
    );
    // The read positions are durable: a fresh connection's welcome shows them.
    let b3 = Client::connect(&srv, &bob).await;
    let c = &b3.welcome["conversations"][0];
    assert_eq!(
        (c["read_seq"].clone(), c["unread"].clone()),
        (json!(6), json!(0))
    );
}

#[tokio::test]
async fn conversation_list_is_newest_first_with_presence_previews_and_titles() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    // Carol stays offline.

    let ack = a.say(json!({"to": bob.id}), "ab1", "hi bob").await;
    let ab = ack["conversation"].as_u64().unwrap();
    wait_clock_past(ack["time"].as_u64().unwrap()).await;
    let ack = a.say(json!({"to": carol.id}), "ac1", "hi carol").await;
    let ac = ack["conversation"].as_u64().unwrap();
    wait_clock_past(ack["time"].as_u64().unwrap()).await;
    let created = a
        .request(json!({"type": "create_group", "title": "project", "members": [bob.id]}))
        .await;
    let g = created["conversation"]["id"].as_u64().unwrap();
    let g_time = created["conversation"]["last_time"].as_u64().unwrap();

    let list = a.request(json!({"type": "conversations"})).await;
    let convs = &list["conversations"];
    assert_eq!(ids(convs), vec![g, ac, ab], "newest activity first: {list}");
    let (cg, cac, cab) = (&convs[0], &convs[1], &convs[2]);
    assert_eq!(cg["kind"], "group");
    assert_eq!(cg["title"], "project");
    assert_eq!(cg["owner"], alice.id);
    assert_eq!(cg["member_count"], 2);
    assert!(
        cg.get("peer").is_none() && cg.get("last_message").is_none(),
        "{cg}"
    );
    assert_eq!(cac["title"], "carol");
    assert_eq!(
        cac["peer"],
        json!({"id": carol.id, "name": "carol", "color": color(carol.id), "online": false})
    );
    assert!(cac.get("owner").is_none(), "{cac}");
    assert_eq!(cac["last_message"]["text"], "hi carol");
    assert_eq!(
        cab["peer"],
        json!({"id": bob.id, "name": "bob", "color": color(bob.id), "online": true})
    );
    assert_eq!(cab["last_message"]["text"], "hi bob");

    // A message in the oldest conversation moves it to the top.
    wait_clock_past(g_time).await;
    let long = "ü".repeat(200);
    a.say(json!({"conversation": ab}), "ab2", &long).await;
    let list = a.request(json!({"type": "conversations"})).await;
    let convs = &list["conversations"];
    assert_eq!(ids(convs), vec![ab, g, ac], "{list}");
    // The preview is the first 120 characters (not bytes) of the text.
    let preview = convs[0]["last_message"]["text"].as_str().unwrap();
    assert_eq!(preview, "ü".repeat(120));
    assert_eq!(convs[0]["last_message"]["seq"], 2);
    // The full text is still delivered in full.
    let m = loop {
        let m = b.recv_type("message").await;
        if m["conversation"] == ab && m["seq"] == 2 {
            break m;
        }
    };
    assert_eq!(m["text"], long);

    // Bob's own list: his two conversations, with alice as the peer, newest first.
    let list = b.request(json!({"type": "conversations"})).await;
    let convs = &list["conversations"];
    assert_eq!(ids(convs), vec![ab, g], "{list}");
    assert_eq!(convs[0]["title"], "alice");
    assert_eq!(convs[0]["peer"]["online"], true);
    assert_eq!(convs[0]["unread"], 2);
    assert_eq!(convs[1]["title"], "project");
    // Carol, connecting later, sees hers in welcome with alice online.
    let c = Client::connect(&srv, &carol).await;
    let convs = &c.welcome["conversations"];
    assert_eq!(ids(convs), vec![ac]);
    assert_eq!(convs[0]["peer"]["name"], "alice");
    assert_eq!(convs[0]["peer"]["online"], true);
    assert_eq!(convs[0]["unread"], 1);
}

/// The default avatar colour of a user (no colour chosen): derived from the id.
fn color(id: u64) -> &'static str {
    chatd::model::color_name(chatd::model::UserId(id), 0)
}
