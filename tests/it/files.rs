//! Files (issue 22): upload, download, authorization, attachments on messages, durability
//! across kill -9, safe serving headers and every bad input the issue lists, against the real
//! binary over real HTTP.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::ws::{user, Client, TestUser};
use crate::support::{http, Reply, Server};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

async fn upload(srv: &Server, u: &TestUser, name: &str, body: &[u8]) -> Reply {
    let path = format!("/api/files?name={}", enc(name));
    http(
        srv.addr,
        "POST",
        &path,
        &[("cookie", &u.cookie), ("content-type", "image/png")],
        Some(body.to_vec()),
    )
    .await
}

async fn upload_ok(srv: &Server, u: &TestUser, name: &str, body: &[u8]) -> Value {
    let r = upload(srv, u, name, body).await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()["file"].clone()
}

async fn get(srv: &Server, u: Option<&TestUser>, id: &str, extra: &[(&str, &str)]) -> Reply {
    let mut h: Vec<(&str, &str)> = extra.to_vec();
    if let Some(u) = u {
        h.push(("cookie", &u.cookie));
    }
    srv.get(&format!("/files/{id}"), &h).await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Blobs in `<data>/files` and leftovers in `<data>/files/tmp`.
fn on_disk(dir: &Path) -> (usize, usize) {
    let count = |p: &Path| {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_file())
                    .count()
            })
            .unwrap_or(0)
    };
    (count(&dir.join("files")), count(&dir.join("files/tmp")))
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn upload_then_download_streams_the_same_bytes_with_safe_headers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let body = pattern(3 * 1024 * 1024 + 17, 3);
    let f = upload_ok(&srv, &alice, "report.pdf", &body).await;
    let id = f["id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{f}"
    );
    assert_eq!(f["size"], body.len() as u64);
    assert_eq!(f["name"], "report.pdf");
    assert_eq!(
        f["mime"], "application/octet-stream",
        "decided from the bytes, not the claimed image/png"
    );
    assert!(f.get("width").is_none(), "{f}");

    let r = get(&srv, Some(&alice), id, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&body));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("sandbox; default-src 'none'")
    );
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"report.pdf\""));
    assert!(r.header("cache-control").unwrap().contains("immutable"));
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", &sha256_hex(&body)[..32]));

    // Range and ETag.
    let r = get(&srv, Some(&alice), id, &[("range", "bytes=100-199")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &body[100..200]);
    let total = body.len();
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{total}").as_str())
    );
    let r = get(&srv, Some(&alice), id, &[("range", "bytes=-10")]).await;
    assert_eq!(&r.body[..], &body[total - 10..]);
    let r = get(&srv, Some(&alice), id, &[("range", "bytes=99999999-")]).await;
    assert_eq!(r.status, 416);
    let r = get(&srv, Some(&alice), id, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // The same bytes again: a new id, one blob on disk.
    let f2 = upload_ok(&srv, &alice, "copy.pdf", &body).await;
    assert_ne!(f2["id"], f["id"]);
    assert_eq!(on_disk(dir.path()), (1, 0));
    assert!(dir.path().join("files").join(sha256_hex(&body)).is_file());

    // A 0-byte file is allowed and comes back empty.
    let r = http(
        srv.addr,
        "POST",
        "/api/files?name=empty.txt",
        &[("cookie", &alice.cookie), ("content-length", "0")],
        Some(Vec::new()),
    )
    .await;
    assert_eq!(r.status, 201);
    let z = r.json()["file"].clone();
    assert_eq!(z["size"], 0);
    let r = get(&srv, Some(&alice), z["id"].as_str().unwrap(), &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 0));

    // /api/server says the limits.
    let info = srv.get("/api/server", &[]).await.json();
    assert_eq!(info["max_upload_bytes"], 25 * 1024 * 1024);
    assert_eq!(info["max_attachments"], 10);
}

