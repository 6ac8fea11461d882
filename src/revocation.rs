//! The kill switch: a deny-list of identities whose tokens are refused (401
//! `invalid_token`, reason `revoked`) from the next request on, tokens already in the
//! verified-token cache included, since the list is consulted after every validation.
//!
//! An entry names an `oid`, a client application (`azp`/`appid`), a tenant (`tid`) or a
//! token (`jti`), optionally only for tokens issued before a time (`iat` < T: "sign out
//! everywhere"), and always expires (`until`), so the list never grows without bound.
//!
//! Sources: `revocation.file` (reloaded when it changes) and, when `limits_store.url` names
//! Redis, the sorted set [`REDIS_KEY`] (member = the entry, score = its expiry in Unix
//! seconds) that `entragate revoke` writes. Each replica keeps the merged list in memory
//! ([`ArcSwap`]) and refreshes it in the background every [`REFRESH`], so a request never
//! waits on Redis or the disk for it; when a source cannot be read, its last good entries
//! stay in force.

pub mod entry;
pub mod store;

use crate::sync::lock;
use std::collections::HashMap;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::auth::Claims;
use crate::metrics::Metrics;
pub use entry::{Entry, Kind};

/// The Redis sorted set of revocation entries.
pub const REDIS_KEY: &str = "entragate:revoked";
/// How often each replica refreshes its copy (well within the one second in which a
/// revocation must reach every replica).
pub const REFRESH: Duration = Duration::from_millis(250);

/// Per value, the windows of its entries: `(issued_before, until)`.
type Windows = HashMap<String, Vec<(Option<u64>, u64)>>;

/// The entries in force, indexed for a lookup per claim.
#[derive(Debug, Default)]
pub struct List {
    /// By [`Kind`] (oid, client, tenant, jti): value -> the entries' windows
    /// `(issued_before, until)`; `issued_before` = `None` revokes every token. Looked up
    /// with the claim as it is (no allocation when it is already lower case).
    by_kind: [Windows; 4],
    entries: usize,
}

impl List {
    /// The list of `entries`.
    #[must_use]
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut by_kind: [Windows; 4] = Default::default();
        let mut n = 0;
        for e in entries {
            n += 1;
            by_kind[e.kind as usize]
                .entry(e.value.clone())
                .or_default()
                .push((e.issued_before, e.until));
        }
        Self {
            by_kind,
            entries: n,
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries
    }

    /// The kind of the first entry that revokes a token with these claims at `now` (Unix
    /// seconds).
    #[must_use]
    pub fn revoked(&self, claims: &Claims, now: u64) -> Option<Kind> {
        if self.is_empty() {
            return None;
        }
        let iat = claims.iat.map(|t| t.max(0.0));
        let jti = claims.other.get("jti").and_then(|v| v.as_str());
        for (kind, value) in [
            (Kind::Oid, claims.oid.as_deref()),
            (Kind::Client, claims.client_id()),
            (Kind::Tenant, claims.tid.as_deref()),
            (Kind::Jti, jti),
        ] {
            let Some(value) = value else { continue };
            let Some(windows) = self.by_kind[kind as usize].get(kind.normalize(value).as_ref())
            else {
                continue;
            };
            let hit = windows.iter().any(|(before, until)| {
                now < *until
                    && match before {
                        None => true,
                        // A token without iat cannot show it was issued after T.
                        #[allow(clippy::cast_precision_loss)]
                        Some(t) => iat.is_none_or(|iat| iat < *t as f64),
                    }
            });
            if hit {
                return Some(kind);
            }
        }
        None
    }
}

/// Unix seconds now.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The last good entries of each source.
#[derive(Debug, Default)]
struct Sources {
    file: Vec<Entry>,
    file_stamp: Option<(SystemTime, u64)>,
    redis: Vec<Entry>,
}

/// The revocation list of one replica: a lock-free copy for requests, refreshed in the
/// background from the file and Redis.
#[derive(Debug)]
pub struct Revocations {
    current: ArcSwap<List>,
    file: Option<PathBuf>,
    redis: Option<Arc<crate::redis::Client>>,
    sources: Mutex<Sources>,
    metrics: Arc<Metrics>,
}

impl Revocations {
    /// The list of `file` (read now) and `redis` (read by [`Revocations::refresh`]).
    #[must_use]
    pub fn new(
        file: Option<PathBuf>,
        redis: Option<Arc<crate::redis::Client>>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let r = Self {
            current: ArcSwap::from_pointee(List::default()),
            file,
            redis,
            sources: Mutex::new(Sources::default()),
            metrics: Arc::clone(metrics),
        };
        r.reload_file();
        r.publish();
        r
    }

