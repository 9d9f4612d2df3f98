//! The admin JSON API under `/api/admin/` (the web client's admin screen): users (list with
//! last seen, create, disable/enable, reset password, admin flag), invites, the registration
//! mode, server status and a backup download. Admins only: 401 without a login, 403
//! `forbidden` for other users. Every change goes through the account operations in `admin`
//! (the same code as `chatd user ...` at the shell), which write the audit line; a user whose
//! sessions were revoked also has their WebSockets closed through the hub.
//!
//! Store access goes through `App::db` (writes, short, on the store reader threads like the
//! account API's) or the blocking pool (the backup snapshot).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::api::{bad_request, read_json, registration_open, unauthorized};
use super::me_api::session_of;
use super::reply::{self, Resp};
use crate::admin;
use crate::app::App;
use crate::audit::Actor;
use crate::model::{self, now_ms, Invite, User, UserId};
use crate::store::StoreError;

/// The admin making a request, or the 401/403 to answer.
async fn require_admin(app: &Arc<App>, headers: &HeaderMap) -> Result<User, Resp> {
    match session_of(app, headers).await? {
        None => Err(unauthorized()),
        Some((u, _)) if u.admin => Ok(u),
        Some(_) => Err(reply::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins may do that",
        )),
    }
}

fn not_found(what: &str) -> Resp {
    reply::error(StatusCode::NOT_FOUND, "not_found", what)
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allow}"),
    );
    r.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A store failure as a reply: the account-rule refusals as 4xx, the rest as 500.
fn store_error(e: StoreError) -> Resp {
    match e {
        StoreError::NoSuchUser => not_found("no such user"),
        StoreError::LastAdmin => reply::error(
            StatusCode::CONFLICT,
            "last_admin",
            "that would leave the server without an admin; make another account an admin first",
        ),
        StoreError::NameTaken => reply::error(
            StatusCode::CONFLICT,
            "name_taken",
            "that name is already taken",
        ),
        StoreError::NameConfusable(other) => reply::error(
            StatusCode::CONFLICT,
            "name_taken",
            &format!("that name looks like the existing name \"{other}\"; choose another"),
        ),
        e => reply::store_error(&e),
    }
}

/// `/api/admin/...`, except the backup download (`backup`, which streams).
pub async fn route(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let admin = match require_admin(&app, req.headers()).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path
        .trim_start_matches("/api/admin/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let method = req.method().clone();
    let actor = Actor::web(&admin.name, admin.id.0);
    match (&method, parts.as_slice()) {
        (&Method::GET, ["users"]) => list_users(&app).await,
        (&Method::POST, ["users"]) => create_user(&app, req, &actor).await,
        (_, ["users"]) => method_not_allowed("GET, POST"),
        (&Method::POST, ["users", id, action]) => {
            let Some(id) = id.parse::<u64>().ok().map(UserId) else {
                return not_found("no such user");
            };
            match *action {
                "disable" => set_disabled(&app, &actor, id, true).await,
                "enable" => set_disabled(&app, &actor, id, false).await,
                "password" => reset_password(&app, &actor, id).await,
                "admin" => set_admin(&app, req, &actor, id).await,
                _ => not_found("no such API endpoint"),
            }
        }
        (&Method::GET, ["invites"]) => list_invites(&app).await,
        (&Method::POST, ["invites"]) => create_invite(&app, req, &actor, admin.id).await,
        (_, ["invites"]) => method_not_allowed("GET, POST"),
        (&Method::DELETE, ["invites", code]) => delete_invite(&app, &actor, code).await,
        (_, ["invites", _]) => method_not_allowed("DELETE"),
        (&Method::GET, ["settings"]) => settings(&app).await,
        (&Method::PUT, ["settings"]) => put_settings(&app, req, &actor).await,
        (_, ["settings"]) => method_not_allowed("GET, PUT"),
        (&Method::GET, ["status"]) => status(&app).await,
        (_, ["status" | "backup"]) => method_not_allowed("GET"),
        _ => not_found("no such API endpoint"),
    }
}

// ---- users --------------------------------------------------------------------------------

/// A user as the admin screen lists them.
#[derive(Serialize)]
struct AdminUser<'a> {
    id: u64,
    name: &'a str,
    display_name: Option<&'a str>,
    color: &'static str,
    admin: bool,
    disabled: bool,
    /// Milliseconds since the Unix epoch.
    created: u64,
    /// Last time the user had a connection open (now, if online); `null` if never.
    last_seen: Option<u64>,
    online: bool,
}

