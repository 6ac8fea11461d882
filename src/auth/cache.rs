//! The verified-token cache: once a token's signature and claims have passed, later requests
//! with the same token skip the RSA work.
//!
//! - Found by a seeded 64-bit hash of the whole token ([`TokenHasher`]: a folded multiply over
//!   16 bytes at a time, keyed by 128 random bits per cache; SipHash took 3,500 instructions
//!   for a 1.5 KB token, this 746 under callgrind), then the whole token is compared with the one the
//!   entry was made for (Envoy's jwt cache does the same): a collision is a miss, never
//!   another token's identity. The token is held in memory for that, never written anywhere.
//! - A hit is still held to `exp` and `nbf` (with the clock skew) at every request, by the
//!   validator; an entry never lives past its `exp` plus the skew (at most [`MAX_TTL`]), and is
//!   ignored once its signing key is no longer published by the issuer.
//! - Only acceptances are cached; a refused token is validated again every time.
//! - Bounded by entry count (`server.token_cache_entries`): 16 shards, each a map behind its
//!   own lock with a CLOCK ring (second chance) choosing what to evict; an expired entry goes
//!   first. A lookup is one uncontended lock, one map probe and one comparison.
//! - Route rules run on every request whatever the cache says: only authentication is cached.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Principal;
use crate::keys::KeySource;
use crate::metrics::Metrics;

/// No entry outlives this, whatever its `exp` says (Entra tokens live 60-90 minutes).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Shards of a cache large enough to be worth splitting: requests on different cores rarely
/// meet on one lock.
const SHARDS: usize = 16;

/// A verified token.
#[derive(Debug)]
pub struct Entry {
    /// The whole token, compared on every hit.
    pub token: Box<str>,
    pub principal: Arc<Principal>,
    /// The source whose key verified it, to notice the key's withdrawal.
    pub source: Arc<KeySource>,
    /// When the entry stops being used, Unix seconds: `exp` plus the clock skew, at most
    /// [`MAX_TTL`] from its insertion.
    pub until: f64,
}

/// Verified tokens by the seeded hash of the token.
pub struct TokenCache {
    hasher: TokenHasher,
    shards: Box<[Mutex<Shard>]>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens (at least one).
    #[must_use]
    pub fn new(max_entries: u64, metrics: Arc<Metrics>) -> Self {
        let max = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        let shards = if max >= SHARDS * 16 { SHARDS } else { 1 };
        let per_shard = max.div_ceil(shards);
        Self {
            hasher: TokenHasher::random(),
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(per_shard)))
                .collect(),
            metrics,
        }
    }

    /// The hash a token is filed under.
    #[must_use]
    pub fn hash(&self, token: &str) -> u64 {
        self.hasher.hash(token.as_bytes())
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The map inside uses the low bits; the shard is chosen by the high ones.
        let i = usize::try_from(hash >> 58).unwrap_or(0) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The principal of `token` (filed under `hash`) when it is cached, `now` (Unix seconds)
    /// is before the entry's end, its key is still published and `valid` holds for it (the
    /// validator's `exp` and `nbf` checks).
    pub fn get(
        &self,
        token: &str,
        hash: u64,
        now: f64,
        valid: impl FnOnce(&Principal) -> bool,
    ) -> Option<Arc<Principal>> {
        let found = self.shard(hash).get(hash, token, now);
        let hit = found.filter(|e| {
            // The key may have been withdrawn since (rotation after a compromise).
            e.source.has_key(&e.principal.kid) && valid(&e.principal)
        });
        self.metrics.record_token_cache(hit.is_some());
        hit.map(|e| Arc::clone(&e.principal))
    }

    /// Files `entry` under `hash`, evicting an expired or not recently used entry when the
    /// shard is full. `now` is Unix seconds.
    pub fn insert(&self, hash: u64, mut entry: Entry, now: f64) {
        entry.until = entry.until.min(now + MAX_TTL.as_secs_f64());
        if entry.until <= now {
            return;
        }
        self.shard(hash).insert(hash, Arc::new(entry), now);
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).index.len() as u64)
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cache's hash of a token: 128 secret random bits, then each 16 bytes of the token mixed
/// in by a 64x64->128-bit multiply folded to 64 bits (the construction of foldhash and
/// wyhash). The seed keeps the values unpredictable from outside, so a client cannot choose
/// tokens that meet under one hash; and a meeting is only ever a miss (the full token is
/// compared), never a wrong identity.
#[derive(Clone, Copy)]
pub struct TokenHasher {
    seed: [u64; 2],
}

