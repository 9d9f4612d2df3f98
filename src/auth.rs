//! Authentication: argon2id password hashing and checking (off the async workers, with a cap on
//! concurrent hashes), session tokens and their hashes, the session cookie's text, and the
//! login/registration rate limits. It calls only `ratelimit` and `model`; looking sessions up
//! is the store's job, reading cookies from requests is `http`'s.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::model::name_key;
use crate::ratelimit::KeyedLimiter;

/// Name of the browser session cookie.
pub const COOKIE_NAME: &str = "chatd_session";

/// OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane.
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

#[derive(Debug)]
pub enum AuthError {
    /// The OS random source failed.
    Random,
    /// argon2 refused (should not happen with fixed parameters).
    Hash(String),
    /// The blocking task was cancelled (runtime shutting down).
    Cancelled,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Random => write!(f, "the system's random number source failed"),
            AuthError::Hash(e) => write!(f, "password hashing failed: {e}"),
            AuthError::Cancelled => write!(f, "server is shutting down"),
        }
    }
}

impl std::error::Error for AuthError {}

fn argon2() -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password into a PHC string. Blocking (~20-50 ms, 19 MiB): call from a blocking
/// thread, e.g. through `Auth::hash`.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| AuthError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    let hash = argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks a password against a PHC string (its own parameters apply). Blocking.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match (PasswordHash::new(phc), argon2()) {
        (Ok(parsed), Ok(a)) => a.verify_password(password.as_bytes(), &parsed).is_ok(),
        _ => false,
    }
}

/// A new random session token (64 hex characters) and the hash the store keeps of it.
pub fn new_token() -> Result<(String, [u8; 32]), AuthError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| AuthError::Random)?;
    let token = hex(&raw);
    let hash = hash_token_bytes(token.as_bytes());
    Ok((token, hash))
}

/// The hash a token is stored under, or `None` if it is not shaped like one of ours.
pub fn token_hash(token: &str) -> Option<[u8; 32]> {
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(hash_token_bytes(token.as_bytes()))
}

fn hash_token_bytes(token: &[u8]) -> [u8; 32] {
    let digest = Blake2b::<U32>::digest(token);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The `Set-Cookie` value that logs a browser in.
// SECURITY: HttpOnly keeps the token away from page scripts; SameSite=Strict keeps other sites
// from riding on it (no CSRF through cross-site requests or WebSocket hijacking).
pub fn session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that logs a browser out.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Shared authentication state of the running server.
pub struct Auth {
    /// Bounds concurrent argon2 runs: each holds 19 MiB and a CPU for tens of milliseconds.
    hashers: Arc<Semaphore>,
    /// A real hash of a random password, checked when the account does not exist, so unknown
    /// names cost the same time as wrong passwords (no user enumeration by timing).
    dummy_hash: String,
    login_account: KeyedLimiter<String>,
    login_address: KeyedLimiter<IpAddr>,
    register_address: KeyedLimiter<IpAddr>,
}

/// Why a login or registration attempt was throttled, and for how long.
#[derive(Debug)]
pub struct Throttled(pub Duration);

impl Auth {
    /// Builds the state; computes the dummy hash (blocking, once at startup).
    pub fn new(limits: &Limits) -> Result<Auth, AuthError> {
        let (token, _) = new_token()?;
        let dummy_hash = hash_password(&token)?;
        let (la, lai) = limits.login_per_account;
        let (lp, lpi) = limits.login_per_address;
        let (rp, rpi) = limits.register_per_address;
        Ok(Auth {
            hashers: Arc::new(Semaphore::new(limits.concurrent_hashes.max(1))),
            dummy_hash,
            login_account: KeyedLimiter::new(la, lai, limits.rate_limit_keys),
            login_address: KeyedLimiter::new(lp, lpi, limits.rate_limit_keys),
            register_address: KeyedLimiter::new(rp, rpi, limits.rate_limit_keys),
        })
    }

    /// Hashes on a blocking thread, at most `concurrent_hashes` at a time.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let _permit = self
            .hashers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Cancelled)?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|_| AuthError::Cancelled)?
    }

    /// Verifies on a blocking thread. `None` (no such account) checks the dummy hash and
    /// returns false, taking the same time as a wrong password.
    pub async fn verify(&self, phc: Option<String>, password: String) -> bool {
        let Ok(_permit) = self.hashers.clone().acquire_owned().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &password))
            .await
            .unwrap_or(false);
        ok && known
    }

    /// Refuses a login attempt early if the account or the address has used up its failures.
    pub fn login_allowed(&self, name: &str, addr: IpAddr) -> Result<(), Throttled> {
        self.login_address.check(&addr).map_err(Throttled)?;
        self.login_account.check(&name_key(name)).map_err(Throttled)
    }

    /// Counts a failed login against the account and the address.
    pub fn login_failed(&self, name: &str, addr: IpAddr) {
        let _ = self.login_address.take(&addr);
        let _ = self.login_account.take(&name_key(name));
    }

    /// Counts a registration attempt against the address.
    pub fn register_allowed(&self, addr: IpAddr) -> Result<(), Throttled> {
        self.register_address.take(&addr).map_err(Throttled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct hors"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn tokens() {
        let (t, h) = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(token_hash(&t), Some(h));
        assert_eq!(token_hash("short"), None);
        assert_eq!(token_hash(&"z".repeat(64)), None);
        assert_ne!(new_token().unwrap().0, t);
    }
}
