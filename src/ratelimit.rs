//! Token buckets: `TokenBucket` for one client (e.g. frames on one connection) and
//! `KeyedLimiter` for many keys (failed logins per account, per address), bounded in memory.
//! Pure bookkeeping: no I/O, no async; the lock is never held across an `.await`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bucket of `capacity` tokens refilling one per `interval`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn full(capacity: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(capacity),
            updated: now,
        }
    }

    fn refill(&mut self, capacity: u32, interval: Duration, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let per_token = interval.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + elapsed / per_token).min(f64::from(capacity));
        self.updated = now;
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(
        &mut self,
        capacity: u32,
        interval: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        self.refill(capacity, interval, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(interval.mul_f64(1.0 - self.tokens))
        }
    }

    /// Whether a token is available, without taking it.
    pub fn peek(
        &mut self,
        capacity: u32,
        interval: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        self.refill(capacity, interval, now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(interval.mul_f64(1.0 - self.tokens))
        }
    }

    fn is_full(&self, capacity: u32) -> bool {
        self.tokens >= f64::from(capacity)
    }
}

/// One `TokenBucket` per key, at most `max_keys` of them. A key with a full bucket is the same
/// as no key, so those are dropped first when the map fills; if it is still full, new keys are
/// refused (fail closed) rather than letting memory grow.
pub struct KeyedLimiter<K> {
    capacity: u32,
    interval: Duration,
    max_keys: usize,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(capacity: u32, interval: Duration, max_keys: usize) -> Self {
        KeyedLimiter {
            capacity,
            interval,
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_bucket<T>(
        &self,
        key: &K,
        f: impl FnOnce(&mut TokenBucket, u32, Duration, Instant) -> Result<T, Duration>,
    ) -> Result<T, Duration> {
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= self.max_keys {
            let (cap, iv) = (self.capacity, self.interval);
            map.retain(|_, b| {
                b.refill(cap, iv, now);
                !b.is_full(cap)
            });
            if map.len() >= self.max_keys {
                return Err(self.interval);
            }
        }
        let bucket = map
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(self.capacity, now));
        f(bucket, self.capacity, self.interval, now)
    }

    /// Takes a token for `key`, or says how long to wait.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.with_bucket(key, |b, c, i, now| b.take(c, i, now))
    }

    /// Whether `key` has a token left, without taking it.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.with_bucket(key, |b, c, i, now| b.peek(c, i, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(10);
        let mut b = TokenBucket::full(2, t0);
        assert!(b.take(2, iv, t0).is_ok());
        assert!(b.take(2, iv, t0).is_ok());
        let wait = b.take(2, iv, t0).unwrap_err();
        assert!(wait <= iv && wait > Duration::from_secs(9));
        assert!(b.take(2, iv, t0 + Duration::from_secs(5)).is_err());
        assert!(b.take(2, iv, t0 + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn keyed_is_bounded() {
        let l = KeyedLimiter::new(1, Duration::from_secs(60), 2);
        assert!(l.take(&1).is_ok());
        assert!(l.take(&1).is_err());
        assert!(l.check(&2).is_ok());
        // Map holds 1 (empty) and 2 (full); 3 evicts the full one.
        assert!(l.take(&3).is_ok());
        // Now 1 and 3 are both empty: a fourth key is refused, not stored.
        assert!(l.take(&4).is_err());
    }
}