#[tokio::test]
async fn images_are_inline_everything_else_an_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    // A PNG header that claims 100,000 × 100,000 pixels: the size is reported, it is served
    // as the bytes it is, and nothing decodes it.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let f = upload_ok(&srv, &alice, "bomb.png", &png).await;
    assert_eq!(
        (
            f["mime"].as_str(),
            f["width"].as_u64(),
            f["height"].as_u64()
        ),
        (Some("image/png"), Some(100_000), Some(100_000))
    );
    let r = get(&srv, Some(&alice), f["id"].as_str().unwrap(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(r.header("content-disposition"), None, "inline");
    assert_eq!(&r.body[..], &png[..]);
    // ?download=1 forces an attachment.
    let r = srv
        .get(
            &format!("/files/{}?download=1", f["id"].as_str().unwrap()),
            &[("cookie", &alice.cookie)],
        )
        .await;
    assert!(r
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));

    // SVG and HTML are never inline, whatever the name says.
    for (name, bytes) in [
        (
            "x.svg",
            &b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"[..],
        ),
        ("x.html", &b"<html><script>alert(1)</script></html>"[..]),
        ("corrupt.jpg", &[0xff, 0xd8, 0xff, 0x00, 0x13][..]),
    ] {
        let f = upload_ok(&srv, &alice, name, bytes).await;
        let r = get(&srv, Some(&alice), f["id"].as_str().unwrap(), &[]).await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            r.header("content-security-policy"),
            Some("sandbox; default-src 'none'")
        );
        if name == "corrupt.jpg" {
            // A corrupt JPEG is still a JPEG by its bytes: served as the bytes, no size.
            assert_eq!(f["mime"], "image/jpeg");
            assert!(f.get("width").is_none(), "{f}");
        } else {
            assert_eq!(r.header("content-type"), Some("application/octet-stream"));
            assert!(r
                .header("content-disposition")
                .unwrap()
                .starts_with("attachment"));
        }
    }
}

#[tokio::test]
async fn names_are_stored_sanitized_and_never_used_as_paths() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    for (raw, want) in [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..\\..\\boot.ini", "_.._boot.ini"),
        ("a\0b\u{1}c\nd.txt", "abcd.txt"),
        ("invoice\u{202e}fdp.exe", "invoicefdp.exe"),
        ("照片 1.png", "照片 1.png"),
    ] {
        let f = upload_ok(&srv, &alice, raw, b"x").await;
        assert_eq!(f["name"], want, "{raw:?}");
    }
    // Nothing was written outside files/.
    assert!(!dir.path().join("etc").exists());
    let r = http(
        srv.addr,
        "POST",
        "/api/files",
        &[("cookie", &alice.cookie)],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
}

#[tokio::test]
async fn downloads_need_a_right_and_everything_else_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let f = upload_ok(&srv, &alice, "a.bin", b"secret").await;
    let id = f["id"].as_str().unwrap().to_string();
    // Not logged in, not the uploader, unknown id, not an id: all the same 404.
    let unknown = "0123456789abcdef0123456789abcdef";
    for (who, what) in [
        (None, id.as_str()),
        (Some(&bob), id.as_str()),
        (Some(&alice), unknown),
        (Some(&alice), "../../chatd.redb"),
    ] {
        let r = get(&srv, who, what, &[]).await;
        assert_eq!(r.status, 404, "{what}");
        assert_eq!(r.error_code(), "not_found");
    }
    let r = http(
        srv.addr,
        "POST",
        "/api/files?name=x",
        &[],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(r.status, 401);

    // A group of alice, bob and carol: alice sends the file; both can download it.
    let mut a = Client::connect_synced(&srv, &alice).await;
    let g = a
        .request(json!({"type": "create_group", "title": "g", "members": [bob.id, carol.id]}))
        .await;
    let conv = g["conversation"]["id"].as_u64().unwrap();
    a.send(json!({"type": "send", "client_id": "f1", "conversation": conv, "text": "", "attachments": [id]}))
        .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["client_id"], "f1", "{ack}");
    for u in [&bob, &carol] {
        let r = get(&srv, Some(u), &id, &[]).await;
        assert_eq!((r.status, &r.body[..]), (200, &b"secret"[..]));
    }
    // Carol removed: she loses access at once.
    let r = a
        .request(json!({"type": "remove_member", "conversation": conv, "user": carol.id}))
        .await;
    assert_ne!(r["type"], "error", "{r}");
    assert_eq!(get(&srv, Some(&carol), &id, &[]).await.status, 404);
    assert_eq!(get(&srv, Some(&bob), &id, &[]).await.status, 200);
}

