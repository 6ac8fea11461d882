//! The verified-token cache: once a token's signature and claims have passed, later requests
//! with the same token skip the RSA work.
//!
//! - Keyed by the SHA-256 digest of the whole token, so a collision cannot accept a different
//!   token (finding one would mean breaking SHA-256), and the token itself is not kept.
//! - An entry lives until the token's `exp` (never past it, capped at [`MAX_TTL`]), and is
//!   ignored once its signing key is no longer published by the issuer.
//! - Only acceptances are cached; a refused token is validated again every time.
//! - Bounded by entry count (`server.token_cache_entries`); moka evicts the least useful.
//! - Route rules run on every request whatever the cache says: only authentication is cached.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::Expiry;

use super::Principal;
use crate::keys::KeySource;
use crate::metrics::Metrics;

/// No entry outlives this, whatever its `exp` says (Entra tokens live 60-90 minutes).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// SHA-256 of a token.
pub type Digest = [u8; 32];

/// A verified token.
#[derive(Debug)]
pub struct Entry {
    pub principal: Arc<Principal>,
    /// The source whose key verified it, to notice the key's withdrawal.
    pub source: Arc<KeySource>,
    /// `exp`, Unix seconds.
    pub exp: f64,
}

struct UntilExp;

impl Expiry<Digest, Arc<Entry>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let left = (value.exp - now).max(0.0);
        Some(Duration::from_secs_f64(left.min(MAX_TTL.as_secs_f64())))
    }
}

/// Verified tokens by digest.
pub struct TokenCache {
    entries: moka::sync::Cache<Digest, Arc<Entry>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    #[must_use]
    pub fn new(max_entries: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExp)
                .build(),
            metrics,
        }
    }

    /// The digest a token is cached under.
    #[must_use]
    pub fn digest(token: &str) -> Digest {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The principal of a cached, still valid token, if any.
    #[must_use]
    pub fn get(&self, digest: &Digest) -> Option<Arc<Principal>> {
        let hit = self.entries.get(digest).filter(|e| {
            // The key may have been withdrawn since (rotation after a compromise).
            e.source
                .snapshot()
                .is_some_and(|set| set.keys.contains_key(&e.principal.kid))
        });
        match hit {
            Some(e) => {
                self.metrics.record_token_cache(true);
                Some(Arc::clone(&e.principal))
            }
            None => {
                self.metrics.record_token_cache(false);
                None
            }
        }
    }

    pub fn insert(&self, digest: Digest, entry: Entry) {
        self.entries.insert(digest, Arc::new(entry));
    }

    /// Entries held (approximate: moka counts lazily).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