fn admin_user<'a>(app: &App, u: &'a User, seen: &HashMap<UserId, u64>) -> AdminUser<'a> {
    AdminUser {
        id: u.id.0,
        name: &u.name,
        display_name: u.display_name.as_deref(),
        color: u.color_name(),
        admin: u.admin,
        disabled: u.disabled,
        created: u.created_ms,
        last_seen: seen.get(&u.id).copied(),
        online: app.hub.is_online(u.id),
    }
}

/// Every user's last-seen time (see `lastseen`).
async fn last_seen_of(app: &Arc<App>, users: &[User]) -> Result<HashMap<UserId, u64>, Resp> {
    let stored = app
        .db(|s| s.last_seen())
        .await
        .map_err(|e| reply::store_error(&e))?;
    let hub = &app.hub;
    Ok(app
        .last_seen
        .merged(stored, |u| hub.is_online(u), users.iter().map(|u| u.id)))
}

#[derive(Serialize)]
struct UserReply<'a> {
    user: AdminUser<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

async fn user_reply(
    app: &Arc<App>,
    status: StatusCode,
    user: &User,
    password: Option<String>,
) -> Resp {
    let seen = match last_seen_of(app, std::slice::from_ref(user)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    reply::json(
        status,
        &UserReply {
            user: admin_user(app, user, &seen),
            password,
        },
    )
}

/// `GET /api/admin/users` → `{users: [...]}`, in id order.
async fn list_users(app: &Arc<App>) -> Resp {
    let users = match app.db(|s| s.list_users()).await {
        Ok(u) => u,
        Err(e) => return reply::store_error(&e),
    };
    let seen = match last_seen_of(app, &users).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    #[derive(Serialize)]
    struct List<'a> {
        users: Vec<AdminUser<'a>>,
    }
    reply::json(
        StatusCode::OK,
        &List {
            users: users.iter().map(|u| admin_user(app, u, &seen)).collect(),
        },
    )
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// `POST /api/admin/users {name, password?, admin?}` → 201 `{user, password?}` (the password
/// only when the server made it up: shown once).
async fn create_user(app: &Arc<App>, req: Request<Incoming>, actor: &Actor) -> Resp {
    let body: NewUser = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(msg) = model::validate_user_name(&body.name) {
        return bad_request("invalid_name", msg);
    }
    let (password, generated) = match body.password {
        Some(p) => {
            if let Err(msg) = model::validate_password(&p) {
                return bad_request("invalid_password", msg);
            }
            (p, false)
        }
        None => match admin::generate_password() {
            Ok(p) => (p, true),
            Err(e) => return reply::internal(&e),
        },
    };
    let hash = match app.auth.hash(password.clone()).await {
        Ok(h) => h,
        Err(e) => return reply::internal(&e),
    };
    let (name, admin_flag, actor2) = (body.name, body.admin, actor.clone());
    let created = app
        .db(move |s| admin::create_account(s, &actor2, &name, &hash, admin_flag))
        .await;
    match created {
        Ok(user) => {
            user_reply(
                app,
                StatusCode::CREATED,
                &user,
                generated.then_some(password),
            )
            .await
        }
        Err(e) => store_error(e),
    }
}

async fn set_disabled(app: &Arc<App>, actor: &Actor, id: UserId, disabled: bool) -> Resp {
    let actor2 = actor.clone();
    match app
        .db(move |s| admin::set_disabled(s, &actor2, id, disabled))
        .await
    {
        Ok(user) => {
            if disabled {
                app.hub.revoke_user(id);
            }
            user_reply(app, StatusCode::OK, &user, None).await
        }
        Err(e) => store_error(e),
    }
}

/// `POST /api/admin/users/<id>/password` → `{password}`: a new one-time password, shown once;
/// every session and token of the user ends.
async fn reset_password(app: &Arc<App>, actor: &Actor, id: UserId) -> Resp {
    let password = match admin::generate_password() {
        Ok(p) => p,
        Err(e) => return reply::internal(&e),
    };
    let hash = match app.auth.hash(password.clone()).await {
        Ok(h) => h,
        Err(e) => return reply::internal(&e),
    };
    let actor2 = actor.clone();
    match app
        .db(move |s| admin::reset_password(s, &actor2, id, &hash))
        .await
    {
        Ok(_) => {
            app.hub.revoke_user(id);
            #[derive(Serialize)]
            struct Reply {
                password: String,
            }
            reply::json(StatusCode::OK, &Reply { password })
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct AdminFlag {
    admin: bool,
}

async fn set_admin(app: &Arc<App>, req: Request<Incoming>, actor: &Actor, id: UserId) -> Resp {
    let body: AdminFlag = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let actor2 = actor.clone();
    match app
        .db(move |s| admin::set_admin(s, &actor2, id, body.admin))
        .await
    {
        Ok(user) => user_reply(app, StatusCode::OK, &user, None).await,
        Err(e) => store_error(e),
    }
}

// ---- invites ------------------------------------------------------------------------------

#[derive(Serialize)]
struct InviteView<'a> {
    code: &'a str,
    /// Relative to the server: `/#invite=<code>`.
    url: String,
    uses_left: u64,
    /// Milliseconds since the Unix epoch.
    expires: u64,
    created_by: u64,
    created: u64,
}

fn invite_view(i: &Invite) -> InviteView<'_> {
    InviteView {
        code: &i.code,
        url: format!("/#invite={}", i.code),
        uses_left: i.uses_left,
        expires: i.expires_ms,
        created_by: i.created_by.0,
        created: i.created_ms,
    }
}

async fn list_invites(app: &Arc<App>) -> Resp {
    match app.db(|s| s.invites(now_ms())).await {
        Ok(list) => {
            #[derive(Serialize)]
            struct List<'a> {
                invites: Vec<InviteView<'a>>,
            }
            reply::json(
                StatusCode::OK,
                &List {
                    invites: list.iter().map(invite_view).collect(),
                },
            )
        }
        Err(e) => reply::store_error(&e),
    }
}

#[derive(Deserialize)]
struct NewInvite {
    #[serde(default = "one")]
    uses: u64,
    #[serde(default = "week")]
    expires_hours: u64,
}

fn one() -> u64 {
    1
}

fn week() -> u64 {
    168
}

/// `POST /api/admin/invites {uses?: 1-1000, expires_hours?: 1-720}` → 201 `{invite}`.
async fn create_invite(app: &Arc<App>, req: Request<Incoming>, actor: &Actor, by: UserId) -> Resp {
    let body: NewInvite = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !(1..=1000).contains(&body.uses) {
        return bad_request("invalid_uses", "uses must be 1-1000");
    }
    if !(1..=720).contains(&body.expires_hours) {
        return bad_request("invalid_expiry", "expires_hours must be 1-720 (30 days)");
    }
    let actor2 = actor.clone();
    match app
        .db(move |s| admin::create_invite(s, &actor2, by, body.uses, body.expires_hours))
        .await
    {
        Ok(invite) => {
            #[derive(Serialize)]
            struct Reply<'a> {
                invite: InviteView<'a>,
            }
            reply::json(
                StatusCode::CREATED,
                &Reply {
                    invite: invite_view(&invite),
                },
            )
        }
        Err(e) => reply::store_error(&e),
    }
}

