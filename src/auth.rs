//! Authentication: argon2id password hashing and checking (off the async workers, with a cap on
//! concurrent hashes), session tokens and their hashes, the session and device cookies' text,
//! and the login/registration rate limits. It calls only `ratelimit` and `model`; looking
//! sessions up is the store's job, reading cookies from requests is `http`'s.
//!
//! Failed logins are limited so that guessing stays hopeless without letting a stranger lock
//! the owner out (README "Login limits"): per (account, address) tightly, per address across
//! accounts, per account only at a rate one address cannot reach; a browser that logged in to
//! the account before carries a device cookie (a MAC keyed by the account's password hash) and
//! is limited on its own instead, so even an attack from many addresses leaves it alone.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::{Blake2b, Blake2bMac, Digest};
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::model::name_key;
use crate::ratelimit::KeyedLimiter;

/// Name of the browser session cookie.
pub const COOKIE_NAME: &str = "chatd_session";

/// Name of the device cookie: "this browser logged in to this account before".
pub const DEVICE_COOKIE: &str = "chatd_device";

/// How long a device cookie is kept by the browser (renewed at every login).
const DEVICE_COOKIE_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

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

fn argon2_params() -> Result<Params, AuthError> {
    Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).map_err(|e| AuthError::Hash(e.to_string()))
}

/// argon2's working memory for one hash: `ARGON2_M_KIB` 1-KiB blocks (19 MiB).
type Area = Vec<Block>;

/// Address space reserved for an area, in blocks: 33 MiB, above the largest mmap threshold of
/// glibc's malloc (32 MiB on 64-bit; it rises toward that as blocks above it are freed). So an
/// area is always its own mmap, and freeing it gives the memory back to the system; a 19-MiB
/// allocation would, after the first one freed, come from an arena that keeps it. Only the
/// `blocks` in use are ever touched, so the rest of the reservation costs no memory.
const AREA_RESERVE_BLOCKS: usize = 33 * 1024;

fn new_area(blocks: usize) -> Area {
    let mut v = Vec::with_capacity(blocks.max(AREA_RESERVE_BLOCKS));
    v.resize(blocks, Block::new());
    v
}

/// Hashes a password into a PHC string, in the working memory `area`. Blocking (~20-50 ms).
fn hash_in(password: &str, area: &mut Area) -> Result<String, AuthError> {
    let params = argon2_params()?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| AuthError::Random)?;
    let mut out = [0u8; 32];
    let blocks = params.block_count();
    if area.len() < blocks {
        *area = new_area(blocks);
    }
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    a.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut area[..blocks])
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    let err = |e: argon2::password_hash::Error| AuthError::Hash(e.to_string());
    let salt = SaltString::encode_b64(&salt).map_err(err)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(err)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(err)?),
    };
    Ok(phc.to_string())
}

/// Checks a password against a PHC string, with the string's own parameters, in `area` (grown
/// if the string asks for more memory than it has: only a hash made with other parameters).
fn verify_in(phc: &str, password: &str, area: &mut Area) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(alg), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if area.len() < blocks {
        tracing::warn!(
            kib = blocks,
            "a password hash needs more memory than chatd's own; checking it in a larger area"
        );
        *area = new_area(blocks);
    }
    let mut out = vec![0u8; expected.len()];
    let a = Argon2::new(alg, version, params);
    if a.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut area[..blocks])
        .is_err()
    {
        return false;
    }
    // Output compares in constant time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

/// Hashes a password into a PHC string. Blocking (~20-50 ms, 19 MiB allocated for the call):
/// for one-off use (the CLI); the server hashes through `Auth::hash`, in its reused areas.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    hash_in(password, &mut Vec::new())
}

/// Checks a password against a PHC string (its own parameters apply). Blocking; see
/// `hash_password`.
pub fn verify_password(phc: &str, password: &str) -> bool {
    verify_in(phc, password, &mut Vec::new())
}

/// How long argon2's working areas are kept after the last hash before they are freed.
const AREA_IDLE: Duration = Duration::from_secs(30);

