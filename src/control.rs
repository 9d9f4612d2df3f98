//! The control socket: a Unix socket `chatd.sock` in the data directory through which admin
//! commands reach a running server (today: `chatd backup`). Only someone who can already read the
//! data directory can connect (the socket is mode 0600 and lives beside the database), so it
//! needs no password and is never reachable from the network.
//!
//! The protocol is one request line and one reply line (plus data):
//! - `backup\n` → `ok <bytes>\n` followed by exactly that many bytes of a redb database file (a
//!   consistent snapshot taken in one read transaction while writes continue). Until the client
//!   closes the connection (at most `BACKUP_HOLD`), the server removes no uploaded file
//!   (`files::Blobs::keep`): the client copies the files the snapshot names from `files/`;
//! - `admin <AdminOp as JSON>\n` → `ok <Outcome as JSON>\n` (`chatd user ...` and
//!   `chatd token create` while the server runs; a user signed out also loses open connections).
//!   The object may carry `"by"`, the user who ran sudo; with the peer's uid
//!   (`SO_PEERCRED`) it names the actor in the audit log;
//! - any failure → `error <message>\n`.
//!
//! The server side calls `store` (on the blocking pool), `admin::apply` and `hub` (to close a
//! revoked user's sessions); the client side is plain blocking std I/O for the CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use std::sync::Arc;

use crate::admin::{AdminOp, Outcome};
use crate::hub::Hub;
use crate::model::UserId;
use crate::store::Store;

/// File name of the control socket inside the data directory.
pub const SOCKET_FILE: &str = "chatd.sock";

/// Longest time a backup client may take to copy the files after the snapshot.
const BACKUP_HOLD: Duration = Duration::from_secs(6 * 3600);

/// Longest request line.
const MAX_REQUEST: u64 = 64 * 1024;

/// Binds the control socket, replacing a stale one left by a crash (the caller already holds the
/// database lock, so no other server is using it).
pub fn bind(dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    // Snapshots are unlinked as soon as they are opened; one left over means a server died while
    // taking it.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".backup-") && name.ends_with(".redb") {
                tracing::info!("removing the unfinished backup snapshot {name}");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let path = dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((listener, path))
}

/// Serves control connections until the task is dropped.
pub async fn serve(
    listener: UnixListener,
    store: Store,
    hub: Arc<Hub>,
    dir: PathBuf,
    files: Arc<crate::files::Blobs>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (store, hub, dir, files) = (store.clone(), hub.clone(), dir.clone(), files.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, store, hub, dir, files).await {
                tracing::warn!("control connection failed: {e}");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    store: Store,
    hub: Arc<Hub>,
    dir: PathBuf,
    files: Arc<crate::files::Blobs>,
) -> std::io::Result<()> {
    // Who is asking (the socket is 0600, so the server's own user or root): for the audit log.
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let mut stream = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    let mut limited = (&mut stream).take(MAX_REQUEST);
    let read = limited.read_line(&mut line);
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let mut stream = stream.into_inner();
    let line = line.trim();
    let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
        "backup" => {
            // No uploaded file is removed from before the snapshot until the client has
            // copied the files it names (it closes the connection then).
            let _keep = files.keep.clone().read_owned().await;
            backup(&mut stream, store, dir).await?;
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(BACKUP_HOLD, async {
                while let Ok(n) = stream.read(&mut rest).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            Ok(())
        }
        "admin" => {
            let reply = admin(arg.to_string(), uid, store, hub).await;
            stream.write_all(reply.as_bytes()).await
        }
        other => {
            let msg = format!("error unknown command {other:?} (known: backup, admin)\n");
            stream.write_all(msg.as_bytes()).await
        }
    }
}

async fn admin(request: String, uid: Option<u32>, store: Store, hub: Arc<Hub>) -> String {
    let op: AdminOp = match serde_json::from_str(&request) {
        Ok(op) => op,
        Err(e) => return format!("error malformed admin request: {e}\n"),
    };
    // The client adds `by`: the user who ran sudo, if any (said by someone who could read the
    // database anyway; for the audit log only).
    let by = serde_json::from_str::<serde_json::Value>(&request)
        .ok()
        .and_then(|v| v.get("by").and_then(|b| b.as_str()).map(str::to_string));
    let actor = crate::audit::Actor::shell(uid, by.as_deref());
    let desc = format!("{op:?}");
    let done = tokio::task::spawn_blocking(move || crate::admin::apply(&store, op, &actor))
        .await
        .unwrap_or_else(|e| Err(format!("admin task failed: {e}")));
    match done {
        Ok(outcome) => {
            if let Some(user) = outcome.revoked {
                let closed = hub.revoke_user(UserId(user));
                tracing::info!(user, closed, "signed out by an administrator");
            }
            // PHC strings and tokens stay out of the log: only the operation's kind (the
            // audit line says what was done to whom).
            tracing::debug!(
                "admin command done: {}",
                desc.split([' ', '{']).next().unwrap_or("")
            );
            match serde_json::to_string(&outcome) {
                Ok(json) => format!("ok {json}\n"),
                Err(e) => format!("error {e}\n"),
            }
        }
        Err(msg) => format!("error {}\n", msg.replace('\n', " ")),
    }
}

/// Takes a consistent snapshot of the database into a temporary file in `dir` (one read
/// transaction, while writes go on) and returns it open, already unlinked, with its length and
/// a description. Blocking. Used by `chatd backup` here and by the web admin's download.
pub fn snapshot(
    store: &Store,
    dir: &Path,
) -> Result<(std::fs::File, u64, crate::store::backup::DbSummary), String> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".backup-{}-{n}.redb", std::process::id()));
    let summary = store.backup_to(&tmp).map_err(|e| e.to_string())?;
    // Unlinked at once: the open handle keeps the data until it has been sent, and nothing
    // is left behind if the client or the server goes away.
    let file = std::fs::File::open(&tmp).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&tmp);
    let file = file?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    Ok((file, len, summary))
}

