//! The JSON account API: register, log in, log out, who-am-I. Request and response bodies are
//! the structs below (the HTTP wire contract, documented in README.md). Reads the session from
//! the cookie or an `Authorization: Bearer` header; every database access goes through
//! `App::db`, every password check through `Auth`.

use super::Client;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, RETRY_AFTER,
    SET_COOKIE,
};
use hyper::{Request, StatusCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::reply::{self, Resp};
use crate::app::App;
use crate::auth::{self, Throttled, COOKIE_NAME};
use crate::cli::Registration as RegistrationMode;
use crate::model::{self, now_ms, Session, SessionKind, User};
use crate::store::accounts::Admission;
use crate::store::StoreError;
use crate::strict_json;

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

/// `POST /api/register`: credentials and, from an invite link, its code.
#[derive(Deserialize)]
struct Registration {
    name: String,
    password: String,
    #[serde(default)]
    invite: Option<String>,
}

/// How a user is shown to themselves (`/api/me`, login, register).
#[derive(Serialize)]
pub struct UserView<'a> {
    pub id: u64,
    pub name: &'a str,
    /// `null` when none is set.
    pub display_name: Option<&'a str>,
    pub color: &'static str,
    pub admin: bool,
}

impl<'a> UserView<'a> {
    pub fn of(user: &'a User) -> Self {
        UserView {
            id: user.id.0,
            name: &user.name,
            display_name: user.display_name.as_deref(),
            color: user.color_name(),
            admin: user.admin,
        }
    }
}

#[derive(Serialize)]
struct UserReply<'a> {
    user: UserView<'a>,
}

pub(super) fn user_reply(status: StatusCode, user: &User) -> Resp {
    reply::json(
        status,
        &UserReply {
            user: UserView::of(user),
        },
    )
}

/// Reads a JSON body: requires `Content-Type: application/json` (which also makes a cross-site
/// form post impossible without a CORS preflight we never grant), enforces the size limit, and
/// turns every failure into a 4xx with a JSON error.
pub(super) async fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
) -> Result<T, Resp> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the request body must be at most {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(_) => {
            return Err(reply::error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "could not read the request body",
            ))
        }
    };
    let bad_json = |e: &dyn std::fmt::Display| {
        reply::error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            &format!("invalid request body: {e}"),
        )
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| bad_json(&e))?;
    // One object, no key twice, bounded depth: serde alone would take `["name", "password"]`
    // for the struct, by position, and let a repeated key through.
    strict_json::scan(text).map_err(|(p, _)| bad_json(&p))?;
    serde_json::from_str(text).map_err(|e| bad_json(&e))
}

/// The session token a request carries: the cookie, or `Authorization: Bearer <token>`.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    cookie(headers, COOKIE_NAME)
}

/// The value of the cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The logged-in user of a request, if any (valid, unexpired session of an enabled account).
pub async fn current_user(app: &Arc<App>, headers: &HeaderMap) -> Result<Option<User>, Resp> {
    let Some(hash) = request_token(headers).and_then(auth::token_hash) else {
        return Ok(None);
    };
    app.db(move |s| s.session_user(&hash, now_ms()))
        .await
        .map_err(|e| reply::store_error(&e))
}

pub(super) fn throttled(t: Throttled) -> Resp {
    let secs = t.0.as_secs().max(1);
    let mut r = reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many attempts; try again in {secs} s"),
    );
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

pub(super) fn bad_request(code: &str, msg: &str) -> Resp {
    reply::error(StatusCode::BAD_REQUEST, code, msg)
}

/// A new browser session for `user`: (token, its hash, the record to store).
pub(super) fn new_cookie_session(
    app: &App,
    user: &User,
) -> Result<(String, [u8; 32], Session), auth::AuthError> {
    let (token, hash) = auth::new_token()?;
    let ttl = app.config.limits.session_ttl;
    let now = now_ms();
    let session = Session {
        user: user.id,
        kind: SessionKind::Cookie,
        created_ms: now,
        expires_ms: now + ttl.as_millis() as u64,
        label: String::new(),
    };
    Ok((token, hash, session))
}