async fn delete_invite(app: &Arc<App>, actor: &Actor, code: &str) -> Resp {
    if code.len() > 64 {
        return not_found("no such invite");
    }
    let (code, actor2) = (code.to_string(), actor.clone());
    match app
        .db(move |s| admin::delete_invite(s, &actor2, &code))
        .await
    {
        Ok(true) => reply::empty(StatusCode::NO_CONTENT),
        Ok(false) => not_found("no such invite"),
        Err(e) => reply::store_error(&e),
    }
}

// ---- settings and status ------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Settings {
    /// "open" or "closed".
    registration: String,
}

fn settings_reply(open: bool) -> Resp {
    reply::json(
        StatusCode::OK,
        &Settings {
            registration: if open { "open" } else { "closed" }.to_string(),
        },
    )
}

async fn settings(app: &Arc<App>) -> Resp {
    match registration_open(app).await {
        Ok(open) => settings_reply(open),
        Err(r) => r,
    }
}

/// `PUT /api/admin/settings {registration}`: stored in the database, it wins over
/// `--registration` from then on.
async fn put_settings(app: &Arc<App>, req: Request<Incoming>, actor: &Actor) -> Resp {
    let body: Settings = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let open = match body.registration.as_str() {
        "open" => true,
        "closed" => false,
        _ => {
            return bad_request(
                "invalid_registration",
                "registration must be open or closed",
            )
        }
    };
    let actor2 = actor.clone();
    match app
        .db(move |s| admin::set_registration(s, &actor2, open))
        .await
    {
        Ok(()) => settings_reply(open),
        Err(e) => reply::store_error(&e),
    }
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_secs: u64,
    /// WebSocket connections open now.
    connections: u64,
    users_online: u64,
    users: u64,
    messages: u64,
    database_bytes: u64,
    /// Free space for chatd on the data directory's file system; `null` if unknown.
    disk_free_bytes: Option<u64>,
    data_dir: String,
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
fn disk_free(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    st.f_bavail.checked_mul(st.f_frsize)
}

async fn status(app: &Arc<App>) -> Resp {
    let counts = app.db(|s| Ok((s.user_count()?, s.message_count()?))).await;
    let (users, messages) = match counts {
        Ok(c) => c,
        Err(e) => return reply::store_error(&e),
    };
    let dir = app.config.data_dir.clone();
    let db_bytes = std::fs::metadata(dir.join(crate::store::DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    reply::json(
        StatusCode::OK,
        &Status {
            version: crate::VERSION,
            uptime_secs: app.started.elapsed().as_secs(),
            connections: app.hub.session_count() as u64,
            users_online: app.hub.users_online() as u64,
            users,
            messages,
            database_bytes: db_bytes,
            disk_free_bytes: disk_free(&dir),
            data_dir: std::fs::canonicalize(&dir)
                .unwrap_or(dir)
                .display()
                .to_string(),
        },
    )
}

// ---- backup download ----------------------------------------------------------------------

/// A response body streamed from a channel (the backup file, read in chunks on the blocking
/// pool), so a large database is never held in memory whole.
pub struct Streamed {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
}

impl Streamed {
    /// A body of the chunks sent into `rx` (file downloads use it too).
    pub fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Streamed {
        Streamed { rx }
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// Chunks read ahead of the client: 4 × 64 KiB per download.
const CHUNK: usize = 64 * 1024;
const CHUNKS_AHEAD: usize = 4;

/// `GET /api/admin/backup` → a consistent snapshot of the database (the same as
/// `chatd backup`), streamed as `chatd-backup-<UTC time>.redb`. `Err` is a JSON reply.
pub async fn backup(app: Arc<App>, headers: &HeaderMap) -> Result<Response<Streamed>, Resp> {
    let admin = require_admin(&app, headers).await?;
    let (store, dir) = (app.store.clone(), app.config.data_dir.clone());
    let started = std::time::Instant::now();
    let (file, len, summary) =
        tokio::task::spawn_blocking(move || crate::control::snapshot(&store, &dir))
            .await
            .unwrap_or_else(|e| Err(format!("backup task failed: {e}")))
            .map_err(|e| reply::internal(&format!("backup failed: {e}")))?;
    crate::audit::record(
        &Actor::web(&admin.name, admin.id.0),
        "downloaded a backup",
        None,
        &format!(
            "{summary}, snapshot in {} ms",
            started.elapsed().as_millis()
        ),
    );
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = file;
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            let chunk = file.read_exact(&mut buf).map(|()| Bytes::from(buf));
            let failed = chunk.is_err();
            // The client went away: stop reading.
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
            left -= CHUNK.min(left as usize) as u64;
        }
    });
    let name = format!("chatd-backup-{}.redb", admin::file_stamp_utc(now_ms()));
    let mut resp = Response::new(Streamed { rx });
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