async fn backup(stream: &mut UnixStream, store: Store, dir: PathBuf) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    let made = tokio::task::spawn_blocking(move || snapshot(&store, &dir))
        .await
        .unwrap_or_else(|e| Err(format!("backup task failed: {e}")));
    let (file, len, summary) = match made {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("backup failed: {e}");
            let msg = format!("error {}\n", e.replace('\n', " "));
            return stream.write_all(msg.as_bytes()).await;
        }
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup snapshot taken: {summary}"
    );
    stream.write_all(format!("ok {len}\n").as_bytes()).await?;
    let mut file = tokio::fs::File::from_std(file);
    let sent = tokio::io::copy(&mut (&mut file).take(len), stream).await?;
    stream.flush().await?;
    if sent != len {
        tracing::warn!(sent, len, "backup stream ended early");
    }
    Ok(())
}

/// What the client side found at the socket.
pub enum Remote {
    /// A server answered and the backup was written to the file.
    Done,
    /// No server is listening (no socket, or a stale one).
    NoServer,
}

/// Client side of `admin`: runs `op` in the server running on `dir`. `None` when no server
/// answers there.
pub fn request_admin(dir: &Path, op: &AdminOp) -> Result<Option<Outcome>, String> {
    let Some(mut stream) = connect(dir)? else {
        return Ok(None);
    };
    let io = |e: std::io::Error| format!("the running server did not answer: {e}");
    let mut value = serde_json::to_value(op).map_err(|e| e.to_string())?;
    if let (Some(obj), Ok(by)) = (value.as_object_mut(), std::env::var("SUDO_USER")) {
        obj.insert("by".into(), serde_json::Value::String(by));
    }
    let json = serde_json::to_string(&value).map_err(|e| e.to_string())?;
    stream
        .write_all(format!("admin {json}\n").as_bytes())
        .map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(1024 * 1024)
        .read_line(&mut reply)
        .map_err(io)?;
    match reply.trim_end().split_once(' ') {
        Some(("ok", json)) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| format!("the server sent a malformed reply: {e}")),
        Some(("error", msg)) => Err(msg.to_string()),
        _ => Err(format!("the server sent a malformed reply: {reply:?}")),
    }
}

/// Whether a server answers on the control socket of `dir` (`Done` = yes).
pub fn probe(dir: &Path) -> Result<Remote, String> {
    Ok(match connect(dir)? {
        Some(_) => Remote::Done,
        None => Remote::NoServer,
    })
}

/// Connects to the control socket of `dir`; `None` when no server listens there (no socket, or
/// one left by a server that is gone).
fn connect(dir: &Path) -> Result<Option<std::os::unix::net::UnixStream>, String> {
    let path = dir.join(SOCKET_FILE);
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("cannot connect to {}: {e}", path.display())),
    }
}

/// Client side of `backup`: asks the server running on `dir` for a snapshot and writes it to
/// `out` (which the caller made sure is a new file).
pub fn request_backup(dir: &Path, out: &mut std::fs::File) -> Result<Remote, String> {
    Ok(match request_backup_holding(dir, out)? {
        Some(_) => Remote::Done,
        None => Remote::NoServer,
    })
}

/// Like `request_backup`; the connection returned (`None`: no server) keeps the server from
/// removing uploaded files until it is dropped, so the caller can copy the files the snapshot
/// names.
pub fn request_backup_holding(
    dir: &Path,
    out: &mut std::fs::File,
) -> Result<Option<std::os::unix::net::UnixStream>, String> {
    let Some(mut stream) = connect(dir)? else {
        return Ok(None);
    };
    let io = |e: std::io::Error| format!("backup from the running server failed: {e}");
    stream.write_all(b"backup\n").map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    (&mut reader).take(4096).read_line(&mut head).map_err(io)?;
    let head = head.trim_end();
    let len: u64 = match head.split_once(' ') {
        Some(("ok", n)) => n
            .parse()
            .map_err(|_| format!("the server sent a malformed reply: {head:?}"))?,
        Some(("error", msg)) => return Err(format!("the server could not take a backup: {msg}")),
        _ => return Err(format!("the server sent a malformed reply: {head:?}")),
    };
    let copied = std::io::copy(&mut (&mut reader).take(len), out).map_err(io)?;
    if copied != len {
        return Err(format!(
            "the connection to the server ended after {copied} of {len} bytes"
        ));
    }
    Ok(Some(reader.into_inner()))
}