/// Puts the `Set-Cookie` of a new session `token` on `resp`.
pub(super) fn with_cookie(app: &App, mut resp: Resp, token: &str, secure: bool) -> Resp {
    let ttl = app.config.limits.session_ttl;
    match HeaderValue::from_str(&auth::session_cookie(token, ttl, secure)) {
        Ok(v) => {
            resp.headers_mut().insert(SET_COOKIE, v);
            resp
        }
        Err(e) => reply::internal(&e),
    }
}

/// Adds the device cookie: this browser knows `user`'s password (`phc`), so later logins from
/// it are limited on their own (`auth::Device`) and nobody else's failures can lock it out.
pub(super) fn with_device_cookie(
    mut resp: Resp,
    user: crate::model::UserId,
    phc: &str,
    secure: bool,
) -> Resp {
    let device = auth::new_device_cookie(user.0, phc)
        .map(|c| HeaderValue::from_str(&auth::device_cookie(&c, secure)));
    match device {
        Ok(Ok(v)) => {
            resp.headers_mut().append(SET_COOKIE, v);
            resp
        }
        Ok(Err(e)) => reply::internal(&e),
        Err(e) => reply::internal(&e),
    }
}

/// Issues a cookie session for `user` and builds the reply carrying it (and a device cookie).
async fn start_session(app: &Arc<App>, user: &User, status: StatusCode, secure: bool) -> Resp {
    let (token, hash, session) = match new_cookie_session(app, user) {
        Ok(t) => t,
        Err(e) => return reply::internal(&e),
    };
    if let Err(e) = app.db(move |s| s.create_session(&hash, &session)).await {
        return reply::store_error(&e);
    }
    let resp = with_cookie(app, user_reply(status, user), &token, secure);
    with_device_cookie(resp, user.id, &user.password_hash, secure)
}

/// The registration mode in force: the one an admin stored, else `--registration`.
pub(super) async fn registration_open(app: &Arc<App>) -> Result<bool, Resp> {
    let flag = app.config.registration == RegistrationMode::Open;
    app.db(|s| s.registration_setting())
        .await
        .map(|stored| stored.unwrap_or(flag))
        .map_err(|e| reply::store_error(&e))
}

#[derive(Serialize)]
struct ServerInfo {
    version: &'static str,
    /// "open" or "closed".
    registration: &'static str,
    /// No account exists yet: the page offers to create the admin account.
    first_run: bool,
    /// This request came over https (chatd's own TLS, or a proxy's with `--behind-proxy`).
    https: bool,
    /// Longest message text, in characters.
    max_message_chars: usize,
    /// Largest file upload, in bytes (`--max-upload-mb`).
    max_upload_bytes: u64,
    /// Most files one message may carry (`--max-attachments`).
    max_attachments: usize,
}

/// `GET /api/server` (no login needed): what the page must know before anyone logs in.
pub async fn server_info(app: Arc<App>, client: Client) -> Resp {
    let flag = app.config.registration == RegistrationMode::Open;
    let read = app
        .db(|s| Ok((s.registration_setting()?, s.user_count()?)))
        .await;
    match read {
        Ok((stored, users)) => reply::json(
            StatusCode::OK,
            &ServerInfo {
                version: crate::VERSION,
                registration: if stored.unwrap_or(flag) {
                    "open"
                } else {
                    "closed"
                },
                first_run: users == 0,
                https: client.https,
                max_message_chars: app.config.limits.max_message_chars,
                max_upload_bytes: app.config.limits.max_upload_bytes,
                max_attachments: app.config.limits.max_attachments,
            },
        ),
        Err(e) => reply::store_error(&e),
    }
}