#[tokio::test]
async fn messages_carry_attachments_in_every_frame_and_foreign_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let f1 = upload_ok(&srv, &alice, "one.txt", b"1").await;
    let f2 = upload_ok(&srv, &alice, "two.gif", b"GIF89a\x02\x00\x03\x00").await;
    let (id1, id2) = (f1["id"].as_str().unwrap(), f2["id"].as_str().unwrap());
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    a.send(json!({"type": "send", "client_id": "m1", "to": bob.id, "text": "  ", "attachments": [id1, id2]}))
        .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["client_id"], "m1", "{ack}");
    let conv = ack["conversation"].as_u64().unwrap();
    let msg = b.recv_type("message").await;
    let atts = &msg["attachments"];
    assert_eq!(atts.as_array().map(Vec::len), Some(2), "{msg}");
    assert_eq!(atts[0]["id"], id1);
    assert_eq!(atts[0]["name"], "one.txt");
    assert_eq!(atts[1]["mime"], "image/gif");
    assert_eq!(
        (atts[1]["width"].as_u64(), atts[1]["height"].as_u64()),
        (Some(2), Some(3))
    );
    // A resend with the same client_id: the original ack, nothing new.
    a.send(json!({"type": "send", "client_id": "m1", "to": bob.id, "text": "", "attachments": [id1, id2]}))
        .await;
    let again = a.recv_type("ack").await;
    assert_eq!(again["seq"], ack["seq"]);

    // History and sync (messages) carry them too.
    let h = b
        .request(json!({"type": "history", "conversation": conv}))
        .await;
    assert_eq!(h["messages"][0]["attachments"], *atts, "{h}");
    let mut b2 = Client::connect(&srv, &bob).await;
    b2.send(json!({"type": "sync", "cursors": [], "batch": true}))
        .await;
    let page = b2.recv_type("messages").await;
    assert_eq!(page["messages"][0]["attachments"], *atts, "{page}");

    // Bob may forward a file that is already in a conversation he is in, to that conversation;
    // carol may not use alice's file at all; unknown ids are refused; nothing is stored.
    let mut c = Client::connect_synced(&srv, &carol).await;
    for (client, body) in [
        (
            &mut c,
            json!({"type": "send", "client_id": "x1", "to": bob.id, "text": "hi", "attachments": [id1]}),
        ),
        (
            &mut b,
            json!({"type": "send", "client_id": "x2", "to": carol.id, "text": "hi", "attachments": [id1]}),
        ),
        (
            &mut a,
            json!({"type": "send", "client_id": "x3", "to": bob.id, "text": "hi", "attachments": ["0123456789abcdef0123456789abcdef"]}),
        ),
    ] {
        let e = client.request_err(body).await;
        assert_eq!(e["code"], "not_found", "{e}");
    }
    let ok = b
        .request(json!({"type": "send", "client_id": "fw", "conversation": conv, "text": "again", "attachments": [id1]}))
        .await;
    assert_eq!(ok["type"], "ack", "{ok}");
    assert_eq!(get(&srv, Some(&carol), id1, &[]).await.status, 404);
    // No message from the refused sends.
    let h = c.request(json!({"type": "conversations"})).await;
    assert_eq!(h["conversations"].as_array().map(Vec::len), Some(0), "{h}");

    // Bad attachment lists.
    for (list, why) in [
        (json!(["nope"]), "not a file id"),
        (json!([id1, id1]), "twice"),
        (
            json!((0..11).map(|i| format!("{i:032x}")).collect::<Vec<_>>()),
            "at most 10",
        ),
    ] {
        let e = a
            .request_err(json!({"type": "send", "client_id": "bad", "to": bob.id, "text": "x", "attachments": list}))
            .await;
        assert_eq!(e["code"], "bad_frame", "{e}");
        assert!(e["message"].as_str().unwrap().contains(why), "{e}");
    }
    let e = a
        .request_err(json!({"type": "send", "client_id": "empty", "to": bob.id, "text": " "}))
        .await;
    assert_eq!(e["code"], "empty_text");
}

