//! Verified credentials, remembered for a short while by one instance, so a Client's
//! repeated requests do not pay an Argon2id verification each.
//!
//! An entry is an HMAC-SHA256 tag of (client id, the Client's stored secret hash, the
//! secret presented), under a random key drawn when the instance starts and never
//! stored or logged: the cache holds neither secrets nor anything that tells one without
//! that key. The stored hash is part of the tag, so a Client whose secret changes (a new
//! hash, new salt) or that is deleted (no hash) matches no entry from then on.
//!
//! An entry lives [`CacheLimits::idle`] after its last use, and never longer than
//! [`CacheLimits::max_age`] after the verification that made it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;

/// How long and how many entries the cache keeps.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    /// An entry unused this long is forgotten.
    pub idle: Duration,
    /// An entry is forgotten this long after its verification, however busy.
    pub max_age: Duration,
    /// At most this many entries; when full, expired ones go, then everything.
    pub max_entries: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            idle: Duration::from_secs(60),
            max_age: Duration::from_secs(600),
            max_entries: 10_000,
        }
    }
}

struct Entry {
    verified: Instant,
    used: Instant,
}

/// The verified-credentials cache of one instance.
pub struct VerifiedCache {
    key: hmac::Key,
    limits: CacheLimits,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl VerifiedCache {
    /// An empty cache under a fresh random key.
    pub fn new(limits: CacheLimits) -> Self {
        let key: [u8; 32] = rand::random();
        VerifiedCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, client_id: &str, stored_hash: &str, secret: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length-prefixed, so no two (id, hash, secret) triples share an input.
        for part in [client_id, stored_hash, secret] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// True when `secret` was verified against `stored_hash` for `client_id` recently
    /// (and refreshes the entry's idle time).
    pub fn contains(&self, client_id: &str, stored_hash: &str, secret: &str) -> bool {
        let tag = self.tag(client_id, stored_hash, secret);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(&tag) {
            Some(entry) if self.alive(entry, now) => {
                entry.used = now;
                true
            }
            Some(_) => {
                entries.remove(&tag);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful verification.
    pub fn insert(&self, client_id: &str, stored_hash: &str, secret: &str) {
        let tag = self.tag(client_id, stored_hash, secret);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.limits.max_entries {
            entries.retain(|_, e| self.alive(e, now));
            if entries.len() >= self.limits.max_entries {
                entries.clear();
            }
        }
        entries.insert(
            tag,
            Entry {
                verified: now,
                used: now,
            },
        );
    }

    fn alive(&self, entry: &Entry, now: Instant) -> bool {
        now.duration_since(entry.used) < self.limits.idle
            && now.duration_since(entry.verified) < self.limits.max_age
    }

    /// How many entries the cache holds (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_matches_only_its_client_hash_and_secret() {
        let cache = VerifiedCache::new(CacheLimits::default());
        cache.insert("bulk-client", "$argon2id$v1", "secret");
        assert!(cache.contains("bulk-client", "$argon2id$v1", "secret"));
        assert!(!cache.contains("bulk-client", "$argon2id$v1", "secret!"));
        assert!(!cache.contains("bulk-client", "$argon2id$v2", "secret"));
        assert!(!cache.contains("other", "$argon2id$v1", "secret"));
        // Length prefixes: moving bytes between the parts gives another tag.
        assert!(!cache.contains("bulk-client$", "argon2id$v1", "secret"));
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let cache = VerifiedCache::new(CacheLimits {
            idle: Duration::from_millis(30),
            max_age: Duration::from_secs(60),
            max_entries: 3,
        });
        cache.insert("a", "h", "s");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.contains("a", "h", "s"), "idle entry expired");
        for i in 0..10 {
            cache.insert(&format!("c{i}"), "h", "s");
            assert!(cache.len() <= 3);
        }
        assert!(cache.contains("c9", "h", "s"));
    }
}
