//! The audit trail: one log line per administrative action, from the shell (`chatd user ...`,
//! `chatd token create`) or from the web admin screen (`/api/admin/...`), saying who did what
//! to whom. Lines go to the tracing target `audit` (select them with
//! `--log-level info,audit=info`, or `journalctl -u chatd | grep audit`); with
//! `--log-format json` each is one object with the fields `actor`, `via`, `action`,
//! `target_user`, `target_id` and `detail`. Secrets (passwords, hashes, tokens, invite codes
//! beyond a prefix) never appear.
//!
//! Calls nothing; `admin` and `http::admin_api` call it.

use std::fmt;

/// Where an action came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The admin screen / JSON API, by a logged-in admin.
    Web,
    /// A shell on the server (`chatd user ...`), directly or through the control socket.
    Shell,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Web => "web",
            Via::Shell => "shell",
        })
    }
}

/// Who did it: a chatd account (web) or an operating-system user (shell).
#[derive(Clone, Debug)]
pub struct Actor {
    pub via: Via,
    /// The account name, or the OS user ("root", "root (sudo by alice)", "uid 1000").
    pub name: String,
    /// The account id (web only).
    pub id: Option<u64>,
}

impl Actor {
    pub fn web(name: &str, id: u64) -> Actor {
        Actor {
            via: Via::Web,
            name: name.to_string(),
            id: Some(id),
        }
    }

    /// The OS user `uid` (named from /etc/passwd when possible), optionally acting through sudo
    /// for `sudo_user`.
    pub fn shell(uid: Option<u32>, sudo_user: Option<&str>) -> Actor {
        let mut name = match uid {
            Some(uid) => user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
            None => "unknown".to_string(),
        };
        if let Some(s) = sudo_user.filter(|s| !s.is_empty() && *s != name) {
            name = format!("{name} (sudo by {s})");
        }
        Actor {
            via: Via::Shell,
            name,
            id: None,
        }
    }

    /// The user running this process.
    pub fn this_process() -> Actor {
        let uid = rustix::process::getuid().as_raw();
        Actor::shell(Some(uid), std::env::var("SUDO_USER").ok().as_deref())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.via)
    }
}

/// The name of OS user `uid`, from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// The account an action was done to.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub name: &'a str,
    pub id: u64,
}

/// Logs one action: `actor` did `action` (a short verb phrase, e.g. "disabled the account") to
/// `target`, with `detail` (may be empty).
pub fn record(actor: &Actor, action: &str, target: Option<Target<'_>>, detail: &str) {
    let (target_user, target_id) = target.map_or(("", 0), |t| (t.name, t.id));
    let sentence = match target {
        Some(t) => format!("{actor}: {action}: {} (id {})", t.name, t.id),
        None => format!("{actor}: {action}"),
    };
    let sentence = if detail.is_empty() {
        sentence
    } else {
        format!("{sentence}; {detail}")
    };
    tracing::info!(
        target: "audit",
        actor = %actor.name,
        actor_id = actor.id.unwrap_or(0),
        via = %actor.via,
        action,
        target_user,
        target_id,
        detail,
        "{sentence}"
    );
}
