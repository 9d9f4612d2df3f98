//! Groups over real WebSocket clients: creation fans out to every member's devices, messages
//! fan out to members only, non-members cannot tell a group from a missing conversation, owner
//! rights (add/remove), leaving and ownership hand-over, and validation of `create_group`.

use serde_json::{json, Value};

use crate::support::ws::{message_fields, types, user, Client, NO_SUCH_CONVERSATION};
use crate::support::Server;

fn conv_id(frame: &Value) -> u64 {
    frame["conversation"]["id"]
        .as_u64()
        .expect("conversation id")
}

/// The members of a conversation as (id, role, read_seq), by id.
async fn members(c: &mut Client, conv: u64) -> Vec<(u64, String, u64)> {
    let m = c
        .request(json!({"type": "members", "conversation": conv}))
        .await;
    assert_eq!(m["type"], "members", "{m}");
    assert_eq!(m["conversation"], conv);
    let mut out: Vec<(u64, String, u64)> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_u64().unwrap(),
                x["role"].as_str().unwrap().to_string(),
                x["read_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn create_group_reaches_every_member_device_and_messages_fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let dave = user(&srv, "dave").await;
    let mut a1 = Client::connect_synced(&srv, &alice).await;
    let mut a2 = Client::connect_synced(&srv, &alice).await;
    let mut b1 = Client::connect_synced(&srv, &bob).await;
    let mut b2 = Client::connect_synced(&srv, &bob).await;
    let mut c1 = Client::connect_synced(&srv, &carol).await;
    let mut d1 = Client::connect_synced(&srv, &dave).await;

    let created = a1
        .request(json!({"type": "create_group", "title": "  crew  ", "members": [bob.id, carol.id, bob.id]}))
        .await;
    assert_eq!(created["type"], "conversation", "{created}");
    let g = conv_id(&created);
    let conv = &created["conversation"];
    assert_eq!(conv["kind"], "group");
    assert_eq!(conv["title"], "crew", "the title is trimmed");
    assert_eq!(conv["owner"], alice.id);
    assert_eq!(
        conv["member_count"], 3,
        "duplicates and the creator counted once"
    );
    // The "created" line follows as seq 1 (not unread, not a last message).
    assert_eq!(conv["last_seq"], 0);
    assert_eq!(conv["unread"], 0);
    assert!(conv.get("peer").is_none(), "{conv}");
    assert!(conv.get("last_message").is_none(), "{conv}");

    // Every other device of every member hears about it, without the creator's ref.
    for c in [&mut a2, &mut b1, &mut b2, &mut c1] {
        let f = c.recv_type("conversation").await;
        assert_eq!(conv_id(&f), g);
        assert!(
            f.get("ref").is_none(),
            "only the requester's copy has ref: {f}"
        );
        assert_eq!(f["conversation"]["title"], "crew");
        assert_eq!(f["conversation"]["owner"], alice.id);
        assert_eq!(f["conversation"]["member_count"], 3);
    }

    // Every member's devices (the creator's too) get the "created" line as seq 1.
    for c in [&mut a1, &mut a2, &mut b1, &mut b2, &mut c1] {
        let m = c.recv_type("message").await;
        assert_eq!(
            (m["seq"].as_u64(), m["kind"].as_str()),
            (Some(1), Some("system"))
        );
        assert_eq!(
            m["system"],
            json!({"action": "created", "title": "crew"}),
            "{m}"
        );
        assert_eq!(m["sender"], alice.id);
    }

    // A message reaches every member's devices except the sending connection.
    let ack = b1
        .say(json!({"conversation": g}), "b-g1", "hello crew")
        .await;
    assert_eq!(ack["seq"], 2);
    for c in [&mut a1, &mut a2, &mut b2, &mut c1] {
        let m = c.recv_type("message").await;
        assert_eq!(m["conversation"], g);
        assert_eq!(m["seq"], 2);
        assert_eq!(m["sender"], bob.id);
        assert_eq!(m["text"], "hello crew");
        assert_eq!(m["kind"], "text");
    }
    let ack = c1.say(json!({"conversation": g}), "c-g2", "hi").await;
    assert_eq!(ack["seq"], 3);
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert_eq!(c.recv_type("message").await["seq"], 3);
    }

    // Dave, not a member, heard nothing of it. The barrier goes through the writer after
    // both sends were fanned out, so anything queued for dave would show up before it.
    let seen = d1.writer_barrier().await;
    assert!(
        seen.iter()
            .all(|f| f["type"] != "message" && f["type"] != "conversation"),
        "a non-member got {seen:?}"
    );
}

