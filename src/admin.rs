//! The administrator's commands (`chatd user ...`, `token`, `backup`, `restore`). Each is
//! prepared here (passwords read from a terminal without echo, or from standard input with
//! `--password-stdin`, and hashed) into an `AdminOp`, then applied to the database directly when
//! no server runs, or sent through the control socket (`control`) to the running server, which
//! applies the same `apply` to its open store and closes the connections of a user it signed
//! out. `restore` needs the server stopped. Calls `store`, `auth` (hashing), `model`
//! (validation) and `control` (the client side).

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use crate::audit::{self, Actor, Target};
use crate::auth;
use crate::cli::{TokenCommand, UserCommand};
use crate::control::{self, Remote};
use crate::model::{self, now_ms, Invite, Session, SessionKind, User, UserId};
use crate::store::accounts::Admission;
use crate::store::backup::inspect;
use crate::store::{self, Store, StoreError, DB_FILE};
use serde::{Deserialize, Serialize};

/// An admin operation with everything the person at the terminal had to supply already read
/// (passwords hashed), so it can run on the database directly or inside the running server,
/// sent over the control socket.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminOp {
    UserAdd {
        name: String,
        admin: bool,
        password_hash: String,
    },
    UserPasswd {
        name: String,
        password_hash: String,
    },
    UserList,
    UserDisable {
        name: String,
    },
    UserEnable {
        name: String,
    },
    TokenCreate {
        name: String,
        label: String,
    },
}

/// What an `AdminOp` did: text for standard output and standard error, and the user whose
/// sessions were revoked (a running server also closes that user's open connections).
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub revoked: Option<u64>,
}

/// Runs one `chatd user` subcommand against the database in `data_dir`.
pub fn user(cmd: UserCommand, data_dir: &Path) -> Result<(), String> {
    let creating = matches!(cmd, UserCommand::Add { .. });
    if creating {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    } else {
        need_database(data_dir)?;
    }
    let op = match cmd {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            model::validate_user_name(&name).map_err(|m| format!("invalid name: {m}"))?;
            let password = read_password(password_stdin)?;
            AdminOp::UserAdd {
                name,
                admin,
                password_hash: auth::hash_password(&password).map_err(|e| e.to_string())?,
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            AdminOp::UserPasswd {
                name,
                password_hash: auth::hash_password(&password).map_err(|e| e.to_string())?,
            }
        }
        UserCommand::List => AdminOp::UserList,
        UserCommand::Disable { name } => AdminOp::UserDisable { name },
        UserCommand::Enable { name } => AdminOp::UserEnable { name },
    };
    run(op, data_dir)
}

/// Runs one `chatd token` subcommand.
pub fn token(cmd: TokenCommand, data_dir: &Path) -> Result<(), String> {
    need_database(data_dir)?;
    match cmd {
        TokenCommand::Create { name, label } => run(AdminOp::TokenCreate { name, label }, data_dir),
    }
}

fn need_database(data_dir: &Path) -> Result<(), String> {
    if data_dir.join(DB_FILE).exists() {
        return Ok(());
    }
    Err(format!(
        "no chatd database in {} (use --data-dir or CHATD_DATA_DIR to point at it)",
        data_dir.display()
    ))
}