    /// True when there is nothing to refresh (no file, no Redis).
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.file.is_none() && self.redis.is_none()
    }

    /// The kind of entry that revokes a token with `claims`, if one does. Lock-free.
    #[must_use]
    pub fn check(&self, claims: &Claims) -> Option<Kind> {
        let list = self.current.load();
        if list.is_empty() {
            return None;
        }
        let kind = list.revoked(claims, unix_now())?;
        self.metrics.limits.record_revoked(kind.as_str());
        Some(kind)
    }

    /// Entries in force now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    /// True when no entry is in force.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.current.load().is_empty()
    }

    /// Re-reads the file (when it changed) and Redis, then publishes the merged list.
    pub async fn refresh(&self) {
        self.reload_file();
        if let Some(client) = &self.redis {
            let started = std::time::Instant::now();
            let result = store::read_redis(client, unix_now()).await;
            self.metrics.limits.store_latency.observe(started.elapsed());
            match result {
                Ok(entries) => lock(&self.sources).redis = entries,
                Err(e) => {
                    self.metrics.limits.revocation_refresh_errors.inc();
                    self.metrics.limits.record_store_error(e.kind());
                }
            }
        }
        self.publish();
    }

    fn reload_file(&self) {
        let Some(path) = &self.file else { return };
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && lock(&self.sources).file_stamp == stamp {
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (entries, problems) = entry::parse_file(&text);
                for p in &problems {
                    tracing::warn!(file = %path.display(), problem = %p, "revocation file: line ignored");
                }
                let mut s = lock(&self.sources);
                s.file = entries;
                s.file_stamp = stamp;
            }
            // An absent file is an empty list (`entragate revoke` creates it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = lock(&self.sources);
                s.file = Vec::new();
                s.file_stamp = None;
            }
            Err(e) => {
                self.metrics.limits.revocation_refresh_errors.inc();
                tracing::warn!(file = %path.display(), error = %e, "revocation file unreadable: the last good list stays in force");
            }
        }
    }

    fn publish(&self) {
        let now = unix_now();
        let s = lock(&self.sources);
        let list = List::of(
            s.file
                .iter()
                .chain(s.redis.iter())
                .filter(|e| e.until > now),
        );
        self.metrics
            .limits
            .revocation_entries
            .set(i64::try_from(list.len()).unwrap_or(i64::MAX));
        self.current.store(Arc::new(list));
    }

    /// Refreshes every [`REFRESH`] in the background while `this` lives (a reload that
    /// drops the gateway ends its task). Needs a tokio runtime; without one (or with no
    /// source) nothing is started.
    pub fn spawn_refresh(this: &Arc<Self>) {
        if this.is_off() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(this);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.refresh().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).expect("claims")
    }

    fn entry(kind: Kind, value: &str, before: Option<u64>, until: u64) -> Entry {
        Entry {
            kind,
            value: kind.normalize(value).into_owned(),
            issued_before: before,
            until,
        }
    }

    #[test]
    fn each_kind_revokes_its_claim_until_it_expires() {
        let user = claims(serde_json::json!({
            "oid": "AAAA0000-0000-0000-0000-000000000001", "tid": "t1", "azp": "c1",
            "jti": "j1", "iat": 1000
        }));
        for (kind, value) in [
            (Kind::Oid, "aaaa0000-0000-0000-0000-000000000001"),
            (Kind::Client, "c1"),
            (Kind::Tenant, "t1"),
            (Kind::Jti, "j1"),
        ] {
            let l = List::of(&[entry(kind, value, None, 2000)]);
            assert_eq!(l.revoked(&user, 1500), Some(kind), "{kind:?}");
            assert_eq!(l.revoked(&user, 2000), None, "{kind:?} expired");
        }
        // jti is compared exactly; GUIDs in any case.
        let l = List::of(&[entry(Kind::Jti, "J1", None, 2000)]);
        assert_eq!(l.revoked(&user, 1500), None);
        let other = claims(serde_json::json!({"oid": "someone-else", "iat": 1000}));
        let l = List::of(&[entry(
            Kind::Oid,
            "aaaa0000-0000-0000-0000-000000000001",
            None,
            2000,
        )]);
        assert_eq!(l.revoked(&other, 1500), None);
    }

    #[test]
    fn issued_before_spares_newer_tokens() {
        let l = List::of(&[entry(Kind::Oid, "o1", Some(1000), 5000)]);
        let old = claims(serde_json::json!({"oid": "o1", "iat": 999}));
        let new = claims(serde_json::json!({"oid": "o1", "iat": 1000}));
        let no_iat = claims(serde_json::json!({"oid": "o1"}));
        assert_eq!(l.revoked(&old, 1500), Some(Kind::Oid));
        assert_eq!(l.revoked(&new, 1500), None);
        assert_eq!(l.revoked(&no_iat, 1500), Some(Kind::Oid));
    }

    #[test]
    fn the_file_is_reread_when_it_changes() {
        let dir =
            std::env::temp_dir().join(format!("entragate-revocation-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("revoked.txt");
        let until = unix_now() + 3600;
        let _ = std::fs::remove_file(&path);
        let metrics = Arc::new(Metrics::new());
        let r = Revocations::new(Some(path.clone()), None, &metrics);
        assert_eq!(r.len(), 0, "an absent file is an empty list");
        let e = entry(Kind::Oid, "o1", None, until);
        std::fs::write(&path, format!("# comment\n{}\n", e.to_line())).expect("write");
        futures_util::FutureExt::now_or_never(r.refresh()).expect("no waiting on a file");
        assert_eq!(r.len(), 1);
        let c = claims(serde_json::json!({"oid": "o1"}));
        assert_eq!(r.check(&c), Some(Kind::Oid));
        assert_eq!(metrics.limits.revoked("oid"), 1);
        std::fs::write(&path, "").expect("write");
        futures_util::FutureExt::now_or_never(r.refresh()).expect("no waiting on a file");
        assert_eq!(r.check(&c), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
