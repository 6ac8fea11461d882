//! What `check` says about `[[limits]]`, `[limits_store]` and `[revocation]`: each limit in
//! words, whether Redis answers, and whether the revocation file reads.

use std::time::Instant;

use super::{Item, Status};
use crate::config::{Config, LimitKey, LimitKind, OnError};
use crate::redis::{Client, Value};
use crate::revocation::{entry, unix_now};

fn key_words(key: &LimitKey) -> String {
    match key {
        LimitKey::Client => "client application (azp/appid)".into(),
        LimitKey::User => "user (oid)".into(),
        LimitKey::Tenant => "tenant (tid)".into(),
        LimitKey::Ip => "client address (X-Forwarded-For from server.trusted_proxies only)".into(),
        LimitKey::Claim(c) => format!("value of the claim {c:?}"),
    }
}

/// The items, Redis pinged once (within `limits_store.timeout`, at least 1 s).
pub(super) async fn items(config: &Config) -> Vec<Item> {
    let mut out = Vec::new();
    let shared = config.limits_store.redis.is_some();
    for l in &config.limits {
        let what = match l.kind {
            LimitKind::Rate => format!(
                "{} per {}, burst {} (GCRA)",
                l.rate.as_config(),
                key_words(&l.key),
                l.burst
            ),
            LimitKind::Quota => format!(
                "quota of {} per {} (fixed window)",
                l.rate.as_config(),
                key_words(&l.key)
            ),
        };
        let paths = if l.paths.is_empty() {
            "every path".to_owned()
        } else {
            l.paths.join(", ")
        };
        let store = if shared {
            "shared in Redis by every replica"
        } else {
            "in memory: per replica (N replicas allow N times this; set limits_store.url to share)"
        };
        out.push(Item::new(
            format!("limit.{}", l.name),
            Status::Ok,
            format!("limit {}: {what} on {paths}; counted {store}", l.name),
        ));
    }
    if let Some(target) = &config.limits_store.redis {
        let timeout = config
            .limits_store
            .timeout
            .max(std::time::Duration::from_secs(1));
        let client = Client::new(target.clone(), timeout);
        let started = Instant::now();
        let on_error = match config.limits_store.on_error {
            OnError::Allow => "pass uncounted",
            OnError::Deny => "get 429",
        };
        let item = match client.query(&[b"PING"]).await {
            Ok(Value::Ok(p)) if p == "PONG" => Item::new(
                "limits_store",
                Status::Ok,
                format!(
                    "Redis {target:?} answers ({} ms); while it does not, requests {on_error} (limits_store.on_error)",
                    started.elapsed().as_millis()
                ),
            ),
            Ok(other) => Item::new(
                "limits_store",
                Status::Fail,
                format!("Redis {target:?} answered PING with {other:?}"),
            )
            .fix("Check the password and database in limits_store.url."),
            Err(e) => Item::new(
                "limits_store",
                Status::Fail,
                format!("Redis {target:?}: {e}; requests would {on_error} (limits_store.on_error)"),
            )
            .fix("Start Redis or correct limits_store.url; the gateway reconnects on its own."),
        };
        out.push(item);
    }
    if let Some(file) = &config.revocation.file {
        let item = match std::fs::read_to_string(file) {
            Ok(text) => {
                let (entries, problems) = entry::parse_file(&text);
                let now = unix_now();
                let in_force = entries.iter().filter(|e| e.until > now).count();
                if problems.is_empty() {
                    Item::new(
                        "revocation.file",
                        Status::Ok,
                        format!(
                            "revocation file {file}: {in_force} entr{} in force",
                            if in_force == 1 { "y" } else { "ies" }
                        ),
                    )
                } else {
                    Item::new(
                        "revocation.file",
                        Status::Warn,
                        format!("revocation file {file}: {} line(s) ignored: {}", problems.len(), problems.join("; ")),
                    )
                    .fix("Each line: oid|client|tenant|jti=<value> until=<RFC 3339> [issued_before=<RFC 3339>]")
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Item::new(
                "revocation.file",
                Status::Ok,
                format!(
                    "revocation file {file} does not exist yet: no entries (entragate revoke creates it)"
                ),
            ),
            Err(e) => Item::new(
                "revocation.file",
                Status::Fail,
                format!("revocation file {file}: {e}"),
            )
            .fix("Make the file readable by the gateway."),
        };
        out.push(item);
    }
    out
}