/// Applies `op` to the database directly, or, when a server holds it, inside that server.
fn run(op: AdminOp, data_dir: &Path) -> Result<(), String> {
    let outcome = match Store::open(data_dir) {
        Ok(store) => apply(&store, op, &Actor::this_process())?,
        Err(StoreError::Locked(p)) => match control::request_admin(data_dir, &op)? {
            Some(outcome) => outcome,
            None => return Err(StoreError::Locked(p).to_string()),
        },
        Err(e) => return Err(open_error(data_dir, e)),
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    Ok(())
}

/// Carries out one admin operation on an open store, on behalf of `actor` (audit-logged).
/// Blocking.
pub fn apply(store: &Store, op: AdminOp, actor: &Actor) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    match op {
        AdminOp::UserAdd {
            name,
            admin,
            password_hash,
        } => {
            model::validate_user_name(&name).map_err(|m| format!("invalid name: {m}"))?;
            let user = create_account(store, actor, &name, &password_hash, admin).map_err(
                |e| match e {
                    StoreError::NameTaken => format!("a user named {name:?} already exists"),
                    StoreError::NameConfusable(other) => format!(
                        "{name:?} looks like the existing name {other:?} (the same letters in another script, or look-alike characters); choose another name"
                    ),
                    e => db(e),
                },
            )?;
            out.stdout = format!(
                "created user {} (id {}{})\n",
                user.name,
                user.id,
                if user.admin { ", admin" } else { "" }
            );
        }
        AdminOp::UserPasswd {
            name,
            password_hash,
        } => {
            let user = find(store, &name)?;
            reset_password(store, actor, user.id, &password_hash).map_err(db)?;
            out.revoked = Some(user.id.0);
            out.stdout = format!(
                "password of {} changed; all of its sessions were signed out\n",
                user.name
            );
        }
        AdminOp::UserList => {
            let users = store.list_users().map_err(db)?;
            out.stdout = format!(
                "{:<6} {:<32} {:<6} {:<9} CREATED\n",
                "ID", "NAME", "ROLE", "STATUS"
            );
            for u in users {
                out.stdout.push_str(&format!(
                    "{:<6} {:<32} {:<6} {:<9} {}\n",
                    u.id.0,
                    u.name,
                    if u.admin { "admin" } else { "user" },
                    if u.disabled { "disabled" } else { "active" },
                    format_utc(u.created_ms)
                ));
            }
        }
        AdminOp::UserDisable { name } => {
            let user = find(store, &name)?;
            set_disabled(store, actor, user.id, true).map_err(db)?;
            out.revoked = Some(user.id.0);
            out.stdout = format!("disabled {}; its sessions were signed out\n", user.name);
        }
        AdminOp::UserEnable { name } => {
            let user = find(store, &name)?;
            set_disabled(store, actor, user.id, false).map_err(db)?;
            out.stdout = format!("enabled {}\n", user.name);
        }
        AdminOp::TokenCreate { name, label } => {
            let user = find(store, &name)?;
            if user.disabled {
                return Err(format!("{} is disabled", user.name));
            }
            let (token, hash) = auth::new_token().map_err(|e| e.to_string())?;
            let session = Session {
                user: user.id,
                kind: SessionKind::Token,
                created_ms: now_ms(),
                expires_ms: 0,
                label,
            };
            store.create_session(&hash, &session).map_err(db)?;
            let detail = if session.label.is_empty() {
                String::new()
            } else {
                format!("label {:?}", session.label)
            };
            audit::record(
                actor,
                "created a bearer token",
                Some(target(&user)),
                &detail,
            );
            out.stdout = format!("{token}\n");
            out.stderr = format!(
                "token for {} created; send it as 'Authorization: Bearer <token>'. It is shown only once.\n",
                user.name
            );
        }
    }
    Ok(out)
}

// ---- account operations shared by the shell and the web admin API (`http::admin_api`) -------
// Each is blocking, changes the store, and writes one audit line naming the actor and the
// account acted on. A caller that revokes sessions also closes the user's open connections
// through the hub (`control` for the shell, `admin_api` for the web).

fn target(u: &User) -> Target<'_> {
    Target {
        name: &u.name,
        id: u.id.0,
    }
}

/// Creates an account (`admin`: with admin rights; the first account always gets them).
pub fn create_account(
    store: &Store,
    actor: &Actor,
    name: &str,
    password_hash: &str,
    admin: bool,
) -> Result<User, StoreError> {
    let user = store.add_user(name, password_hash, Admission::ByAdmin { admin }, now_ms())?;
    let detail = if user.admin { "with admin rights" } else { "" };
    audit::record(actor, "created the account", Some(target(&user)), detail);
    Ok(user)
}