/// argon2's working memory: at most `concurrent_hashes` areas of 19 MiB, made when first
/// needed and reused by every hash after. They are freed once no hash has run for
/// `AREA_IDLE` (a reaper started with the first hash), so an idle server holds none. A hash
/// made in a fresh allocation each time let the allocator keep every one of them (glibc: the
/// server went from 16 to 458 MB after 200 logins and stayed there).
#[derive(Default)]
struct Areas {
    free: Mutex<Vec<Area>>,
    state: Mutex<AreaState>,
}

#[derive(Default)]
struct AreaState {
    /// Areas taken by hashes now running.
    in_use: usize,
    /// When the last hash ended.
    last: Option<Instant>,
    /// The reaper task runs.
    reaper: bool,
}

impl Areas {
    fn take(self: &Arc<Self>) -> Area {
        self.lock_state().in_use += 1;
        self.ensure_reaper();
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        free.unwrap_or_else(|| new_area(ARGON2_M_KIB as usize))
    }

    fn give_back(&self, area: Area) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(area);
        let mut st = self.lock_state();
        st.in_use -= 1;
        st.last = Some(Instant::now());
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, AreaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the task that frees idle areas, if it is not running (needs a tokio runtime;
    /// without one, as in the CLI, areas live as long as `Auth`).
    fn ensure_reaper(self: &Arc<Self>) {
        let mut st = self.lock_state();
        if st.reaper || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        st.reaper = true;
        let weak: Weak<Areas> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(AREA_IDLE / 3).await;
                let Some(areas) = weak.upgrade() else { return };
                let mut st = areas.lock_state();
                if st.in_use == 0 && st.last.is_none_or(|t| t.elapsed() >= AREA_IDLE) {
                    let freed =
                        std::mem::take(&mut *areas.free.lock().unwrap_or_else(|p| p.into_inner()));
                    st.reaper = false;
                    drop(st);
                    drop(freed);
                    return;
                }
            }
        });
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

/// A browser that logged in to an account before, known by the random id in its device cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Device([u8; 16]);

/// The MAC of a device cookie: keyed by the account's password hash (a secret that never
/// leaves the server, and changes with the password, which retires every device cookie).
fn device_mac(user: u64, id: &[u8; 16], phc: &str) -> Blake2bMac<U32> {
    let key = Blake2b::<U32>::new()
        .chain_update(b"chatd device cookie v1\0")
        .chain_update(phc.as_bytes())
        .finalize();
    let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(&key).expect("a 32-byte key fits");
    mac.update(&user.to_le_bytes());
    mac.update(id);
    mac
}

/// A new device cookie value for `user` (whose password hash is `phc`): `user.id.mac`.
pub fn new_device_cookie(user: u64, phc: &str) -> Result<String, AuthError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|_| AuthError::Random)?;
    let tag = device_mac(user, &id, phc).finalize().into_bytes();
    Ok(format!("{user}.{}.{}", hex(&id), hex(&tag)))
}

