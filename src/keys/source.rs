//! One key source: an issuer's metadata document and the JWKS it names, cached and refreshed.
//!
//! Reads are lock-free (`ArcSwapOption`). Network I/O happens in a spawned task; callers that
//! need its result (an unknown `kid`) await a shared future, never a lock held across the
//! fetch. At most one fetch per source runs at a time, and an unknown `kid` may start one only
//! when `min_refetch` has passed since the last fetch of any cause. A failed fetch leaves the
//! previous set in service until it is `max_stale` old.
//!
//! Keys come from one of two origins ([`Origin`]): OpenID discovery and the JWKS it names
//! (fetched over HTTP), or a JWKS file (`entra.jwks_file`), read again every
//! `entra.jwks_file_reload` through the same refresh loop. A file whose contents did not
//! change since it last loaded only confirms the keys in service (their age restarts); one
//! that became unreadable or invalid keeps them, is logged once per distinct failure and
//! counted as a failed fetch, exactly as a failed download would be.

use crate::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::IssuerTemplate;
use super::fetch::{self, FetchError, Key};
use crate::metrics::KeySourceMetrics;

/// Timing rules of a key source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Background refresh interval.
    pub refresh: Duration,
    /// Least time between two fetches when an unknown `kid` asks for one.
    pub min_refetch: Duration,
    /// Keys older than this (fetching having failed all along) are no longer used.
    pub max_stale: Duration,
}

/// The keys of one source at one moment.
#[derive(Debug)]
pub struct KeySet {
    pub issuer: IssuerTemplate,
    pub keys: std::collections::HashMap<String, Arc<Key>>,
    pub fetched_at: Instant,
}

type SharedFetch = Shared<BoxFuture<'static, Result<(), FetchError>>>;

/// What a `kid` lookup found.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<Key>),
    /// The set is loaded but has no such key (after a refetch, when one was allowed).
    Unknown,
    /// No usable set: never loaded, or too stale.
    Unavailable,
}

/// Where a source's keys come from.
#[derive(Debug)]
pub enum Origin {
    /// OpenID discovery, then the JWKS named by the metadata.
    Discovery { client: reqwest::Client },
    /// A JWKS file; the issuer is given (derived from the tenant), not read.
    File {
        path: std::path::PathBuf,
        issuer: String,
        /// Digest of what was last seen (contents, or the failure reading them) and why it
        /// did not load (`None`: it did): unchanged contents are not parsed again, and a
        /// failure is told once.
        last_seen: Mutex<Option<Seen>>,
    },
}

/// An issuer's metadata + JWKS, cached.
pub struct KeySource {
    /// Metric label and log name, e.g. `entra-v2`.
    pub name: String,
    /// The metadata URL, or the file's path for a file source.
    pub metadata_url: String,
    /// For `[[oidc]]` issuers: the metadata's `issuer` must be exactly this.
    expected_issuer: Option<String>,
    timing: Timing,
    origin: Origin,
    current: ArcSwapOption<KeySet>,
    /// When the last fetch (of any cause) started.
    last_fetch: Mutex<Option<Instant>>,
    inflight: Mutex<Option<SharedFetch>>,
    pub metrics: Arc<KeySourceMetrics>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("name", &self.name)
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

impl KeySource {
    #[must_use]
    pub fn new(
        name: &str,
        metadata_url: String,
        expected_issuer: Option<String>,
        timing: Timing,
        client: reqwest::Client,
        metrics: Arc<KeySourceMetrics>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            metadata_url,
            expected_issuer,
            timing,
            origin: Origin::Discovery { client },
            current: ArcSwapOption::empty(),
            last_fetch: Mutex::new(None),
            inflight: Mutex::new(None),
            metrics,
        }
    }