/// Disables (signing the account out everywhere) or enables an account. From the web it
/// refuses to disable the last enabled admin (`LastAdmin`), so the admin screen cannot lock
/// everyone out; the shell, the way back in, may.
pub fn set_disabled(
    store: &Store,
    actor: &Actor,
    id: UserId,
    disabled: bool,
) -> Result<User, StoreError> {
    let user = if actor.via == audit::Via::Web {
        store.set_disabled_checked(id, disabled)?
    } else {
        store.set_disabled(id, disabled)?;
        store.user(id)?.ok_or(StoreError::NoSuchUser)?
    };
    let action = if disabled {
        "disabled the account (its sessions and tokens are revoked)"
    } else {
        "enabled the account"
    };
    audit::record(actor, action, Some(target(&user)), "");
    Ok(user)
}

/// Sets a new password hash and revokes every session and token of the account.
pub fn reset_password(
    store: &Store,
    actor: &Actor,
    id: UserId,
    password_hash: &str,
) -> Result<User, StoreError> {
    let user = store.change_password(id, password_hash, None)?;
    audit::record(
        actor,
        "set a new password (all sessions and tokens revoked)",
        Some(target(&user)),
        "",
    );
    Ok(user)
}

/// Grants or removes admin rights; refuses to remove the last enabled admin's (`LastAdmin`).
pub fn set_admin(
    store: &Store,
    actor: &Actor,
    id: UserId,
    admin: bool,
) -> Result<User, StoreError> {
    let user = store.set_admin_checked(id, admin)?;
    let action = if admin {
        "granted admin rights"
    } else {
        "revoked admin rights"
    };
    audit::record(actor, action, Some(target(&user)), "");
    Ok(user)
}

/// Stores the registration mode (it wins over `--registration` from now on).
pub fn set_registration(store: &Store, actor: &Actor, open: bool) -> Result<(), StoreError> {
    store.set_registration_open(open)?;
    let action = if open {
        "opened registration to anyone who reaches the server"
    } else {
        "closed registration"
    };
    audit::record(actor, action, None, "");
    Ok(())
}

/// Creates an invite for `uses` registrations, valid for `hours`.
pub fn create_invite(
    store: &Store,
    actor: &Actor,
    created_by: UserId,
    uses: u64,
    hours: u64,
) -> Result<Invite, StoreError> {
    let now = now_ms();
    let invite = Invite {
        code: random_code().map_err(|e| StoreError::Io(std::io::Error::other(e)))?,
        uses_left: uses,
        expires_ms: now + hours * 3_600_000,
        created_by,
        created_ms: now,
    };
    store.create_invite(&invite, now)?;
    audit::record(
        actor,
        "created an invite",
        None,
        &format!(
            "code {}…, {uses} use(s), expires in {hours} h",
            &invite.code[..6]
        ),
    );
    Ok(invite)
}

/// Deletes an invite; false if there was none with that code.
pub fn delete_invite(store: &Store, actor: &Actor, code: &str) -> Result<bool, StoreError> {
    let found = store.delete_invite(code)?;
    if found {
        let shown: String = code.chars().take(6).collect();
        audit::record(actor, "deleted an invite", None, &format!("code {shown}…"));
    }
    Ok(found)
}

/// A random URL-safe code of 128 bits (22 characters of base64url).
pub fn random_code() -> Result<String, String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|_| "the system's random number source failed")?;
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::with_capacity(22);
    for b in raw {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(T[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(T[((bits << (6 - n)) & 63) as usize] as char);
    }
    Ok(out)
}

/// A password to hand over once (after a reset or for a new account): 16 characters from an
/// alphabet without look-alikes (about 79 bits), in groups of four.
pub fn generate_password() -> Result<String, String> {
    const T: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut out = String::with_capacity(19);
    let mut i = 0;
    while i < 16 {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b).map_err(|_| "the system's random number source failed")?;
        // Rejection sampling keeps every character equally likely.
        if usize::from(b[0]) >= 256 - 256 % T.len() {
            continue;
        }
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(T[usize::from(b[0]) % T.len()] as char);
        i += 1;
    }
    Ok(out)
}

