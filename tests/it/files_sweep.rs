//! Uploads never attached to a message are removed after a day (here: after the hidden
//! `--unattached-file-ttl-secs`): their records first, then the bytes of blobs no record names
//! any more (a blob shared with an attached upload stays), thumbnails with them; a blob left
//! without a record by a crash goes too. Real binary, real HTTP.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::files_thumbs::{png, upload};
use crate::support::ws::{user, Client};
use crate::support::Server;

fn blobs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sha(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn unattached_uploads_are_swept_and_shared_bytes_stay() {
    let dir = tempfile::tempdir().unwrap();
    // A blob a crash left without a record (renamed, never recorded).
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    let stray = sha(b"stray");
    std::fs::write(dir.path().join("files").join(&stray), b"stray").unwrap();
    let srv = Server::start(dir.path(), &["--unattached-file-ttl-secs", "3"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let img = png(&image::RgbImage::from_pixel(
        900,
        600,
        image::Rgb([9, 9, 9]),
    ));
    let lonely = upload(&srv, &alice, "lonely.png", &img).await;
    let kept = upload(&srv, &alice, "kept.bin", b"kept bytes").await;
    // The same bytes twice: one upload is sent, the other never is.
    let twin_sent = upload(&srv, &alice, "twin.bin", b"twin bytes").await;
    let twin_left = upload(&srv, &alice, "twin copy.bin", b"twin bytes").await;
    assert!(dir.path().join("files/thumbs").join(sha(&img)).exists());
    let mut a = Client::connect_synced(&srv, &alice).await;
    let ack = a
        .request(
            json!({"type": "send", "client_id": "s1", "to": bob.id, "text": "",
            "attachments": [kept["id"], twin_sent["id"]]}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // After the age limit (and a sweep): the unattached ones are gone, records and bytes.
    let gone = |id: &serde_json::Value| format!("/files/{}", id.as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = srv
            .get(&gone(&lonely["id"]), &[("cookie", &alice.cookie)])
            .await;
        if r.status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let twin = srv
        .get(&gone(&twin_left["id"]), &[("cookie", &alice.cookie)])
        .await;
    assert_eq!(twin.status, 404);
    // The attached ones stay, for both; the shared blob stays with the attached twin.
    for (f, body) in [
        (&kept, &b"kept bytes"[..]),
        (&twin_sent, &b"twin bytes"[..]),
    ] {
        for u in [&alice, &bob] {
            let r = srv.get(&gone(&f["id"]), &[("cookie", &u.cookie)]).await;
            assert_eq!(r.status, 200);
            assert_eq!(&r.body[..], body);
        }
    }
    let mut want = vec![sha(b"kept bytes"), sha(b"twin bytes")];
    want.sort();
    assert_eq!(
        blobs(dir.path()),
        want,
        "the lonely image and the stray blob are gone"
    );
    assert!(!dir.path().join("files/thumbs").join(sha(&img)).exists());
    // A swept id can no longer be sent.
    let r = a
        .request(
            json!({"type": "send", "client_id": "s2", "to": bob.id, "text": "",
            "attachments": [lonely["id"]]}),
        )
        .await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{r}"
    );
    // Attached files outlive any number of sweeps.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        srv.get(&gone(&kept["id"]), &[("cookie", &bob.cookie)])
            .await
            .status,
        200
    );
    assert!(srv.log().contains("removed"), "the sweep says what it did");
}