    /// A source reading the JWKS file at `path`, whose keys are `issuer`'s.
    #[must_use]
    pub fn file(
        name: &str,
        path: &str,
        issuer: String,
        timing: Timing,
        metrics: Arc<KeySourceMetrics>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            metadata_url: path.to_owned(),
            expected_issuer: None,
            timing,
            origin: Origin::File {
                path: path.into(),
                issuer,
                last_seen: Mutex::new(None),
            },
            current: ArcSwapOption::empty(),
            last_fetch: Mutex::new(None),
            inflight: Mutex::new(None),
            metrics,
        }
    }

    /// The JWKS file this source reads, for a file source.
    #[must_use]
    pub fn file_path(&self) -> Option<&std::path::Path> {
        match &self.origin {
            Origin::File { path, .. } => Some(path),
            Origin::Discovery { .. } => None,
        }
    }

    /// The keys of the current set, however stale (0 when none is loaded).
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.current.load().as_deref().map_or(0, |s| s.keys.len())
    }

    /// True when this source reads the same file for the same issuer on the same schedule.
    #[must_use]
    pub fn is_same_file(&self, path: &str, issuer: &str, timing: Timing) -> bool {
        matches!(&self.origin, Origin::File { path: p, issuer: i, .. } if p.as_os_str() == path && i == issuer)
            && self.timing == timing
    }

    /// True when this source fetches the same documents on the same schedule as one built
    /// from these settings would, so a config reload can keep it (and its keys).
    #[must_use]
    pub fn is_same(
        &self,
        metadata_url: &str,
        expected_issuer: Option<&str>,
        timing: Timing,
    ) -> bool {
        matches!(self.origin, Origin::Discovery { .. })
            && self.metadata_url == metadata_url
            && self.expected_issuer.as_deref() == expected_issuer
            && self.timing == timing
    }

    /// The issuer `[[oidc]]` metadata must name (`None` for Entra's sources).
    #[must_use]
    pub fn expected_issuer(&self) -> Option<&str> {
        self.expected_issuer.as_deref()
    }

    /// The current set, unless there is none or it is older than `max_stale`.
    #[must_use]
    pub fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .load_full()
            .filter(|set| set.fetched_at.elapsed() <= self.timing.max_stale)
    }

    /// True when the current (not too stale) set still publishes `kid`; reads without
    /// taking a reference to the set.
    #[must_use]
    pub fn has_key(&self, kid: &str) -> bool {
        let set = self.current.load();
        set.as_deref().is_some_and(|set| {
            set.fetched_at.elapsed() <= self.timing.max_stale && set.keys.contains_key(kid)
        })
    }

    /// A source that has loaded keys `kids` (all one test RSA key) and never fetches.
    #[cfg(test)]
    pub(crate) fn with_keys_for_tests(kids: &[&str]) -> Arc<Self> {
        let source = unreachable_source(&crate::metrics::Metrics::new());
        let key = Arc::new(super::fetch::test_key());
        source.current.store(Some(Arc::new(KeySet {
            issuer: IssuerTemplate::new("https://issuer.test/"),
            keys: kids
                .iter()
                .map(|k| ((*k).to_owned(), Arc::clone(&key)))
                .collect(),
            fetched_at: Instant::now(),
        })));
        source
    }

    /// True once a usable set is loaded.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.snapshot().is_some()
    }

    /// Finds `kid`, refetching once (coalesced, rate-limited) when it is unknown.
    pub async fn lookup(self: &Arc<Self>, kid: &str) -> Lookup {
        if let Some(set) = self.snapshot()
            && let Some(key) = set.keys.get(kid)
        {
            self.note_if_stale(&set);
            return Lookup::Found(key.clone());
        }
        let Some(fetch) = self.refetch_for_unknown_kid() else {
            return self.lookup_now(kid);
        };
        // The outcome is logged and counted by the fetch itself; a traced request shows it
        // as a `key fetch` span.
        let started = std::time::SystemTime::now();
        let result = fetch.await;
        crate::trace::key_fetch(&self.name, started, result.is_ok());
        self.lookup_now(kid)
    }

    fn lookup_now(&self, kid: &str) -> Lookup {
        match self.snapshot() {
            None => Lookup::Unavailable,
            Some(set) => match set.keys.get(kid) {
                Some(key) => Lookup::Found(key.clone()),
                None => Lookup::Unknown,
            },
        }
    }

    fn note_if_stale(&self, set: &KeySet) {
        if set.fetched_at.elapsed() > self.timing.refresh + self.timing.min_refetch {
            self.metrics.record_stale_served();
        }
    }

    /// Joins the fetch under way, or starts one if the cooldown allows; `None` if neither.
    fn refetch_for_unknown_kid(self: &Arc<Self>) -> Option<SharedFetch> {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.as_ref() {
            return Some(f.clone());
        }
        let cooled =
            lock(&self.last_fetch).is_none_or(|at| at.elapsed() >= self.timing.min_refetch);
        cooled.then(|| self.start_fetch(&mut inflight))
    }

    /// Fetches now (joining one under way), whatever the cooldown: startup and background use.
    pub fn refresh(self: &Arc<Self>) -> SharedFetch {
        let mut inflight = lock(&self.inflight);
        match inflight.as_ref() {
            Some(f) => f.clone(),
            None => self.start_fetch(&mut inflight),
        }
    }

    fn start_fetch(self: &Arc<Self>, slot: &mut Option<SharedFetch>) -> SharedFetch {
        *lock(&self.last_fetch) = Some(Instant::now());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = async move {
            rx.await.unwrap_or_else(|_| {
                Err(FetchError::Http {
                    what: "metadata",
                    detail: "fetch task ended early".into(),
                })
            })
        }
        .boxed()
        .shared();
        *slot = Some(shared.clone());
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.fetch_and_store().await;
            // Clear the slot before waking the waiters, so a later unknown kid sees this
            // fetch as finished and the cooldown decides what happens next.
            *lock(&this.inflight) = None;
            let _ = tx.send(result);
        });
        shared
    }

    async fn fetch_and_store(&self) -> Result<(), FetchError> {
        let started = Instant::now();
        let result = match &self.origin {
            Origin::Discovery { client } => {
                fetch::fetch(client, &self.metadata_url, self.expected_issuer.as_deref()).await
            }
            Origin::File {
                path,
                issuer,
                last_seen,
            } => match self.read_file(path, issuer, last_seen).await {
                Read::Changed(result) => result,
                Read::Unchanged(outcome) => return outcome,
            },
        };
        match result {
            Ok(fetched) => {
                for (kid, why) in &fetched.skipped {
                    tracing::warn!(source = %self.name, kid = %kid, why = %why, "skipping a published key");
                }
                let kids: Vec<&str> = fetched.keys.keys().map(String::as_str).collect();
                tracing::info!(
                    source = %self.name,
                    issuer = %fetched.issuer,
                    keys = ?kids,
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "signing keys loaded"
                );
                self.current.store(Some(Arc::new(KeySet {
                    issuer: fetched.issuer,
                    keys: fetched.keys,
                    fetched_at: Instant::now(),
                })));
                self.metrics.record_ok();
                Ok(())
            }
            Err(e) => {
                let serving = match self.current.load_full() {
                    Some(set) => format!(
                        "keeping the keys fetched {}s ago",
                        set.fetched_at.elapsed().as_secs()
                    ),
                    None => "no keys loaded yet".to_owned(),
                };
                tracing::warn!(source = %self.name, url = %self.metadata_url, error = %e, "{serving}");
                self.metrics.record_error(e.kind());
                Err(e)
            }
        }
    }

    /// Reads the JWKS file; unchanged contents (or an unchanged failure) are not handled
    /// again: the keys in service are confirmed, or the failure stays told.
    async fn read_file(
        &self,
        path: &std::path::Path,
        issuer: &str,
        last_seen: &Mutex<Option<Seen>>,
    ) -> Read {
        let read = tokio::fs::read(path).await;
        let seen = match &read {
            Ok(bytes) => crate::pem::digest_bytes(&[b"ok", bytes]),
            Err(e) => crate::pem::digest_bytes(&[b"error", e.to_string().as_bytes()]),
        };
        let previous = lock(last_seen).clone();
        if let Some((digest, failure)) = previous
            && digest == seen
        {
            if let Some(e) = failure {
                return Read::Unchanged(Err(e));
            }
            if let Some(set) = self.current.load_full() {
                self.current.store(Some(Arc::new(KeySet {
                    issuer: set.issuer.clone(),
                    keys: set.keys.clone(),
                    fetched_at: Instant::now(),
                })));
                self.metrics.record_confirmed();
                return Read::Unchanged(Ok(()));
            }
        }
        let result = match read {
            Ok(bytes) => fetch::parse_jwks(&bytes, "jwks file", IssuerTemplate::new(issuer)),
            Err(e) => Err(FetchError::Unreadable {
                detail: format!("cannot read {}: {e}", path.display()),
            }),
        };
        *lock(last_seen) = Some((seen, result.as_ref().err().cloned()));
        Read::Changed(result)
    }

    /// Keeps the set fresh: fetch now, then every `refresh`; after a failure retry with
    /// exponential backoff (1 s doubling, capped at 60 s and at `refresh`) plus jitter.
    ///
    /// The loop holds the source only while fetching, so it ends by itself once a config
    /// reload has replaced the source and the last request using it is done.
    pub async fn run(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        let mut backoff = Duration::from_secs(1);
        loop {
            let Some(this) = weak.upgrade() else {
                return;
            };
            let fetch = this.refresh();
            let timing = this.timing;
            drop(this);
            let wait = match fetch.await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    timing.refresh
                }
                Err(_) => {
                    let wait = backoff + jitter(backoff / 4);
                    backoff = (backoff * 2)
                        .min(Duration::from_secs(60))
                        .min(timing.refresh);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A JWKS file's last look: the digest of what was read and why it did not load.
type Seen = ([u8; 32], Option<FetchError>);

/// What a look at a JWKS file found.
enum Read {
    /// New contents (or a new failure): handled like a fetch.
    Changed(Result<fetch::Fetched, FetchError>),
    /// As last time: nothing to log or count again.
    Unchanged(Result<(), FetchError>),
}

/// A pseudo-random duration in `[0, max)`, enough to keep replicas from retrying in step.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos())),
    );
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(h.finish() % nanos)
}

