//! Rate limits and quotas (`[[limits]]`) on verified identity: a stage of the one decision
//! ([`crate::gateway::Gateway::check`]), run only for requests that passed authentication
//! and authorization, keyed on the token's verified claims (or the client address under
//! the trusted-proxy rules), never on anything a client could forge.
//!
//! Counters live in memory ([`memory`], per replica) or in Redis ([`shared`], one script
//! call per request for all its limits) when `limits_store.url` is set. While Redis cannot
//! be reached, `limits_store.on_error` decides: `allow` passes the request uncounted,
//! `deny` answers 429; never a 5xx, never longer than `limits_store.timeout`.

pub mod algorithm;
pub mod memory;
pub mod shared;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use http::header::{HeaderName, RETRY_AFTER};

use crate::auth::Claims;
use crate::config::{LimitKey, LimitKind, LimitRule, LimitsStore, OnError, path_matches};
use crate::metrics::Metrics;
use algorithm::Verdict;
use memory::MemoryStore;
use shared::SharedStore;

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One limit's question to a store.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Index of the rule.
    pub rule: usize,
    pub key: &'a str,
    pub quota: bool,
    /// GCRA emission interval, or the quota's window, in µs.
    pub step_us: u64,
    /// GCRA burst, or the quota's count.
    pub cap: u64,
}

/// A request over a limit: the limit's name and the 429's headers.
#[derive(Debug, Clone)]
pub struct Refused {
    pub name: Arc<str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug)]
struct Rule {
    config: LimitRule,
    name: Arc<str>,
    step_us: u64,
    cap: u64,
    /// `"name";q=600;w=60`, built once.
    policy: HeaderValue,
}

#[derive(Debug)]
enum Store {
    Memory(Arc<MemoryStore>),
    Shared(SharedStore),
}

/// The limits of one config, with their store.
#[derive(Debug)]
pub struct Limiter {
    rules: Vec<Rule>,
    store: Store,
    on_error: OnError,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// The limiter for `rules`; `redis` is the shared client when `store` names one.
    /// `None` when there are no limits.
    #[must_use]
    pub fn new(
        rules: &[LimitRule],
        store: &LimitsStore,
        redis: Option<Arc<crate::redis::Client>>,
        metrics: &Arc<Metrics>,
    ) -> Option<Self> {
        if rules.is_empty() {
            return None;
        }
        let rules = rules
            .iter()
            .map(|r| {
                let per_us = u64::try_from(r.rate.per.as_micros()).unwrap_or(u64::MAX);
                let (step_us, cap) = match r.kind {
                    LimitKind::Rate => ((per_us / r.rate.count).max(1), r.burst),
                    LimitKind::Quota => (per_us, r.rate.count),
                };
                let policy = HeaderValue::try_from(format!(
                    "\"{}\";q={};w={}",
                    r.name,
                    r.rate.count,
                    r.rate.per.as_secs()
                ))
                .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""));
                Rule {
                    name: Arc::from(r.name.as_str()),
                    config: r.clone(),
                    step_us,
                    cap,
                    policy,
                }
            })
            .collect();
        let on_error = store.on_error;
        let store = match redis {
            Some(client) => Store::Shared(SharedStore::new(client)),
            None => Store::Memory(Arc::new(MemoryStore::new())),
        };
        Some(Self {
            rules,
            store,
            on_error,
            metrics: Arc::clone(metrics),
        })
    }

    /// Keeps counting where `old` (the limiter of the config before a reload) stopped, when
    /// both count in memory with the same limits: a reload that changes something else
    /// does not hand every client a fresh limit.
    pub fn keep_counters_of(&mut self, old: &Self) {
        let same = self.rules.len() == old.rules.len()
            && self
                .rules
                .iter()
                .zip(&old.rules)
                .all(|(a, b)| a.config == b.config);
        if let (true, Store::Memory(_), Store::Memory(kept)) = (same, &self.store, &old.store) {
            self.store = Store::Memory(Arc::clone(kept));
        }
    }

    /// The names of the limits, in order (for `check` and `explain`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// Counts the request against every limit it falls under; `Some` when one refuses.
    /// `path` is the normalised path, `api` the name of the API it is under, `client` the
    /// client address under the trusted-proxy rules (`Gateway::client_address`), for `ip`
    /// keys.
    pub async fn check(
        &self,
        path: &str,
        api: &str,
        claims: &Claims,
        client: Option<IpAddr>,
    ) -> Option<Refused> {
        let mut applying: Vec<(usize, Cow<'_, str>)> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let paths = &rule.config.paths;
            if !paths.is_empty() && !paths.iter().any(|p| path_matches(p, path)) {
                continue;
            }
            let apis = &rule.config.apis;
            if !apis.is_empty() && !apis.iter().any(|a| a == api) {
                continue;
            }
            let key = if rule.config.key == LimitKey::Ip {
                client.map(|a| Cow::Owned(a.to_string()))
            } else {
                key_of(&rule.config.key, claims)
            };
            // A token without the claim is not counted under this limit (one shared
            // bucket for every such token would let one client starve the others).
            if let Some(k) = key {
                applying.push((i, k));
            }
        }
        if applying.is_empty() {
            return None;
        }
        let asks: Vec<Ask<'_>> = applying
            .iter()
            .map(|(i, k)| Ask {
                rule: *i,
                key: k,
                quota: self.rules[*i].config.kind == LimitKind::Quota,
                step_us: self.rules[*i].step_us,
                cap: self.rules[*i].cap,
            })
            .collect();
        let verdicts = match &self.store {
            Store::Memory(m) => m.check(&asks),
            Store::Shared(s) => {
                let keys: Vec<String> = asks
                    .iter()
                    .map(|a| redis_key(&self.rules[a.rule].name, a.key))
                    .collect();
                match s
                    .check(&asks, &keys, &self.metrics.limits.store_latency)
                    .await
                {
                    Ok(v) => v,
                    Err(kind) => {
                        self.metrics.limits.record_store_error(kind);
                        return match self.on_error {
                            OnError::Allow => None,
                            OnError::Deny => {
                                let rule = &self.rules[asks[0].rule];
                                Some(self.refused(rule, None))
                            }
                        };
                    }
                }
            }
        };
        let (ask, verdict) = asks.iter().zip(&verdicts).find(|(_, v)| !v.allowed)?;
        let rule = &self.rules[ask.rule];
        Some(self.refused(rule, Some(*verdict)))
    }

    /// The 429 of `rule`; `verdict` is `None` when the store could not say (`on_error =
    /// "deny"`): then the client is asked to come back in a second.
    fn refused(&self, rule: &Rule, verdict: Option<Verdict>) -> Refused {
        self.metrics.limits.record_rate_limited(&rule.name);
        let (remaining, reset, retry) = verdict.map_or((0, 1, 1), |v| {
            (v.remaining, secs_up(v.reset_us), secs_up(v.retry_us).max(1))
        });
        let state = HeaderValue::try_from(format!("\"{}\";r={remaining};t={reset}", rule.name))
            .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""));
        Refused {
            name: Arc::clone(&rule.name),
            headers: vec![
                (RETRY_AFTER, HeaderValue::from(retry)),
                (RATELIMIT_POLICY, rule.policy.clone()),
                (RATELIMIT, state),
            ],
        }
    }
}