#[tokio::test]
async fn acknowledged_files_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let body = pattern(2 * 1024 * 1024, 7);
    let f = upload_ok(&srv, &alice, "photo.bin", &body).await;
    let id = f["id"].as_str().unwrap().to_string();
    let mut a = Client::connect_synced(&srv, &alice).await;
    let ack = a
        .request(json!({"type": "send", "client_id": "k1", "to": bob.id, "text": "see", "attachments": [id]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let conv = ack["conversation"].as_u64().unwrap();
    // An upload cut off in the middle by the kill leaves nothing behind.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /api/files?name=half HTTP/1.1\r\nhost: {}\r\ncookie: {}\r\ncontent-length: 1000000\r\n\r\n",
        srv.addr, alice.cookie
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[7u8; 300_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.kill();
    drop(s);

    let srv = Server::start(dir.path(), &[]);
    assert_eq!(on_disk(dir.path()), (1, 0), "no partial file remains");
    let r = get(&srv, Some(&bob), &id, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&body));
    let mut b = Client::connect_synced(&srv, &bob).await;
    let h = b
        .request(json!({"type": "history", "conversation": conv}))
        .await;
    assert_eq!(h["messages"][0]["attachments"][0]["id"], id.as_str(), "{h}");
}

/// Writes a raw request head (and part of a body); returns the status line and the rest.
async fn raw(srv: &Server, head: &str, body: &[u8], then_close: bool) -> String {
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    if then_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_uploads_leave_nothing_and_limits_answer_before_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--max-upload-mb", "1", "--files-quota-mb", "2"],
    );
    let alice = user(&srv, "alice").await;
    let host = srv.addr.to_string();
    let c = &alice.cookie;

    // No Content-Length (chunked): 411.
    let out = raw(
        &srv,
        &format!("POST /api/files?name=a HTTP/1.1\r\nhost: {host}\r\ncookie: {c}\r\ntransfer-encoding: chunked\r\n\r\n"),
        b"5\r\nhello\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 411"), "{out}");
    assert!(out.contains("length_required"), "{out}");

    // Over the limit: 413 right after the head, the body never sent.
    let t = std::time::Instant::now();
    let out = raw(
        &srv,
        &format!("POST /api/files?name=a HTTP/1.1\r\nhost: {host}\r\ncookie: {c}\r\ncontent-length: {}\r\n\r\n", 1024 * 1024 + 1),
        b"",
        false,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("file_too_large"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(3));

    // Quota: 2 MiB in all.
    upload_ok(&srv, &alice, "a", &pattern(1024 * 1024, 1)).await;
    upload_ok(&srv, &alice, "b", &pattern(900 * 1024, 2)).await;
    let r = upload(&srv, &alice, "c", &pattern(200 * 1024, 3)).await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "quota_exceeded"));

    // A body shorter than announced, then the client goes away: no file.
    let before = on_disk(dir.path());
    let out = raw(
        &srv,
        &format!("POST /api/files?name=short HTTP/1.1\r\nhost: {host}\r\ncookie: {c}\r\ncontent-length: 1000\r\n\r\n"),
        &[1u8; 400],
        true,
    )
    .await;
    assert!(!out.starts_with("HTTP/1.1 201"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(on_disk(dir.path()), before, "no file, no temporary file");
    // Content-Length lies the other way (more bytes than announced): only the announced
    // bytes are the file.
    let out = raw(
        &srv,
        &format!("POST /api/files?name=long HTTP/1.1\r\nhost: {host}\r\ncookie: {c}\r\ncontent-length: 3\r\nconnection: close\r\n\r\n"),
        b"abcdef",
        false,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert!(out.contains("\"size\":3"), "{out}");
    // The server is fine.
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
}