#[tokio::test]
async fn non_member_gets_the_same_not_found_as_for_a_missing_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let eve = user(&srv, "eve").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let created = a
        .request(json!({"type": "create_group", "title": "secret", "members": [bob.id]}))
        .await;
    let g = conv_id(&created);
    a.say(json!({"conversation": g}), "a-1", "classified").await;
    let mut e = Client::connect_synced(&srv, &eve).await;

    let requests = |conv: u64, n: usize| -> Vec<Value> {
        vec![
            json!({"type": "send", "client_id": format!("e-{n}"), "conversation": conv, "text": "let me in"}),
            json!({"type": "history", "conversation": conv}),
            json!({"type": "members", "conversation": conv}),
            json!({"type": "read", "conversation": conv, "seq": 1}),
            json!({"type": "typing", "conversation": conv}),
            json!({"type": "add_members", "conversation": conv, "members": [eve.id]}),
            json!({"type": "remove_member", "conversation": conv, "user": bob.id}),
            json!({"type": "leave", "conversation": conv}),
        ]
    };
    let real = requests(g, 1);
    let fake = requests(NO_SUCH_CONVERSATION, 2);
    for (r, f) in real.into_iter().zip(fake) {
        let what = r["type"].as_str().unwrap().to_string();
        let er = e.request_err(r).await;
        let ef = e.request_err(f).await;
        assert_eq!(er["code"], "not_found", "{what}: {er}");
        assert_eq!(
            (&er["code"], &er["message"]),
            (&ef["code"], &ef["message"]),
            "{what}: a member-only conversation must look exactly like a missing one"
        );
        if what == "send" {
            assert_eq!(er["client_id"], "e-1");
            assert_eq!(ef["client_id"], "e-2");
        }
    }
    // Nothing leaked into the group: still the "created" line and one message, two members,
    // and eve's `read` of it moved nothing.
    let h = a
        .request(json!({"type": "history", "conversation": g}))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2, "{h}");
    assert_eq!(
        members(&mut a, g).await,
        vec![
            (alice.id, "owner".to_string(), 2),
            (bob.id, "member".to_string(), 0)
        ]
    );
}