/// Whole seconds, rounded up.
fn secs_up(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// The Redis key of a limit's counter for `key`; a long key (a claim holding a long value)
/// is hashed so keys stay short.
fn redis_key(name: &str, key: &str) -> String {
    if key.len() <= 128 {
        format!("entragate:limit:{name}:{key}")
    } else {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("entragate:limit:{name}:#{hex}")
    }
}

/// The verified value a limit counts by; `None` when the token does not carry it.
#[must_use]
pub fn key_of<'c>(key: &LimitKey, claims: &'c Claims) -> Option<Cow<'c, str>> {
    let text = |s: Option<&'c str>| s.filter(|s| !s.is_empty()).map(Cow::Borrowed);
    match key {
        LimitKey::Client => text(claims.client_id()),
        LimitKey::User => text(claims.oid.as_deref().or(claims.sub.as_deref())),
        LimitKey::Tenant => text(claims.tid.as_deref()),
        // Decided by the caller from the connection.
        LimitKey::Ip => None,
        LimitKey::Claim(name) => match name.as_str() {
            "oid" => text(claims.oid.as_deref()),
            "sub" => text(claims.sub.as_deref()),
            "tid" => text(claims.tid.as_deref()),
            "azp" => text(claims.azp.as_deref()),
            "appid" => text(claims.appid.as_deref()),
            "upn" => text(claims.upn.as_deref()),
            "preferred_username" => text(claims.preferred_username.as_deref()),
            "iss" => text(claims.iss.as_deref()),
            "idtyp" => text(claims.idtyp.as_deref()),
            "ver" => text(claims.ver.as_deref()),
            other => match claims.other.get(other)? {
                serde_json::Value::String(s) => text(Some(s.as_str())),
                serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
                serde_json::Value::Bool(b) => Some(Cow::Owned(b.to_string())),
                _ => None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitsStore, Rate};
    use std::time::Duration;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).expect("claims")
    }

    #[test]
    fn keys_come_from_verified_claims() {
        let c = claims(serde_json::json!({
            "oid": "o1", "tid": "t1", "azp": "c2", "appid": "c1", "team": "blue", "n": 7,
            "arr": ["x"]
        }));
        let k = |key: LimitKey| key_of(&key, &c).map(Cow::into_owned);
        assert_eq!(k(LimitKey::User).as_deref(), Some("o1"));
        assert_eq!(k(LimitKey::Tenant).as_deref(), Some("t1"));
        assert_eq!(
            k(LimitKey::Client).as_deref(),
            Some("c2"),
            "azp before appid"
        );
        assert_eq!(k(LimitKey::Claim("team".into())).as_deref(), Some("blue"));
        assert_eq!(k(LimitKey::Claim("n".into())).as_deref(), Some("7"));
        assert_eq!(k(LimitKey::Claim("oid".into())).as_deref(), Some("o1"));
        assert_eq!(k(LimitKey::Claim("arr".into())), None);
        assert_eq!(k(LimitKey::Claim("absent".into())), None);
        let v1 = claims(serde_json::json!({"appid": "c1", "sub": "s"}));
        assert_eq!(key_of(&LimitKey::Client, &v1).as_deref(), Some("c1"));
        assert_eq!(key_of(&LimitKey::User, &v1).as_deref(), Some("s"));
    }

    fn limiter(rules: Vec<LimitRule>) -> Limiter {
        Limiter::new(
            &rules,
            &LimitsStore {
                redis: None,
                on_error: OnError::Allow,
                timeout: Duration::from_millis(100),
            },
            None,
            &Arc::new(Metrics::new()),
        )
        .expect("limits")
    }

    fn rule(name: &str, key: LimitKey, rate: &str, paths: &[&str]) -> LimitRule {
        let rate = Rate::parse(rate).expect("rate");
        LimitRule {
            name: name.into(),
            key,
            rate,
            burst: rate.per_second_ceil(),
            kind: LimitKind::Rate,
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            apis: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_with_the_same_limits_keeps_counting() {
        let rules = vec![rule("per-user", LimitKey::User, "1/h", &[])];
        let c = claims(serde_json::json!({"oid": "o1"}));
        let old = limiter(rules.clone());
        assert!(old.check("/", "default", &c, None).await.is_none());
        let mut same = limiter(rules);
        same.keep_counters_of(&old);
        assert!(
            same.check("/", "default", &c, None).await.is_some(),
            "still spent"
        );
        let mut changed = limiter(vec![rule("per-user", LimitKey::User, "2/h", &[])]);
        changed.keep_counters_of(&old);
        assert!(
            changed.check("/", "default", &c, None).await.is_none(),
            "new limits start over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_with_apis_counts_only_under_those_apis() {
        let mut per_user = rule("ehrbase-only", LimitKey::User, "1/h", &[]);
        per_user.apis = vec!["ehrbase".into()];
        let l = limiter(vec![per_user]);
        let c = claims(serde_json::json!({"oid": "o1"}));
        // Another API: never counted, however often.
        for _ in 0..3 {
            assert!(l.check("/fhir/x", "fhir", &c, None).await.is_none());
        }
        assert!(l.check("/ehrbase/x", "ehrbase", &c, None).await.is_none());
        let r = l
            .check("/ehrbase/x", "ehrbase", &c, None)
            .await
            .expect("refused");
        assert_eq!(&*r.name, "ehrbase-only");
        assert!(l.check("/fhir/x", "fhir", &c, None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ip_limit_counts_the_address_it_is_given() {
        let l = limiter(vec![rule("per-ip", LimitKey::Ip, "1/h", &[])]);
        let c = claims(serde_json::json!({"oid": "o1"}));
        let a = Some("192.0.2.1".parse().expect("ip"));
        let b = Some("192.0.2.2".parse().expect("ip"));
        assert!(l.check("/", "default", &c, a).await.is_none());
        assert!(l.check("/", "default", &c, a).await.is_some());
        assert!(l.check("/", "default", &c, b).await.is_none());
        // No address known: not counted under an ip limit.
        assert!(l.check("/", "default", &c, None).await.is_none());
        assert!(l.check("/", "default", &c, None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_names_the_limit_with_the_draft_headers() {
        let l = limiter(vec![
            rule("everything", LimitKey::Tenant, "100/s", &[]),
            rule("per-user", LimitKey::User, "2/min", &["/query"]),
        ]);
        let c = claims(serde_json::json!({"oid": "o1", "tid": "t1"}));
        // Outside /query only the wide limit applies.
        for _ in 0..5 {
            assert!(l.check("/data", "default", &c, None).await.is_none());
        }
        assert!(l.check("/query/aql", "default", &c, None).await.is_none());
        let r = l
            .check("/query/aql", "default", &c, None)
            .await
            .expect("refused");
        assert_eq!(&*r.name, "per-user");
        let get = |n: &HeaderName| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .and_then(|(_, v)| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            get(&RATELIMIT_POLICY).as_deref(),
            Some("\"per-user\";q=2;w=60")
        );
        assert_eq!(get(&RATELIMIT).as_deref(), Some("\"per-user\";r=0;t=30"));
        assert_eq!(get(&RETRY_AFTER).as_deref(), Some("30"));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(l.check("/query/aql", "default", &c, None).await.is_none());
        assert_eq!(l.metrics.limits.rate_limited("per-user"), 1);
        // A token without the key's claim is not counted.
        let anon = claims(serde_json::json!({"tid": "t1"}));
        for _ in 0..5 {
            assert!(l.check("/query/x", "default", &anon, None).await.is_none());
        }
    }
}
