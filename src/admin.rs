//! The administrator's commands (`chatd user ...`): they open the store directly, so they run
//! while the server is stopped; if the server holds the database they say so and exit non-zero.
//! Passwords are read from a terminal without echo, or from standard input with
//! `--password-stdin`. Calls `store`, `auth` (hashing) and `model` (validation) only.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use crate::auth;
use crate::cli::{TokenCommand, UserCommand};
use crate::model::{self, now_ms, Session, SessionKind};
use crate::store::{AdminGrant, Store, StoreError, DB_FILE};

/// Runs one `chatd user` subcommand against the database in `data_dir`.
pub fn user(cmd: UserCommand, data_dir: &Path) -> Result<(), String> {
    let creating = matches!(cmd, UserCommand::Add { .. });
    if !creating && !data_dir.join(DB_FILE).exists() {
        return Err(format!(
            "no chatd database in {} (use --data-dir or CHATD_DATA_DIR to point at it)",
            data_dir.display()
        ));
    }
    if creating {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    }
    let store = Store::open(data_dir).map_err(|e| open_error(data_dir, e))?;
    match cmd {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            model::validate_user_name(&name).map_err(|m| format!("invalid name: {m}"))?;
            if store.user_by_name(&name).map_err(db)?.is_some() {
                return Err(format!("a user named {name:?} already exists"));
            }
            let password = read_password(password_stdin)?;
            let hash = auth::hash_password(&password).map_err(|e| e.to_string())?;
            let grant = if admin {
                AdminGrant::Yes
            } else {
                AdminGrant::IfFirst
            };
            let user = store
                .create_user(&name, &hash, grant, false, now_ms())
                .map_err(db)?;
            println!(
                "created user {} (id {}{})",
                user.name,
                user.id,
                if user.admin { ", admin" } else { "" }
            );
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let user = find(&store, &name)?;
            let password = read_password(password_stdin)?;
            let hash = auth::hash_password(&password).map_err(|e| e.to_string())?;
            store.set_password(user.id, &hash).map_err(db)?;
            println!(
                "password of {} changed; all of its sessions were signed out",
                user.name
            );
        }
        UserCommand::List => {
            let users = store.list_users().map_err(db)?;
            println!(
                "{:<6} {:<32} {:<6} {:<9} CREATED",
                "ID", "NAME", "ROLE", "STATUS"
            );
            for u in users {
                println!(
                    "{:<6} {:<32} {:<6} {:<9} {}",
                    u.id.0,
                    u.name,
                    if u.admin { "admin" } else { "user" },
                    if u.disabled { "disabled" } else { "active" },
                    format_utc(u.created_ms)
                );
            }
        }
        UserCommand::Disable { name } => {
            let user = find(&store, &name)?;
            store.set_disabled(user.id, true).map_err(db)?;
            println!("disabled {}; its sessions were signed out", user.name);
        }
        UserCommand::Enable { name } => {
            let user = find(&store, &name)?;
            store.set_disabled(user.id, false).map_err(db)?;
            println!("enabled {}", user.name);
        }
    }
    Ok(())
}

/// Runs one `chatd token` subcommand.
pub fn token(cmd: TokenCommand, data_dir: &Path) -> Result<(), String> {
    if !data_dir.join(DB_FILE).exists() {
        return Err(format!(
            "no chatd database in {} (use --data-dir or CHATD_DATA_DIR to point at it)",
            data_dir.display()
        ));
    }
    let store = Store::open(data_dir).map_err(|e| open_error(data_dir, e))?;
    match cmd {
        TokenCommand::Create { name, label } => {
            let user = find(&store, &name)?;
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
            println!("{token}");
            eprintln!(
                "token for {} created; send it as 'Authorization: Bearer <token>'. It is shown only once.",
                user.name
            );
        }
    }
    Ok(())
}

/// The message for a store that would not open, naming the directory.
pub fn open_error(data_dir: &Path, e: StoreError) -> String {
    match e {
        StoreError::Locked(_) => e.to_string(),
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
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00");
        assert_eq!(super::format_utc(1_795_000_000_000), "2026-11-18 11:06");
        assert_eq!(super::format_utc(951_782_400_000), "2000-02-29 00:00");
    }
}