#[tokio::test]
async fn owner_adds_members_who_see_history_and_new_messages_with_nothing_unread() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let dave = user(&srv, "dave").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let mut c1 = Client::connect_synced(&srv, &carol).await;
    let mut c2 = Client::connect_synced(&srv, &carol).await;
    let g = conv_id(
        &a.request(json!({"type": "create_group", "title": "team", "members": [bob.id]}))
            .await,
    );
    b.recv_type("conversation").await;
    a.say(json!({"conversation": g}), "a-1", "before carol 1")
        .await;
    a.say(json!({"conversation": g}), "a-2", "before carol 2")
        .await;
    // seq 1 is the "created" line.
    assert_eq!(b.recv_type("message").await["seq"], 1);
    assert_eq!(b.recv_type("message").await["seq"], 2);
    assert_eq!(b.recv_type("message").await["seq"], 3);

    // Bob is a member but not the owner.
    let e = b
        .request_err(json!({"type": "add_members", "conversation": g, "members": [carol.id]}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = b
        .request_err(json!({"type": "remove_member", "conversation": g, "user": alice.id}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    // An unknown user makes the whole add fail.
    let e = a
        .request_err(json!({"type": "add_members", "conversation": g, "members": [carol.id, 4242]}))
        .await;
    assert_eq!(e["code"], "user_not_found", "{e}");
    assert_eq!(members(&mut a, g).await.len(), 2, "nothing was added");

    let r = a
        .request(json!({"type": "add_members", "conversation": g, "members": [carol.id, bob.id]}))
        .await;
    assert_eq!(r["type"], "conversation", "{r}");
    assert_eq!(r["conversation"]["member_count"], 3);
    // The existing member sees the new count.
    let u = b.recv_type("conversation").await;
    assert_eq!(conv_id(&u), g);
    assert_eq!(u["conversation"]["member_count"], 3);
    // Both of carol's devices get the group, with the history before she joined marked read.
    for c in [&mut c1, &mut c2] {
        let f = c.recv_type("conversation").await;
        assert_eq!(conv_id(&f), g);
        let conv = &f["conversation"];
        assert_eq!(conv["title"], "team");
        assert_eq!(conv["member_count"], 3);
        // seq 4, the "added carol" line, follows (and is not unread).
        assert_eq!(conv["last_seq"], 3);
        assert_eq!(conv["read_seq"], 3);
        assert_eq!(conv["unread"], 0);
        assert_eq!(conv["last_message"]["text"], "before carol 2");
    }
    let list = c1.request(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"][0]["id"], g);
    assert_eq!(list["conversations"][0]["unread"], 0);

    // She can read what was said before she joined.
    let h = c1
        .request(json!({"type": "history", "conversation": g}))
        .await;
    let texts = message_fields(&h, "text");
    assert_eq!(texts, vec!["", "before carol 1", "before carol 2", ""]);
    assert_eq!(
        message_fields(&h, "kind"),
        ["system", "text", "text", "system"]
    );
    let added = &h["messages"][3]["system"];
    assert_eq!(
        added,
        &json!({"action": "added", "users": [carol.id], "names": ["carol"]})
    );
    assert_eq!(h["complete"], true);

    // New messages reach her live, starting right after the history (no replay of 1 to 3):
    // the "added" line (c1 read it while waiting for the replies above), then the message.
    a.say(json!({"conversation": g}), "a-3", "welcome carol")
        .await;
    for c in [&mut c1, &mut c2] {
        let (mut m, before) = c.recv_until("message").await;
        if m["seq"] == 4 {
            assert_eq!(m["kind"], "system", "{m}");
            m = c.recv_type("message").await;
        }
        assert_eq!(m["seq"], 5, "{m}; before: {before:?}");
        assert_eq!(m["text"], "welcome carol");
    }
    let list = c2.request(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"][0]["unread"], 1);
    // Carol can post too.
    assert_eq!(b.recv_type("message").await["kind"], "system");
    assert_eq!(b.recv_type("message").await["text"], "welcome carol");
    c1.say(json!({"conversation": g}), "c-1", "thanks").await;
    assert_eq!(a.recv_type("message").await["text"], "thanks");
    assert_eq!(b.recv_type("message").await["text"], "thanks");

    // Dave, added later by the owner, also starts with nothing unread.
    let mut d = Client::connect_synced(&srv, &dave).await;
    a.request(json!({"type": "add_members", "conversation": g, "members": [dave.id]}))
        .await;
    let f = d.recv_type("conversation").await;
    assert_eq!(f["conversation"]["unread"], 0);
    assert_eq!(f["conversation"]["read_seq"], 6);
    assert_eq!(
        members(&mut d, g).await,
        vec![
            (alice.id, "owner".to_string(), 5),
            (bob.id, "member".to_string(), 0),
            (carol.id, "member".to_string(), 6),
            (dave.id, "member".to_string(), 6),
        ]
    );
}

#[tokio::test]
async fn removed_member_gets_removed_and_no_further_messages() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b1 = Client::connect_synced(&srv, &bob).await;
    let mut b2 = Client::connect_synced(&srv, &bob).await;
    let mut c = Client::connect_synced(&srv, &carol).await;
    let g = conv_id(
        &a.request(json!({"type": "create_group", "title": "g", "members": [bob.id, carol.id]}))
            .await,
    );
    a.say(json!({"conversation": g}), "a-1", "one").await;
    for x in [&mut b1, &mut b2, &mut c] {
        assert_eq!(x.recv_type("message").await["seq"], 1, "the created line");
        assert_eq!(x.recv_type("message").await["seq"], 2);
    }

    let r = a
        .request(json!({"type": "remove_member", "conversation": g, "user": bob.id}))
        .await;
    assert_eq!(r["type"], "conversation", "{r}");
    assert_eq!(r["conversation"]["member_count"], 2);
    for x in [&mut b1, &mut b2] {
        let f = x.recv_type("removed").await;
        assert_eq!(f["conversation"], g);
        assert!(f.get("ref").is_none(), "{f}");
    }
    let u = c.recv_type("conversation").await;
    assert_eq!(u["conversation"]["member_count"], 2);

    a.say(json!({"conversation": g}), "a-2", "bob is gone")
        .await;
    // Carol gets the "removed" line, then the message; bob gets neither. Carol's copy is
    // fanned out after bob's would have been (members in id order), and the barrier passes
    // through the writer after the send: a leaked message would come first.
    let line = c.recv_type("message").await;
    assert_eq!(line["seq"], 3);
    assert_eq!(
        line["system"],
        json!({"action": "removed", "users": [bob.id], "names": ["bob"]})
    );
    assert_eq!(c.recv_type("message").await["seq"], 4);
    for x in [&mut b1, &mut b2] {
        let seen = x.writer_barrier().await;
        assert!(
            seen.iter().all(|f| f["type"] != "message"),
            "removed member got {seen:?}"
        );
    }
    // And the group is gone for him: not_found everywhere, not listed.
    let e = b1
        .request_err(json!({"type": "history", "conversation": g}))
        .await;
    assert_eq!(e["code"], "not_found");
    let e = b1
        .request_err(json!({"type": "send", "client_id": "b-x", "conversation": g, "text": "hey"}))
        .await;
    assert_eq!(e["code"], "not_found");
    let list = b2.request(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"], json!([]), "{list}");
    // Reconnecting and syncing from scratch replays nothing of the group.
    let mut b3 = Client::connect(&srv, &bob).await;
    assert_eq!(b3.welcome["conversations"], json!([]));
    b3.send(json!({"type": "sync", "ref": 1})).await;
    let (_, before) = b3.recv_until("synced").await;
    assert!(before.iter().all(|f| f["type"] != "message"), "{before:?}");
}

#[tokio::test]
async fn leaving_passes_ownership_to_the_lowest_remaining_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let dave = user(&srv, "dave").await;
    assert!(alice.id < bob.id && bob.id < carol.id && carol.id < dave.id);
    let mut a1 = Client::connect_synced(&srv, &alice).await;
    let mut a2 = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let mut c = Client::connect_synced(&srv, &carol).await;
    let mut d = Client::connect_synced(&srv, &dave).await;
    // Dave creates the group, so the owner is not the lowest id to begin with.
    let g = conv_id(
        &d.request(
            json!({"type": "create_group", "title": "g", "members": [carol.id, bob.id, alice.id]}),
        )
        .await,
    );
    assert_eq!(
        c.recv_type("conversation").await["conversation"]["owner"],
        dave.id
    );

    // A plain member leaves: no ownership change.
    let r = a1
        .request(json!({"type": "leave", "conversation": g}))
        .await;
    assert_eq!(r["type"], "removed", "{r}");
    assert_eq!(r["conversation"], g);
    let f = a2.recv_type("removed").await;
    assert_eq!(f["conversation"], g);
    let u = d.recv_type("conversation").await;
    assert_eq!(u["conversation"]["member_count"], 3);
    assert_eq!(u["conversation"]["owner"], dave.id);

    // The owner leaves: bob (lowest remaining id) becomes owner.
    let r = d.request(json!({"type": "leave", "conversation": g})).await;
    assert_eq!(r["type"], "removed", "{r}");
    for x in [&mut b, &mut c] {
        // Skip the earlier updates (creation, alice leaving).
        let u = loop {
            let u = x.recv_type("conversation").await;
            if u["conversation"]["member_count"] == 2 {
                break u;
            }
            assert_eq!(u["conversation"]["owner"], dave.id, "{u}");
        };
        assert_eq!(u["conversation"]["member_count"], 2, "{u}");
        assert_eq!(u["conversation"]["owner"], bob.id, "{u}");
    }
    let m = c
        .request(json!({"type": "members", "conversation": g}))
        .await;
    let roles: Vec<(u64, &str)> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["id"].as_u64().unwrap(), x["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, vec![(bob.id, "owner"), (carol.id, "member")]);

    // The new owner has the rights; the former owner has nothing left.
    let e = c
        .request_err(json!({"type": "add_members", "conversation": g, "members": [dave.id]}))
        .await;
    assert_eq!(e["code"], "forbidden");
    let r = b
        .request(json!({"type": "add_members", "conversation": g, "members": [dave.id]}))
        .await;
    assert_eq!(r["type"], "conversation", "{r}");
    let f = d.recv_type("conversation").await;
    assert_eq!(f["conversation"]["owner"], bob.id);
    let e = d
        .request_err(json!({"type": "remove_member", "conversation": g, "user": carol.id}))
        .await;
    assert_eq!(e["code"], "forbidden");

    // Direct conversations have fixed members.
    let ack = a1.say(json!({"to": bob.id}), "a-d", "direct").await;
    let direct = ack["conversation"].as_u64().unwrap();
    let e = a1
        .request_err(json!({"type": "leave", "conversation": direct}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = a1
        .request_err(json!({"type": "add_members", "conversation": direct, "members": [carol.id]}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = a1
        .request_err(json!({"type": "remove_member", "conversation": direct, "user": bob.id}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let list = a1.request(json!({"type": "conversations"})).await;
    let ids: Vec<u64> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![direct],
        "alice left the group; the direct chat stays"
    );
}

#[tokio::test]
async fn create_group_validates_title_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;

    let e = a
        .request_err(json!({"type": "create_group", "title": "x", "members": [bob.id, 4242]}))
        .await;
    assert_eq!(e["code"], "user_not_found", "{e}");
    for title in ["", "   ", &"t".repeat(65)] {
        let e = a
            .request_err(json!({"type": "create_group", "title": title, "members": [bob.id]}))
            .await;
        assert_eq!(e["code"], "bad_frame", "title {title:?}: {e}");
    }
    let e = a
        .request_err(json!({"type": "create_group", "members": [bob.id]}))
        .await;
    assert_eq!(e["code"], "bad_frame", "missing title: {e}");
    // None of those created anything, for anyone.
    let list = a.request(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"], json!([]), "{list}");
    let seen = b.writer_barrier().await;
    assert!(
        seen.iter().all(|f| f["type"] != "conversation"),
        "{:?}",
        types(&seen)
    );

    // 64 characters (not bytes) is the limit; a group of one is fine.
    let title = "é".repeat(64);
    let r = a
        .request(json!({"type": "create_group", "title": title}))
        .await;
    assert_eq!(r["type"], "conversation", "{r}");
    assert_eq!(r["conversation"]["title"], title);
    assert_eq!(r["conversation"]["member_count"], 1);
}