/// The device a cookie value names, if it was made by this server for `user` with the
/// password hash `phc` (constant-time check).
pub fn device_of(cookie: &str, user: u64, phc: &str) -> Option<Device> {
    let mut parts = cookie.split('.');
    let (Some(u), Some(id), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if u.parse::<u64>().ok()? != user || u != user.to_string() {
        return None;
    }
    let id: [u8; 16] = unhex(id)?.try_into().ok()?;
    let tag = unhex(tag)?;
    device_mac(user, &id, phc).verify_slice(&tag).ok()?;
    Some(Device(id))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `Set-Cookie` value of a device cookie: sent back only to the login endpoint.
pub fn device_cookie(value: &str, secure: bool) -> String {
    format!(
        "{DEVICE_COOKIE}={value}; Path=/api/login; Max-Age={}; HttpOnly; SameSite=Strict{}",
        DEVICE_COOKIE_AGE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The key an address is limited under: IPv6 by its /64 (one subscriber's network: anyone with
/// one has 2^64 addresses), IPv4 and IPv4-mapped IPv6 as the IPv4 address.
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Shared authentication state of the running server.
pub struct Auth {
    /// Bounds concurrent argon2 runs: each holds 19 MiB and a CPU for tens of milliseconds.
    hashers: Arc<Semaphore>,
    /// Their working memory, one area per permit of `hashers`.
    areas: Arc<Areas>,
    /// A real hash of a random password, checked when the account does not exist, so unknown
    /// names cost the same time as wrong passwords (no user enumeration by timing).
    dummy_hash: String,
    /// Failed logins per (account, address): tight.
    login_account_address: KeyedLimiter<(String, IpAddr)>,
    /// Failed logins per address, whatever the account.
    login_address: KeyedLimiter<IpAddr>,
    /// Failed logins per account from browsers without its device cookie: faster than one
    /// address may try, so a single attacker cannot lock the account.
    login_account: KeyedLimiter<String>,
    /// Failed logins per device cookie (instead of the three above).
    login_device: KeyedLimiter<Device>,
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
        fn limiter<K: std::hash::Hash + Eq + Clone>(
            (n, every): (u32, Duration),
            keys: usize,
        ) -> KeyedLimiter<K> {
            KeyedLimiter::new(n, every, keys)
        }
        let keys = limits.rate_limit_keys;
        Ok(Auth {
            hashers: Arc::new(Semaphore::new(limits.concurrent_hashes.max(1))),
            areas: Arc::default(),
            dummy_hash,
            login_account_address: limiter(limits.login_per_account_address, keys),
            login_address: limiter(limits.login_per_address, keys),
            login_account: limiter(limits.login_per_account, keys),
            login_device: limiter(limits.login_per_device, keys),
            register_address: limiter(limits.register_per_address, keys),
        })
    }

    /// Runs `f` on a blocking thread with one of the working areas, at most
    /// `concurrent_hashes` at a time (later callers wait their turn). The permit and the area
    /// go with the blocking work, so a caller that gives up cannot make room for more.
    async fn with_area<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Area) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self
            .hashers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Cancelled)?;
        let areas = self.areas.clone();
        let mut area = areas.take();
        tokio::task::spawn_blocking(move || {
            let r = f(&mut area);
            areas.give_back(area);
            drop(permit);
            r
        })
        .await
        .map_err(|_| AuthError::Cancelled)
    }

    /// Hashes on a blocking thread in a reused working area (see `Areas`).
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.with_area(move |area| hash_in(&password, area)).await?
    }

    /// Verifies on a blocking thread in a reused working area. `None` (no such account) checks
    /// the dummy hash and returns false, taking the same time as a wrong password.
    pub async fn verify(&self, phc: Option<String>, password: String) -> bool {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = self
            .with_area(move |area| verify_in(&phc, &password, area))
            .await
            .unwrap_or(false);
        ok && known
    }

    /// Refuses a login attempt before the password is checked if its budget of failures is
    /// used up: the device's, for a browser with a valid device cookie for the account;
    /// otherwise the (account, address) pair's, the address's and the account's.
    pub fn login_allowed(
        &self,
        name: &str,
        addr: IpAddr,
        device: Option<Device>,
    ) -> Result<(), Throttled> {
        if let Some(d) = device {
            return self.login_device.check(&d).map_err(Throttled);
        }
        let (account, addr) = (name_key(name), address_key(addr));
        let waits = [
            self.login_account_address.check(&(account.clone(), addr)),
            self.login_address.check(&addr),
            self.login_account.check(&account),
        ];
        match waits.iter().filter_map(|w| w.err()).max() {
            Some(wait) => Err(Throttled(wait)),
            None => Ok(()),
        }
    }

    /// Counts a failed login against the budgets `login_allowed` checked.
    pub fn login_failed(&self, name: &str, addr: IpAddr, device: Option<Device>) {
        if let Some(d) = device {
            let _ = self.login_device.take(&d);
            return;
        }
        let (account, addr) = (name_key(name), address_key(addr));
        let _ = self.login_account_address.take(&(account.clone(), addr));
        let _ = self.login_address.take(&addr);
        let _ = self.login_account.take(&account);
    }

    /// Counts a registration attempt against the address.
    pub fn register_allowed(&self, addr: IpAddr) -> Result<(), Throttled> {
        self.register_address
            .take(&address_key(addr))
            .map_err(Throttled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash made in caller-provided memory is a standard PHC string: the argon2 crate's
    /// own verifier accepts it, and ours accepts the crate's.
    #[test]
    fn hashes_match_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut area = Vec::new();
        let ours = hash_in("correct horse", &mut area).unwrap();
        assert_eq!(area.len(), ARGON2_M_KIB as usize);
        let a = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            argon2_params().unwrap(),
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(a.verify_password(b"correct horse", &parsed).is_ok());
        assert!(a.verify_password(b"correct hors", &parsed).is_err());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = a.hash_password(b"tr0ub4dor", &salt).unwrap().to_string();
        assert!(verify_in(&theirs, "tr0ub4dor", &mut area));
        assert!(!verify_in(&theirs, "tr0ub4dor&3", &mut area));
        // Other parameters (less memory, argon2i): still checked, in the same area.
        let small = Params::new(64, 1, 1, Some(16)).unwrap();
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x10, small)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify_in(&other, "pw", &mut area));
        assert!(!verify_in(&other, "pW", &mut area));
        assert_eq!(area.len(), ARGON2_M_KIB as usize);
    }

    /// Concurrent hashes share `concurrent_hashes` areas: no more are ever made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_hashes_reuse_a_fixed_number_of_areas() {
        let limits = Limits {
            concurrent_hashes: 2,
            ..Limits::default()
        };
        let auth = Arc::new(Auth::new(&limits).unwrap());
        let phc = auth.hash("secret-1".into()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (auth, phc) = (auth.clone(), phc.clone());
            tasks.push(tokio::spawn(async move {
                let pw = if i % 2 == 0 { "secret-1" } else { "secret-2" };
                auth.verify(Some(phc), pw.into()).await == (i % 2 == 0)
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert!(auth.areas.free.lock().unwrap().len() <= 2);
    }

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
    fn device_cookies_are_bound_to_the_account_and_its_password() {
        let phc = hash_password("correct horse").unwrap();
        let c = new_device_cookie(7, &phc).unwrap();
        let d = device_of(&c, 7, &phc).expect("valid");
        assert_ne!(new_device_cookie(7, &phc).unwrap(), c, "random ids");
        assert_eq!(device_of(&c, 7, &phc), Some(d));
        assert_eq!(device_of(&c, 8, &phc), None, "another account");
        let other = hash_password("correct horse").unwrap();
        assert_eq!(device_of(&c, 7, &other), None, "a new password retires it");
        let (head, tag) = c.rsplit_once('.').unwrap();
        let flipped = format!(
            "{head}.{}{}",
            if tag.starts_with('0') { "1" } else { "0" },
            &tag[1..]
        );
        assert_eq!(device_of(&flipped, 7, &phc), None, "a forged tag");
        for bad in [
            "",
            "7",
            "7..",
            "07.",
            "x.y.z",
            &format!("{c}.x"),
            &format!("07{}", &c[1..]),
        ] {
            assert_eq!(device_of(bad, 7, &phc), None, "{bad}");
        }
    }

    #[test]
    fn addresses_are_limited_by_ipv4_or_ipv6_slash_64() {
        let k = |s: &str| address_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    }

    #[test]
    fn a_stranger_cannot_lock_the_owner_out() {
        let auth = Auth::new(&Limits::default()).unwrap();
        let attacker: IpAddr = "192.0.2.66".parse().unwrap();
        let owner: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..5 {
            assert!(auth.login_allowed("Dave", attacker, None).is_ok());
            auth.login_failed("Dave", attacker, None);
        }
        assert!(
            auth.login_allowed("dave", attacker, None).is_err(),
            "the attacker is throttled"
        );
        assert!(
            auth.login_allowed("dave", owner, None).is_ok(),
            "the owner is not"
        );
        // Many addresses drain the account's budget: browsers without the device cookie wait,
        // the owner's known browser does not.
        for i in 0..10u8 {
            let a = IpAddr::from([203, 0, 113, i]);
            for _ in 0..5 {
                auth.login_failed("dave", a, None);
            }
        }
        assert!(auth.login_allowed("dave", owner, None).is_err());
        let known = Device([1; 16]);
        assert!(auth.login_allowed("dave", owner, Some(known)).is_ok());
        // A device has its own budget.
        for _ in 0..10 {
            auth.login_failed("dave", owner, Some(known));
        }
        assert!(auth.login_allowed("dave", owner, Some(known)).is_err());
        assert!(auth
            .login_allowed("dave", owner, Some(Device([2; 16])))
            .is_ok());
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
