//! The logged-in user's own account: profile (display name, avatar colour), password change
//! and signing out other devices (`/api/me...`, documented in README's HTTP API table). A
//! profile change reaches everyone connected as a `user_updated` frame; a password change or
//! "sign out other devices" revokes every other session and token of the user in the store and
//! closes their WebSockets (1008) through the hub, while the browser that asked stays logged
//! in. Store access goes through `App::db`, password checks through `Auth`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::{Request, StatusCode};
use serde::{Deserialize, Deserializer};

use super::api::{
    bad_request, new_cookie_session, read_json, request_token, throttled, unauthorized, user_reply,
    with_cookie, with_device_cookie,
};
use super::reply::{self, Resp};
use super::Client;
use crate::app::App;
use crate::audit::{self, Actor, Target};
use crate::auth::{self, Throttled};
use crate::hub::{encode, Outbound};
use crate::model::{self, now_ms, User};
use crate::proto::{ServerFrame, UserRef};

/// The user of a request and the hash of the login it used.
pub async fn session_of(
    app: &Arc<App>,
    headers: &HeaderMap,
) -> Result<Option<(User, [u8; 32])>, Resp> {
    let Some(hash) = request_token(headers).and_then(auth::token_hash) else {
        return Ok(None);
    };
    let user = app
        .db(move |s| s.session_user(&hash, now_ms()))
        .await
        .map_err(|e| reply::store_error(&e))?;
    Ok(user.map(|u| (u, hash)))
}

/// Absent stays `None`; `null` becomes `Some(None)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct ProfileChange {
    #[serde(default, deserialize_with = "present")]
    display_name: Option<Option<String>>,
    #[serde(default)]
    color: Option<String>,
}

/// `PATCH /api/me {display_name?: string|null, color?: string}` → 200 `{user}`.
pub async fn update_profile(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let user = match session_of(&app, req.headers()).await {
        Ok(Some((u, _))) => u,
        Ok(None) => return unauthorized(),
        Err(r) => return r,
    };
    let change: ProfileChange = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let display_name = match change.display_name {
        None => None,
        Some(None) => Some(None),
        Some(Some(d)) => match model::validate_display_name(&d) {
            Ok(d) => Some(Some(d)),
            Err(msg) => return bad_request("invalid_display_name", msg),
        },
    };
    let color = match change.color.as_deref() {
        None => None,
        Some(c) => match model::color_index(c) {
            Some(i) => Some(i),
            None => {
                return bad_request(
                    "invalid_color",
                    &format!("color must be one of: {}", model::COLORS.join(", ")),
                )
            }
        },
    };
    if let Err(wait) = app.profile_updates.take(&user.id.0) {
        return throttled(Throttled(wait));
    }
    let id = user.id;
    let updated = match app
        .db(move |s| s.update_profile(id, display_name, color))
        .await
    {
        Ok(u) => u,
        Err(e) => return reply::store_error(&e),
    };
    if (&updated.display_name, updated.color) != (&user.display_name, user.color) {
        let frame = encode(&ServerFrame::UserUpdated {
            user: UserRef::of(&updated),
        });
        app.hub.send_to_all(&Outbound::Frame(frame));
    }
    user_reply(StatusCode::OK, &updated)
}

#[derive(Deserialize)]
struct PasswordChange {
    current: String,
    new: String,
}

/// `POST /api/me/password {current, new}` → 204 (and a new session cookie for a browser).
pub async fn change_password(app: Arc<App>, req: Request<Incoming>, client: Client) -> Resp {
    let (user, current_hash) = match session_of(&app, req.headers()).await {
        Ok(Some(s)) => s,
        Ok(None) => return unauthorized(),
        Err(r) => return r,
    };
    // A bot's bearer token stays as it is; a browser's cookie is replaced by a fresh one.
    let by_cookie = !req.headers().contains_key(AUTHORIZATION);
    let body: PasswordChange = match read_json(req, app.config.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.current.len() > model::MAX_PASSWORD_BYTES {
        return bad_request("invalid_password", "password must be at most 1024 bytes");
    }
    if let Err(msg) = model::validate_password(&body.new) {
        return bad_request("invalid_password", msg);
    }
    // SECURITY: guessing the current password from a stolen session counts like failed logins
    // (no device: its cookie is only sent to /api/login).
    if let Err(t) = app.auth.login_allowed(&user.name, client.ip, None) {
        return throttled(t);
    }
    if !app
        .auth
        .verify(Some(user.password_hash.clone()), body.current)
        .await
    {
        app.auth.login_failed(&user.name, client.ip, None);
        return reply::error(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "the current password is wrong",
        );
    }
    let hash = match app.auth.hash(body.new).await {
        Ok(h) => h,
        Err(e) => return reply::internal(&e),
    };
    let id = user.id;
    let new_phc = hash.clone();
    if let Err(e) = app
        .db(move |s| s.change_password(id, &hash, Some(&current_hash)))
        .await
    {
        return reply::store_error(&e);
    }
    let closed = app.hub.revoke_others(user.id, &current_hash);
    audit::record(
        &Actor::web(&user.name, user.id.0),
        "changed their own password (other sessions and tokens signed out)",
        Some(Target {
            name: &user.name,
            id: user.id.0,
        }),
        &format!("{closed} connection(s) closed"),
    );
    let resp = reply::empty(StatusCode::NO_CONTENT);
    if !by_cookie {
        return resp;
    }
    let (token, new_hash, session) = match new_cookie_session(&app, &user) {
        Ok(t) => t,
        Err(e) => return reply::internal(&e),
    };
    if let Err(e) = app
        .db(move |s| s.rotate_session(&current_hash, &new_hash, &session))
        .await
    {
        return reply::store_error(&e);
    }
    let resp = with_cookie(&app, resp, &token, client.https);
    // The old device cookie names the old password; this browser knows the new one.
    with_device_cookie(resp, user.id, &new_phc, client.https)
}

/// `POST /api/me/logout-others` → 204: every other session and token of the user ends.
pub async fn logout_others(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let (user, current) = match session_of(&app, req.headers()).await {
        Ok(Some(s)) => s,
        Ok(None) => return unauthorized(),
        Err(r) => return r,
    };
    let id = user.id;
    let revoked = match app.db(move |s| s.revoke_other_sessions(id, &current)).await {
        Ok(n) => n,
        Err(e) => return reply::store_error(&e),
    };
    let closed = app.hub.revoke_others(user.id, &current);
    audit::record(
        &Actor::web(&user.name, user.id.0),
        "signed out their other devices",
        Some(Target {
            name: &user.name,
            id: user.id.0,
        }),
        &format!("{revoked} session(s) revoked, {closed} connection(s) closed"),
    );
    reply::empty(StatusCode::NO_CONTENT)
}