impl TokenHasher {
    /// A hasher with a fresh random seed (std's per-process random keys, stepped per call).
    #[must_use]
    pub fn random() -> Self {
        let state = std::hash::RandomState::new();
        Self {
            seed: [state.hash_one(0x5eed_u64), state.hash_one(0x5eed_u64 + 1)],
        }
    }

    /// The 64-bit hash of `bytes`.
    #[must_use]
    pub fn hash(&self, bytes: &[u8]) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let [mut s0, mut s1] = self.seed;
        let mut chunks = bytes.chunks_exact(16);
        for chunk in &mut chunks {
            let (x, y) = halves(chunk);
            let t = fold(s0 ^ x, s1 ^ y ^ K);
            s0 = s1;
            s1 = t;
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        let (x, y) = halves(&last);
        fold(fold(s0 ^ x, s1 ^ y ^ K), self.seed[0] ^ bytes.len() as u64)
    }
}

/// The two little-endian words of a 16-byte chunk.
fn halves(chunk: &[u8]) -> (u64, u64) {
    let mut x = [0u8; 8];
    let mut y = [0u8; 8];
    x.copy_from_slice(&chunk[..8]);
    y.copy_from_slice(&chunk[8..16]);
    (u64::from_le_bytes(x), u64::from_le_bytes(y))
}

/// The full 128-bit product of `a` and `b`, its halves xored.
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    #[expect(clippy::cast_possible_truncation, reason = "the halves of the product")]
    let (lo, hi) = (p as u64, (p >> 64) as u64);
    lo ^ hi
}

/// The key is already a seeded hash: the shard's map uses it as it is.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; anything else folds in byte by byte.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Slot {
    hash: u64,
    entry: Arc<Entry>,
    /// Set on every hit; the CLOCK hand clears it once before evicting.
    used: AtomicBool,
}