/// `chatd backup --out FILE`: a consistent snapshot, from the running server if there is one,
/// else from the database directly. Written to `FILE.partial`, fsync'd, then renamed, so `FILE`
/// only ever appears complete; then checked by opening it read-only. The uploaded files the
/// snapshot names go to `FILE.files/` (`files_backup`), complete before `FILE` appears.
pub fn backup(out: &Path, data_dir: &Path) -> Result<(), String> {
    use crate::files_backup::{copy_out, files_dir_of};
    let files_out = files_dir_of(out);
    for p in [out, files_out.as_path()] {
        if p.exists() {
            return Err(format!(
                "{} already exists; choose a new file name",
                p.display()
            ));
        }
    }
    let Some(name) = out.file_name() else {
        return Err(format!("{} is not a file name", out.display()));
    };
    let mut partial_name = name.to_os_string();
    partial_name.push(".partial");
    let partial = out.with_file_name(partial_name);
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    // While held, the running server removes no uploaded file (see `control`).
    let mut hold = None;
    let mut offline_store = None;
    let source = match control::request_backup_holding(data_dir, &mut file) {
        Ok(Some(conn)) => {
            hold = Some(conn);
            file.sync_all()
                .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
            "the running server"
        }
        Ok(None) => {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            if !data_dir.join(DB_FILE).exists() {
                return Err(format!(
                    "no chatd database in {} (use --data-dir or CHATD_DATA_DIR to point at it)",
                    data_dir.display()
                ));
            }
            let store = Store::open(data_dir).map_err(|e| match e {
                StoreError::Locked(_) => format!(
                    "the database in {} is in use, but no server answered on its control socket {}; is it an older chatd? stop it and try again",
                    data_dir.display(),
                    control::SOCKET_FILE
                ),
                e => open_error(data_dir, e),
            })?;
            store
                .backup_to(&partial)
                .map_err(|e| format!("backup failed: {e}"))?;
            // Kept open (the database locked) until the files are copied.
            offline_store = Some(store);
            "the database (no server running)"
        }
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let summary = match inspect(&partial) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("the backup is not usable, removed it: {e}"));
        }
    };
    let fail = |e: String| {
        let _ = std::fs::remove_file(&partial);
        e
    };
    let hashes = store::files::hashes_in(&partial)
        .map_err(|e| fail(format!("cannot read the backup's file list: {e}")))?;
    let mut files_note = String::new();
    if !hashes.is_empty() {
        let mut name = files_out.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let files_partial = files_out.with_file_name(name);
        let _ = std::fs::remove_dir_all(&files_partial);
        let copied = copy_out(data_dir, &hashes, &files_partial).map_err(fail)?;
        std::fs::rename(&files_partial, &files_out).map_err(|e| {
            let _ = std::fs::remove_dir_all(&files_partial);
            fail(format!("cannot rename {}: {e}", files_partial.display()))
        })?;
        files_note = format!(
            "; {} uploaded files ({:.1} MiB) in {}",
            copied.files,
            copied.bytes as f64 / (1024.0 * 1024.0),
            files_out.display()
        );
    }
    drop(hold);
    drop(offline_store);
    std::fs::rename(&partial, out).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            out.display()
        )
    })?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
    println!(
        "backup of {source} written to {}: {summary}{files_note}",
        out.display()
    );
    Ok(())
}