/// A source whose fetches fail at once (nothing listens on port 9): only the cooldown
/// decides whether an unknown `kid` starts one.
#[cfg(test)]
fn unreachable_source(metrics: &crate::metrics::Metrics) -> Arc<KeySource> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    Arc::new(KeySource::new(
        "test",
        "http://127.0.0.1:9/.well-known/openid-configuration".into(),
        None,
        Timing {
            refresh: Duration::from_secs(3600),
            min_refetch: Duration::from_secs(300),
            max_stale: Duration::from_secs(86_400),
        },
        client,
        metrics.key_source("test"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_refetches_at_most_once_per_cooldown() {
        let metrics = Metrics::new();
        let source = unreachable_source(&metrics);
        assert!(matches!(source.lookup("k1").await, Lookup::Unavailable));
        assert_eq!(source.metrics.fetches(), 1, "the first unknown kid fetches");
        assert!(matches!(source.lookup("k2").await, Lookup::Unavailable));
        assert_eq!(source.metrics.fetches(), 1, "within the cooldown: no fetch");
        tokio::time::advance(Duration::from_secs(290)).await;
        source.lookup("k3").await;
        assert_eq!(
            source.metrics.fetches(),
            1,
            "290 s later: still cooling down"
        );
        tokio::time::advance(Duration::from_secs(15)).await;
        source.lookup("k4").await;
        assert_eq!(
            source.metrics.fetches(),
            2,
            "past min_refetch: one more fetch"
        );
        // A refresh (startup, background) does not wait for the cooldown, and counts as the
        // last fetch for it.
        let _ = source.refresh().await;
        assert_eq!(source.metrics.fetches(), 3);
        source.lookup("k5").await;
        assert_eq!(source.metrics.fetches(), 3);
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use crate::metrics::Metrics;
    use base64::Engine as _;

    fn jwks(kids: &[&str]) -> String {
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc5_u8; 256]);
        let keys: Vec<serde_json::Value> = kids
            .iter()
            .map(|kid| serde_json::json!({"kty": "RSA", "use": "sig", "kid": kid, "n": n, "e": "AQAB"}))
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn result(source: &KeySource, kind: &str) -> u64 {
        source.metrics.count_of(kind)
    }

    #[tokio::test]
    async fn a_key_file_loads_reloads_on_change_and_keeps_its_keys_when_broken() {
        let dir = std::env::temp_dir().join(format!("entragate-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks(&["a"])).expect("write");
        let metrics = Metrics::new();
        let source = Arc::new(KeySource::file(
            "entra-v2",
            path.to_str().expect("utf-8"),
            "https://issuer.test/{tenantid}/v2.0".into(),
            Timing {
                refresh: Duration::from_secs(10),
                min_refetch: Duration::from_secs(300),
                max_stale: Duration::from_secs(86_400),
            },
            metrics.key_source("entra-v2"),
        ));
        source.refresh().await.expect("loads");
        assert!(source.has_key("a") && !source.has_key("b"));
        let set = source.snapshot().expect("a set");
        assert_eq!(
            set.issuer.to_string(),
            "https://issuer.test/{tenantid}/v2.0"
        );
        assert_eq!(result(&source, "ok"), 1);

        // Unchanged: confirmed, not loaded (or counted) again.
        source.refresh().await.expect("still good");
        assert_eq!(result(&source, "ok"), 1);
        assert!(source.has_key("a"));

        // Broken: the keys stay, the failure is counted once however often it is seen.
        std::fs::write(&path, "{ not json").expect("write");
        let e = source.refresh().await.expect_err("invalid");
        assert_eq!(e.kind(), "bad_json");
        source.refresh().await.expect_err("still invalid");
        assert_eq!(result(&source, "bad_json"), 1);
        assert!(source.has_key("a"), "the last good keys stay in service");
        std::fs::write(
            &path,
            r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#,
        )
        .expect("write");
        assert_eq!(source.refresh().await.expect_err("HMAC").kind(), "no_keys");
        assert!(source.has_key("a"));

        // Rewritten with a new key: it replaces the old set.
        std::fs::write(&path, jwks(&["b"])).expect("write");
        source.refresh().await.expect("reloads");
        assert!(source.has_key("b") && !source.has_key("a"));
        assert_eq!(result(&source, "ok"), 2);

        // Gone: unreadable, told once, keys kept.
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(
            source.refresh().await.expect_err("gone").kind(),
            "unreadable"
        );
        source.refresh().await.expect_err("still gone");
        assert_eq!(result(&source, "unreadable"), 1);
        assert!(source.has_key("b"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