/// One shard: slots in a ring for the CLOCK hand, and their index by hash.
struct Shard {
    slots: Vec<Slot>,
    index: HashMap<u64, usize, BuildHasherDefault<Prehashed>>,
    capacity: usize,
    hand: usize,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            index: HashMap::default(),
            capacity,
            hand: 0,
        }
    }

    fn get(&self, hash: u64, token: &str, now: f64) -> Option<Arc<Entry>> {
        let slot = &self.slots[*self.index.get(&hash)?];
        if now >= slot.entry.until || *slot.entry.token != *token {
            return None;
        }
        slot.used.store(true, Ordering::Relaxed);
        Some(Arc::clone(&slot.entry))
    }

    fn insert(&mut self, hash: u64, entry: Arc<Entry>, now: f64) {
        let slot = Slot {
            hash,
            entry,
            used: AtomicBool::new(false),
        };
        if let Some(&i) = self.index.get(&hash) {
            // The same token again (two requests verified it at once), or another token with
            // the same hash: the newer one takes the place.
            self.slots[i] = slot;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(hash, self.slots.len());
            self.slots.push(slot);
            return;
        }
        let victim = self.victim(now);
        self.index.remove(&self.slots[victim].hash);
        self.index.insert(hash, victim);
        self.slots[victim] = slot;
    }

    /// The slot to reuse: the first one under the hand that has expired or was not used
    /// since the hand last passed. Two turns at most.
    fn victim(&mut self, now: f64) -> usize {
        let n = self.slots.len();
        for _ in 0..2 * n {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let slot = &self.slots[i];
            if now >= slot.entry.until || !slot.used.swap(false, Ordering::Relaxed) {
                return i;
            }
        }
        self.hand
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;

    fn source() -> Arc<KeySource> {
        crate::keys::KeySource::with_keys_for_tests(&["k1"])
    }

    fn entry(token: &str, source: &Arc<KeySource>, until: f64) -> Entry {
        Entry {
            token: token.into(),
            principal: Arc::new(Principal {
                claims: Claims {
                    oid: Some(format!("oid of {token}")),
                    ..Claims::default()
                },
                version: None,
                kid: "k1".into(),
                payload: None,
                headers: std::sync::OnceLock::new(),
            }),
            source: Arc::clone(source),
            until,
        }
    }

    /// A lookup with the time checks left to the entry's end.
    fn get(cache: &TokenCache, token: &str, hash: u64, now: f64) -> Option<Arc<Principal>> {
        cache.get(token, hash, now, |_| true)
    }

    fn oid(p: &Principal) -> &str {
        p.claims.oid.as_deref().unwrap_or_default()
    }

    #[test]
    fn a_hit_needs_the_same_token_not_only_the_same_hash() {
        let cache = TokenCache::new(100, Arc::new(Metrics::new()));
        let src = source();
        let h = cache.hash("token-a");
        cache.insert(h, entry("token-a", &src, 2000.0), 1000.0);
        let hit = get(&cache, "token-a", h, 1000.0).expect("cached");
        assert_eq!(oid(&hit), "oid of token-a");
        // Another token presented under token-a's hash (a collision): not token-a's identity.
        assert!(get(&cache, "token-b", h, 1000.0).is_none());
        assert!(get(&cache, "token-a", h ^ 1, 1000.0).is_none());
        // A colliding token's own entry replaces the older one; the older is then a miss.
        cache.insert(h, entry("token-b", &src, 2000.0), 1000.0);
        assert!(get(&cache, "token-a", h, 1000.0).is_none());
        assert_eq!(
            oid(&get(&cache, "token-b", h, 1000.0).expect("b")),
            "oid of token-b"
        );
    }

    /// Every byte and the length count: tokens that differ anywhere, or only by trailing
    /// zero bytes, file apart (a token is compared whole anyway; this keeps the map spread).
    #[test]
    fn the_hash_depends_on_every_byte_and_the_length() {
        let h = TokenHasher::random();
        let base: Vec<u8> = (0..100u8).collect();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(h.hash(&base)));
        for i in 0..base.len() {
            let mut changed = base.clone();
            changed[i] ^= 1;
            assert!(seen.insert(h.hash(&changed)), "byte {i} changes the hash");
        }
        for n in 0..40 {
            assert!(seen.insert(h.hash(&vec![0u8; n])), "{n} zero bytes");
        }
        assert_ne!(h.hash(b"a"), h.hash(b"a\0"));
    }

    #[test]
    fn seeds_differ_between_caches() {
        let metrics = Arc::new(Metrics::new());
        let a = TokenCache::new(10, Arc::clone(&metrics));
        let b = TokenCache::new(10, metrics);
        assert_eq!(a.hash("t"), a.hash("t"));
        assert_ne!(
            (a.hash("t"), a.hash("u")),
            (b.hash("t"), b.hash("u")),
            "each cache has its own random key"
        );
    }

    #[test]
    fn an_entry_ends_at_its_time_and_at_most_after_max_ttl() {
        let cache = TokenCache::new(100, Arc::new(Metrics::new()));
        let src = source();
        let h = cache.hash("t");
        cache.insert(h, entry("t", &src, 1100.0), 1000.0);
        assert!(get(&cache, "t", h, 1099.0).is_some());
        assert!(get(&cache, "t", h, 1100.0).is_none());
        // Already over: not kept at all.
        let hu = cache.hash("u");
        cache.insert(hu, entry("u", &src, 900.0), 1000.0);
        assert!(get(&cache, "u", hu, 950.0).is_none());
        assert_eq!(cache.len(), 1);
        let far = 1000.0 + 10.0 * MAX_TTL.as_secs_f64();
        cache.insert(h, entry("t", &src, far), 1000.0);
        assert_eq!(cache.len(), 1, "the entry for t is replaced in place");
        let ttl = MAX_TTL.as_secs_f64();
        assert!(get(&cache, "t", h, 1000.0 + ttl - 1.0).is_some());
        assert!(get(&cache, "t", h, 1000.0 + ttl).is_none());
    }

    #[test]
    fn the_validators_checks_decide_a_hit() {
        let cache = TokenCache::new(100, Arc::new(Metrics::new()));
        let h = cache.hash("t");
        cache.insert(h, entry("t", &source(), 2000.0), 1000.0);
        assert!(cache.get("t", h, 1000.0, |_| false).is_none());
        assert!(
            cache
                .get("t", h, 1000.0, |p| oid(p) == "oid of t")
                .is_some()
        );
    }

    #[test]
    fn a_withdrawn_key_ends_the_entries_it_verified() {
        let cache = TokenCache::new(100, Arc::new(Metrics::new()));
        let other = crate::keys::KeySource::with_keys_for_tests(&["k2"]);
        let h = cache.hash("t");
        cache.insert(h, entry("t", &other, 2000.0), 1000.0);
        assert!(
            get(&cache, "t", h, 1000.0).is_none(),
            "k1 is not published by it"
        );
    }

    #[test]
    fn the_bound_holds_and_recently_used_entries_stay() {
        let cache = TokenCache::new(8, Arc::new(Metrics::new()));
        let src = source();
        let tokens: Vec<String> = (0..8).map(|i| format!("token-{i}")).collect();
        for t in &tokens {
            cache.insert(cache.hash(t), entry(t, &src, 2000.0), 1000.0);
        }
        assert_eq!(cache.len(), 8);
        // token-0 is used; the next insert evicts an unused one instead.
        assert!(get(&cache, &tokens[0], cache.hash(&tokens[0]), 1000.0).is_some());
        cache.insert(cache.hash("new"), entry("new", &src, 2000.0), 1000.0);
        assert_eq!(cache.len(), 8);
        assert!(get(&cache, &tokens[0], cache.hash(&tokens[0]), 1000.0).is_some());
        assert!(get(&cache, "new", cache.hash("new"), 1000.0).is_some());
        let kept = tokens
            .iter()
            .filter(|t| get(&cache, t, cache.hash(t), 1000.0).is_some())
            .count();
        assert_eq!(kept, 7);
        // Many more: still bounded, whatever the shard count.
        let big = TokenCache::new(1000, Arc::new(Metrics::new()));
        for i in 0..5000 {
            let t = format!("t{i}");
            big.insert(big.hash(&t), entry(&t, &src, 2000.0), 1000.0);
        }
        assert!(big.len() <= 1000 + SHARDS as u64, "{}", big.len());
        assert!(big.len() >= 900, "{}", big.len());
    }

    #[test]
    fn an_expired_entry_is_evicted_first() {
        let cache = TokenCache::new(2, Arc::new(Metrics::new()));
        let src = source();
        cache.insert(cache.hash("short"), entry("short", &src, 1010.0), 1000.0);
        cache.insert(cache.hash("long"), entry("long", &src, 2000.0), 1000.0);
        assert!(get(&cache, "long", cache.hash("long"), 1000.0).is_some());
        assert!(get(&cache, "short", cache.hash("short"), 1000.0).is_some());
        // Both used; at 1020 "short" has expired and goes, "long" stays.
        cache.insert(cache.hash("new"), entry("new", &src, 2000.0), 1020.0);
        assert!(get(&cache, "long", cache.hash("long"), 1020.0).is_some());
        assert!(get(&cache, "new", cache.hash("new"), 1020.0).is_some());
    }
}