/// `chatd restore FILE`: replaces the database of a stopped server with a backup.
pub fn restore(file: &Path, data_dir: &Path) -> Result<(), String> {
    if let Ok(Remote::Done) | Err(_) = control::probe(data_dir) {
        return Err(format!(
            "a chatd server is running on {}; stop it first (for example: systemctl stop chatd)",
            data_dir.display()
        ));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    // The uploaded files first (from FILE.files beside it): the restored database never
    // names a file that is not there.
    let files_from = crate::files_backup::files_dir_of(file);
    let hashes = match inspect(file) {
        Ok(_) => store::files::hashes_in(file)
            .map_err(|e| format!("cannot restore {}: {e}", file.display()))?,
        // `restore` below says what is wrong with it.
        Err(_) => Vec::new(),
    };
    let copied = if hashes.is_empty() {
        None
    } else {
        Some(
            crate::files_backup::copy_in(&files_from, data_dir, &hashes)
                .map_err(|e| format!("cannot restore {}: {e}", file.display()))?,
        )
    };
    let r = store::backup::restore(file, data_dir, now_ms()).map_err(|e| match e {
        StoreError::Locked(_) => e.to_string(),
        e => format!("cannot restore {}: {e}", file.display()),
    })?;
    let live = data_dir.join(DB_FILE);
    crate::store::same_owner_as_dir(&live, data_dir);
    println!(
        "restored {} into {}: {}",
        file.display(),
        data_dir.display(),
        r.summary
    );
    if let Some(c) = copied {
        println!(
            "uploaded files: {} named by the backup, {} copied from {} ({:.1} MiB), the others were in place",
            hashes.len(),
            c.files,
            files_from.display(),
            c.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(prev) = r.previous {
        println!(
            "the database it replaced was kept as {}; delete it once you no longer need it",
            prev.display()
        );
    }
    println!("connected clients will start over from the restored history when they reconnect");
    Ok(())
}

/// The message for a store that would not open, naming the directory.
/// `chatd check [--file FILE]`: verifies the data directory (or a database file) and prints
/// what it found; an error (non-zero exit) if anything is damaged.
pub fn check(file: Option<&Path>, data_dir: &Path) -> Result<(), String> {
    use crate::store::check;
    let locked = |_| {
        format!(
            "the database in {} is in use, but no server answered on its control socket; stop it and try again",
            data_dir.display()
        )
    };
    let report = match file {
        Some(f) => check::check_file(f).map_err(|e| match e {
            StoreError::Locked(_) => e.to_string(),
            e => format!("cannot check {}: {e}", f.display()),
        })?,
        None => match control::probe(data_dir) {
            Ok(Remote::Done) => {
                // A running server: check a snapshot of its database (its log is in use).
                let snap = data_dir.join(format!("{DB_FILE}.check-{}", now_ms()));
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&snap)
                    .map_err(|e| format!("cannot create {}: {e}", snap.display()))?;
                let got = control::request_backup(data_dir, &mut out);
                drop(out);
                let r = match got {
                    Ok(Remote::Done) => check::check_file(&snap).map_err(|e| e.to_string()),
                    Ok(Remote::NoServer) => {
                        Err("the server stopped meanwhile; run chatd check again".into())
                    }
                    Err(e) => Err(e),
                };
                let _ = std::fs::remove_file(&snap);
                let mut r = r?;
                r.notes.push(
                    "the server is running: this is a snapshot of its database; its log was not checked (stop the server for a full check)".into(),
                );
                r
            }
            _ => check::check_dir(data_dir).map_err(|e| match e {
                StoreError::Locked(p) => locked(p),
                e => format!("cannot check {}: {e}", data_dir.display()),
            })?,
        },
    };
    for f in &report.facts {
        println!("{f}");
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    if report.damage.is_empty() {
        println!("ok: no damage found");
        return Ok(());
    }
    for d in &report.damage {
        println!("DAMAGE: {d}");
    }
    Err(format!(
        "found {} damaged things (listed above). With the server stopped, `chatd repair` writes a new database from everything readable (the old one is kept), or `chatd restore` a backup; a damaged log: see docs/OPERATIONS.md (--discard-damaged-log)",
        report.damage_count()
    ))
}

/// `chatd repair`: a new database from everything readable in the damaged one.
pub fn repair(data_dir: &Path) -> Result<(), String> {
    if let Ok(Remote::Done) | Err(_) = control::probe(data_dir) {
        return Err(format!(
            "a chatd server is running on {}; stop it first (for example: systemctl stop chatd)",
            data_dir.display()
        ));
    }
    let r = store::repair::repair(data_dir, now_ms()).map_err(|e| match e {
        StoreError::Locked(_) | StoreError::Refused(_) => e.to_string(),
        e => format!("cannot repair the database in {}: {e}", data_dir.display()),
    })?;
    println!(
        "repaired the database in {}: {} users, {} conversations, {} messages ({} of them markers of lost messages)",
        data_dir.display(),
        r.users,
        r.conversations,
        r.messages,
        r.markers
    );
    for l in &r.rebuilt {
        println!("rebuilt: {l}");
    }
    if r.lost.is_empty() {
        println!("lost: nothing");
    }
    for l in &r.lost {
        println!("lost: {l}");
    }
    println!(
        "the damaged database was kept as {}; delete it once you no longer need it",
        r.kept.display()
    );
    Ok(())
}

/// `chatd compact`: the database rewritten densely, the old file kept.
pub fn compact(data_dir: &Path) -> Result<(), String> {
    if let Ok(Remote::Done) | Err(_) = control::probe(data_dir) {
        return Err(format!(
            "a chatd server is running on {}; stop it first (for example: systemctl stop chatd)",
            data_dir.display()
        ));
    }
    need_database(data_dir)?;
    let c = store::compact::compact(data_dir, now_ms()).map_err(|e| open_error(data_dir, e))?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "compacted the database in {}: {} (was {:.1} MiB, {:.1} MiB on disk)",
        data_dir.display(),
        c.summary,
        mib(c.before.0),
        mib(c.before.1)
    );
    println!(
        "the old file was kept as {}; delete it to free the space",
        c.kept.display()
    );
    Ok(())
}

pub fn open_error(data_dir: &Path, e: StoreError) -> String {
    match e {
        StoreError::Locked(_) => e.to_string(),
        StoreError::Corrupt(_) => format!(
            "cannot open the database in {}: {e}. `chatd check` describes the damage; with the server stopped, `chatd repair` saves everything readable (the damaged file is kept), or `chatd restore` a backup",
            data_dir.display()
        ),
        _ => format!("cannot open the database in {}: {e}", data_dir.display()),
    }
}

fn db(e: StoreError) -> String {
    e.to_string()
}

fn find(store: &Store, name: &str) -> Result<model::User, String> {
    store
        .user_by_name(name)
        .map_err(db)?
        .ok_or_else(|| format!("no user named {name:?}"))
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let b = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if a != b {
            return Err("the passwords do not match".into());
        }
        a
    } else {
        return Err(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
                .into(),
        );
    };
    model::validate_password(&pw).map_err(|m| format!("invalid password: {m}"))?;
    Ok(pw)
}

/// "YYYY-MM-DD HH:MM" in UTC, from milliseconds since the epoch.
pub fn format_utc(ms: u64) -> String {
    let (y, m, d, hh, mm, _) = civil_utc(ms);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// "YYYYmmdd-HHMMSS" in UTC (for file names), from milliseconds since the epoch.
pub fn file_stamp_utc(ms: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil_utc(ms);
    format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}")
}

/// (year, month, day, hour, minute, second) in UTC.
pub fn civil_utc(ms: u64) -> (i64, i64, i64, u64, u64, u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    /// The control socket parses `AdminOp` straight from its text (no `flatten`), where
    /// serde_json takes a variant only by its name: `{"op":2}` is not `user_list`.
    #[test]
    fn an_admin_op_is_named_not_numbered() {
        use super::AdminOp;
        assert!(matches!(
            serde_json::from_str::<AdminOp>(r#"{"op":"user_list"}"#),
            Ok(AdminOp::UserList)
        ));
        for i in 0..7 {
            let text =
                format!(r#"{{"op":{i},"name":"x","label":"","admin":true,"password_hash":""}}"#);
            assert!(serde_json::from_str::<AdminOp>(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn codes_and_passwords() {
        let c = super::random_code().unwrap();
        assert_eq!(c.len(), 22);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(c, super::random_code().unwrap());
        let p = super::generate_password().unwrap();
        assert_eq!(p.len(), 19);
        assert_eq!(p.matches('-').count(), 3);
        assert!(crate::model::validate_password(&p).is_ok());
    }

    #[test]
    fn dates() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00");
        assert_eq!(super::format_utc(1_795_000_000_000), "2026-11-18 11:06");
        assert_eq!(super::format_utc(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(super::file_stamp_utc(1_795_000_000_000), "20261118-110640");
    }
}
