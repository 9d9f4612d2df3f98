//! `chatd backup` and `chatd restore` carry the uploaded files (issue 22): a backup taken while
//! uploads and sends run restores with every file its database names present and intact
//! (sha256 equal), thumbnails included; a restore without the backup's `.files` directory is
//! refused before anything changes; a backup of a stopped server carries them too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::cli::assert_clean_failure;
use crate::files_thumbs::{png, upload};
use crate::ops::all_messages;
use crate::support::ws::{login, user, Client};
use crate::support::{chatd, Server};

fn sha(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes of upload number `i`: every fifth an image (it gets a thumbnail), else 300 KiB.
fn content(i: u32) -> Vec<u8> {
    if i % 5 == 0 {
        png(&image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x + i) as u8, y as u8, i as u8])
        }))
    } else {
        (0..300 * 1024u32)
            .map(|j| {
                (j.wrapping_mul(2_654_435_761)
                    .wrapping_add(i.wrapping_mul(97))
                    >> 13) as u8
            })
            .collect()
    }
}

#[tokio::test]
async fn a_backup_taken_during_uploads_restores_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap().to_string();
    let srv = Arc::new(Server::start(&data, &[]));
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;

    // Alice uploads and sends without pause; every third upload is never sent.
    let sent: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let uploaded: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (sent, uploaded, stop, srv, alice) = (
            sent.clone(),
            uploaded.clone(),
            stop.clone(),
            srv.clone(),
            crate::support::ws::TestUser {
                id: alice.id,
                name: alice.name.clone(),
                cookie: alice.cookie.clone(),
            },
        );
        let bob_id = bob.id;
        tokio::spawn(async move {
            let mut a = Client::connect_synced(&srv, &alice).await;
            let mut conv = 0;
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let body = content(i);
                let f = upload(&srv, &alice, &format!("f{i}"), &body).await;
                let id = f["id"].as_str().unwrap().to_string();
                uploaded.lock().unwrap().insert(id.clone(), sha(&body));
                if i % 3 != 2 {
                    let ack = a
                        .request(
                            json!({"type": "send", "client_id": format!("b{i}"), "to": bob_id,
                            "text": format!("file {i}"), "attachments": [id]}),
                        )
                        .await;
                    assert_eq!(ack["type"], "ack", "{ack}");
                    conv = ack["conversation"].as_u64().unwrap();
                    sent.lock().unwrap().push((id, sha(&body)));
                }
                i += 1;
            }
            conv
        })
    };
    while sent.lock().unwrap().len() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = sent.lock().unwrap().clone();
    let out = tmp.path().join("backup.redb");
    let out_s = out.to_str().unwrap().to_string();
    let o = {
        let (d, f) = (data_s.clone(), out_s.clone());
        tokio::task::spawn_blocking(move || chatd(&["backup", "--data-dir", &d, "--out", &f], None))
            .await
            .unwrap()
    };
    stop.store(true, Ordering::Relaxed);
    let conv = load.await.unwrap();
    // Uploads ran before, around and after the backup (on a fast disk the backup may finish
    // before another upload is placed, so "during" cannot be asserted exactly).
    let during = sent.lock().unwrap().len();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("the running server"), "{stdout}");
    assert!(stdout.contains("uploaded files"), "{stdout}");
    assert!(
        during > before.len(),
        "uploads went on after the backup started"
    );
    let files_dir = tmp.path().join("backup.redb.files");
    assert!(files_dir.is_dir());
    assert!(!tmp.path().join("backup.redb.files.partial").exists());
    // A new backup may not overwrite the directory either.
    std::fs::remove_file(&out).unwrap();
    assert_clean_failure(
        &chatd(&["backup", "--data-dir", &data_s, "--out", &out_s], None),
        "already exists",
    );
    std::fs::rename(&files_dir, tmp.path().join("first.redb.files")).unwrap();
    let o = chatd(&["backup", "--data-dir", &data_s, "--out", &out_s], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(Arc::try_unwrap(srv).ok().expect("the load task is done"));

    // Restore into a fresh directory.
    let restored = tmp.path().join("restored");
    let restored_s = restored.to_str().unwrap();
    let o = chatd(&["restore", "--data-dir", restored_s, &out_s], None);
    assert!(
        o.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let srv = Server::start(&restored, &[]);
    let alice = login(&srv, "alice", "password-1").await;
    let bob = login(&srv, "bob", "password-1").await;
    let mut c = Client::connect_synced(&srv, &bob).await;
    let msgs = all_messages(&mut c, conv).await;
    assert!(msgs.len() >= before.len());
    // Every attachment of every restored message downloads intact, for the recipient.
    let want: HashMap<String, String> = uploaded.lock().unwrap().clone();
    let mut checked = 0;
    for m in &msgs {
        for a in m["attachments"].as_array().unwrap() {
            let id = a["id"].as_str().unwrap();
            let r = srv
                .get(&format!("/files/{id}"), &[("cookie", &bob.cookie)])
                .await;
            assert_eq!(r.status, 200, "{a}");
            assert_eq!(sha(&r.body), want[id], "{a}");
            if a["mime"] == "image/png" {
                let t = srv
                    .get(&format!("/files/{id}/thumb"), &[("cookie", &bob.cookie)])
                    .await;
                assert_eq!(t.status, 200, "the thumbnail of {a}");
            }
            checked += 1;
        }
    }
    assert!(checked >= before.len(), "{checked}");
    // Every upload is either in the backup, intact, or not at all: never a record without bytes.
    let mut present = 0;
    for (id, want) in &want {
        let r = srv
            .get(&format!("/files/{id}"), &[("cookie", &alice.cookie)])
            .await;
        match r.status {
            200 => {
                assert_eq!(&sha(&r.body), want);
                present += 1;
            }
            404 => {}
            s => panic!("{id}: {s}"),
        }
    }
    assert!(present >= before.len());
    drop(srv);

    // The database without its files: refused, and nothing is changed.
    std::fs::rename(
        tmp.path().join("backup.redb.files"),
        tmp.path().join("elsewhere"),
    )
    .unwrap();
    let fresh = tmp.path().join("fresh");
    assert_clean_failure(
        &chatd(
            &["restore", "--data-dir", fresh.to_str().unwrap(), &out_s],
            None,
        ),
        "backup.redb.files",
    );
    assert!(!fresh.join("chatd.redb").exists());

    // A backup of a stopped server carries the files as well.
    let again = tmp.path().join("again.redb");
    let o = chatd(
        &[
            "backup",
            "--data-dir",
            restored_s,
            "--out",
            again.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no server running"));
    let n = std::fs::read_dir(tmp.path().join("again.redb.files"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert!(n >= present, "{n} files in the second backup");
}