/// `POST /api/register {name, password, invite?}` → 201 `{user}` and a session cookie.
pub async fn register(app: Arc<App>, req: Request<Incoming>, client: Client) -> Resp {
    let addr = client.ip;
    let creds: Registration = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(msg) = model::validate_user_name(&creds.name) {
        return bad_request("invalid_name", msg);
    }
    if let Err(msg) = model::validate_password(&creds.password) {
        return bad_request("invalid_password", msg);
    }
    if creds.invite.as_ref().is_some_and(|c| c.len() > 64) {
        return bad_request(
            "invalid_invite",
            "the invite is unknown, used up or expired",
        );
    }
    if let Err(t) = app.auth.register_allowed(addr) {
        return throttled(t);
    }
    let hash = match app.auth.hash(creds.password).await {
        Ok(h) => h,
        Err(e) => return reply::internal(&e),
    };
    let default_open = app.config.registration == RegistrationMode::Open;
    let (name, invite) = (creds.name, creds.invite);
    let created = app
        .db(move |s| {
            let now = now_ms();
            let admission = Admission::Public {
                default_open,
                invite: invite.as_deref().filter(|c| !c.is_empty()),
                now_ms: now,
            };
            s.add_user(&name, &hash, admission, now)
        })
        .await;
    match created {
        Ok(user) => {
            tracing::info!(user = %user.name, id = user.id.0, admin = user.admin, "account registered");
            start_session(&app, &user, StatusCode::CREATED, client.https).await
        }
        Err(StoreError::NameTaken) => reply::error(
            StatusCode::CONFLICT,
            "name_taken",
            "that name is already taken",
        ),
        Err(StoreError::NameConfusable(other)) => reply::error(
            StatusCode::CONFLICT,
            "name_taken",
            &format!("that name looks like the existing name \"{other}\"; choose another"),
        ),
        Err(StoreError::InvalidInvite) => bad_request(
            "invalid_invite",
            "this invite is unknown, used up or expired; ask an admin for a new one",
        ),
        Err(StoreError::RegistrationClosed) => reply::error(
            StatusCode::FORBIDDEN,
            "registration_closed",
            "registration is closed on this server; ask an admin for an account or an invite link",
        ),
        Err(e) => reply::store_error(&e),
    }
}

/// `POST /api/login {name, password}` → 200 `{user}` and a session cookie.
pub async fn login(app: Arc<App>, req: Request<Incoming>, client: Client) -> Resp {
    let addr = client.ip;
    let headers = req.headers().clone();
    let creds: Credentials = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if creds.name.chars().count() > model::MAX_NAME_CHARS {
        return bad_request("invalid_name", "name must be at most 32 characters");
    }
    if creds.password.len() > model::MAX_PASSWORD_BYTES {
        return bad_request("invalid_password", "password must be at most 1024 bytes");
    }
    let name = creds.name.clone();
    let user = match app.db(move |s| s.user_by_name(&name)).await {
        Ok(u) => u,
        Err(e) => return reply::store_error(&e),
    };
    let device = match (&user, cookie(&headers, auth::DEVICE_COOKIE)) {
        (Some(u), Some(c)) => auth::device_of(c, u.id.0, &u.password_hash),
        _ => None,
    };
    if let Err(t) = app.auth.login_allowed(&creds.name, addr, device) {
        return throttled(t);
    }
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    // SECURITY: unknown names and wrong passwords take the same path, time and answer.
    let ok = app.auth.verify(phc, creds.password).await;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            app.auth.login_failed(&creds.name, addr, device);
            tracing::info!(name = %creds.name, %addr, "failed login");
            return reply::error(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong name or password",
            );
        }
    };
    if user.disabled {
        return reply::error(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account has been disabled by an admin",
        );
    }
    start_session(&app, &user, StatusCode::OK, client.https).await
}

/// `POST /api/logout` → 204; ends the session and clears the cookie. Always succeeds.
pub async fn logout(app: Arc<App>, req: Request<Incoming>, client: Client) -> Resp {
    if let Some(hash) = request_token(req.headers()).and_then(auth::token_hash) {
        if let Err(e) = app.db(move |s| s.delete_session(&hash)).await {
            return reply::store_error(&e);
        }
    }
    let mut resp = reply::empty(StatusCode::NO_CONTENT);
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie(client.https)) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    resp
}

/// `GET /api/me` → 200 `{user}` or 401.
pub async fn me(app: Arc<App>, req: Request<Incoming>) -> Resp {
    match current_user(&app, req.headers()).await {
        Ok(Some(user)) => user_reply(StatusCode::OK, &user),
        Ok(None) => unauthorized(),
        Err(r) => r,
    }
}

/// 401 for requests without a valid session.
pub fn unauthorized() -> Resp {
    reply::error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not logged in, or the session has ended",
    )
}
