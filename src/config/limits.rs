//! `[[limits]]`, `[limits_store]` and `[revocation]`: rate limits and quotas on verified
//! identity, where their counters (and the revocation list) live, and the deny-list file.

use std::time::Duration;

use figment::value::Dict;

use super::read::Reader;
use super::routes::{entries, field, is_label_name};
use crate::path;

/// The keys of a `[[limits]]` entry.
pub const LIMIT_KEYS: &[&str] = &["name", "key", "rate", "burst", "kind", "apis", "paths"];

/// One `[[limits]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// Unique; in the log reason `rate_limited:<name>`, metrics and `RateLimit-Policy`.
    pub name: String,
    pub key: LimitKey,
    pub rate: Rate,
    /// GCRA burst (requests allowed at once); for a quota, the rate's count.
    pub burst: u64,
    pub kind: LimitKind,
    /// Normalised path patterns (segment-wise prefixes, `*` = any one segment); empty =
    /// every path.
    pub paths: Vec<String>,
    /// Names of the `[[apis]]` it applies to (`"default"` is the one API of a config
    /// without `[[apis]]`); empty = every API.
    pub apis: Vec<String>,
}

/// What a limit counts by: always a verified claim, or the client address under the
/// trusted-proxy rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// `azp` (v2) / `appid` (v1).
    Client,
    /// `oid` (`sub` for an `[[oidc]]` issuer's token without one).
    User,
    /// `tid`.
    Tenant,
    /// The client address (`server.trusted_proxies` decide whether `X-Forwarded-For` is
    /// believed).
    Ip,
    /// Any claim of the verified token (a string, number or boolean).
    Claim(String),
}

impl LimitKey {
    /// As written in the config.
    #[must_use]
    pub fn as_config(&self) -> String {
        match self {
            Self::Client => "client".into(),
            Self::User => "user".into(),
            Self::Tenant => "tenant".into(),
            Self::Ip => "ip".into(),
            Self::Claim(c) => format!("claim:{c}"),
        }
    }
}

/// `N/s`, `N/min`, `N/h`, `N/day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl Rate {
    /// Parses `"600/min"`.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (n, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not N/s, N/min, N/h or N/day"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{n:?} in {text:?} is not a whole number"))?;
        if count == 0 {
            return Err(format!("{text:?}: the count must be at least 1"));
        }
        if count > 1_000_000_000 {
            return Err(format!("{text:?}: the count is too large"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "min" | "m" | "minute" => 60,
            "h" | "hour" => 3600,
            "day" | "d" => 86_400,
            other => {
                return Err(format!(
                    "unit {other:?} in {text:?} is not s, min, h or day"
                ));
            }
        };
        Ok(Self {
            count,
            per: Duration::from_secs(per),
        })
    }

    /// The requests per second this rate allows, rounded up, at least 1: the default GCRA
    /// burst.
    #[must_use]
    pub fn per_second_ceil(self) -> u64 {
        self.count.div_ceil(self.per.as_secs().max(1)).max(1)
    }

    /// As written in the config.
    #[must_use]
    pub fn as_config(self) -> String {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "day",
        };
        format!("{}/{unit}", self.count)
    }
}

/// `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// GCRA: smooth, `burst` at once, then one every `per / count`.
    Rate,
    /// A fixed window of `per`, `count` requests in it (APIM's `quota-by-key`).
    Quota,
}

/// `[limits_store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsStore {
    /// `None` = memory, per replica.
    pub redis: Option<crate::redis::Target>,
    pub on_error: OnError,
    /// Bound on every Redis call.
    pub timeout: Duration,
}

/// `limits_store.on_error`: what a request gets while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Passes, uncounted (availability first).
    Allow,
    /// Refused as over the limit (429).
    Deny,
}

/// `[revocation]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocation {
    /// The deny-list file, reloaded on change.
    pub file: Option<String>,
}

pub(super) fn read_limits(r: &mut Reader, api_names: &[&str]) -> Vec<LimitRule> {
    let mut out: Vec<LimitRule> = Vec::new();
    for (name, dict) in entries(r, "limits", LIMIT_KEYS) {
        if let Some(rule) = read_limit(r, &name, &dict, api_names) {
            if out.iter().any(|o| o.name == rule.name) {
                r.problem(
                    &format!("{name}.name"),
                    format!("{:?} is already the name of another limit", rule.name),
                );
            }
            out.push(rule);
        }
    }
    out
}

fn read_limit(r: &mut Reader, name: &str, d: &Dict, api_names: &[&str]) -> Option<LimitRule> {
    let limit_name: Option<String> = field(r, d, name, "name", "a string");
    let limit_name = match limit_name {
        Some(n) if is_label_name(&n) => Some(n),
        Some(n) => {
            r.problem(
                &format!("{name}.name"),
                format!("{n:?} must be 1-64 letters, digits, '-', '_' or '.' (it appears in headers and metrics)"),
            );
            None
        }
        None => {
            r.problem(&format!("{name}.name"), "is required");
            None
        }
    };
    let key_text: Option<String> = field(r, d, name, "key", "a string");
    let key = match key_text.as_deref() {
        Some("client") => Some(LimitKey::Client),
        Some("user") => Some(LimitKey::User),
        Some("tenant") => Some(LimitKey::Tenant),
        Some("ip") => Some(LimitKey::Ip),
        Some(k) if k.starts_with("claim:") && k.len() > 6 => {
            Some(LimitKey::Claim(k["claim:".len()..].to_owned()))
        }
        Some(k) => {
            r.problem(
                &format!("{name}.key"),
                format!(
                    "{k:?} must be \"client\", \"user\", \"tenant\", \"ip\" or \"claim:<name>\""
                ),
            );
            None
        }
        None => {
            r.problem(
                &format!("{name}.key"),
                "is required: \"client\", \"user\", \"tenant\", \"ip\" or \"claim:<name>\"",
            );
            None
        }
    };
    let rate_text: Option<String> = field(r, d, name, "rate", "a string like \"600/min\"");
    let rate = match rate_text {
        Some(t) => Rate::parse(&t)
            .map_err(|e| r.problem(&format!("{name}.rate"), e))
            .ok(),
        None => {
            r.problem(
                &format!("{name}.rate"),
                "is required: N/s, N/min, N/h or N/day",
            );
            None
        }
    };
    let kind_text: Option<String> = field(r, d, name, "kind", "\"rate\" or \"quota\"");
    let kind = match kind_text.as_deref() {
        None | Some("rate") => LimitKind::Rate,
        Some("quota") => LimitKind::Quota,
        Some(k) => {
            r.problem(
                &format!("{name}.kind"),
                format!("{k:?} must be \"rate\" or \"quota\""),
            );
            LimitKind::Rate
        }
    };
    let burst: Option<u64> = field(r, d, name, "burst", "a whole number");
    if burst == Some(0) {
        r.problem(&format!("{name}.burst"), "must be at least 1");
    }
    if burst.is_some() && kind == LimitKind::Quota {
        r.problem(
            &format!("{name}.burst"),
            "applies to kind = \"rate\" only (a quota allows its whole count in its window)",
        );
    }
    let apis =
        field::<Vec<String>>(r, d, name, "apis", "a list of [[apis]] names").unwrap_or_default();
    for api in &apis {
        if !api_names.contains(&api.as_str()) {
            r.problem(
                &format!("{name}.apis"),
                format!(
                    "{api:?} names no API (the APIs are: {})",
                    api_names.join(", ")
                ),
            );
        }
    }
    let paths = field::<Vec<String>>(r, d, name, "paths", "a list of paths")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            if !p.starts_with('/') {
                r.problem(
                    &format!("{name}.paths"),
                    format!("{p:?} must start with '/'"),
                );
                return None;
            }
            match path::normalize(&p) {
                Ok(n) => Some(n.into_owned()),
                Err(_) => {
                    r.problem(
                        &format!("{name}.paths"),
                        format!("{p:?} cannot be normalised"),
                    );
                    None
                }
            }
        })
        .collect();
    let (name, key, rate) = (limit_name?, key?, rate?);
    let burst = match kind {
        LimitKind::Rate => burst.filter(|b| *b > 0).unwrap_or(rate.per_second_ceil()),
        LimitKind::Quota => rate.count,
    };
    Some(LimitRule {
        name,
        key,
        rate,
        burst,
        kind,
        paths,
        apis,
    })
}

pub(super) fn read_store(r: &mut Reader) -> LimitsStore {
    let redis = r.opt_string("limits_store.url").and_then(|url| {
        crate::redis::Target::parse(&url)
            .map_err(|e| r.problem("limits_store.url", e))
            .ok()
    });
    let on_error = match r.string("limits_store.on_error", "allow").as_str() {
        "allow" => OnError::Allow,
        "deny" => OnError::Deny,
        other => {
            r.problem(
                "limits_store.on_error",
                format!("must be \"allow\" or \"deny\", not {other:?}"),
            );
            OnError::Allow
        }
    };
    let timeout = r.duration("limits_store.timeout", "100ms");
    if timeout.is_zero() || timeout > Duration::from_secs(5) {
        r.problem(
            "limits_store.timeout",
            "must be between 1ms and 5s: a request waits this long at most for Redis",
        );
    }
    LimitsStore {
        redis,
        on_error,
        timeout,
    }
}

pub(super) fn read_revocation(r: &mut Reader) -> Revocation {
    Revocation {
        file: r.opt_string("revocation.file").filter(|f| !f.is_empty()),
    }
}

/// Whether `pattern` (normalised; segments, `*` matching any one) covers `path` as a
/// segment-wise prefix, the way route paths match.
#[must_use]
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/').filter(|s| !s.is_empty());
    let mut have = path.split('/').filter(|s| !s.is_empty());
    loop {
        match (want.next(), have.next()) {
            (None, _) => return true,
            (Some(w), Some(h)) if w == "*" || w == h => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = Rate::parse("600/min").expect("rate");
        assert_eq!((r.count, r.per.as_secs()), (600, 60));
        assert_eq!(r.per_second_ceil(), 10);
        assert_eq!(Rate::parse("5/s").expect("rate").per_second_ceil(), 5);
        assert_eq!(Rate::parse("1000/day").expect("rate").per_second_ceil(), 1);
        assert_eq!(Rate::parse("90/min").expect("rate").per_second_ceil(), 2);
        assert_eq!(Rate::parse(" 7 / h ").expect("rate").as_config(), "7/h");
        for bad in ["", "600", "0/s", "-1/s", "1.5/s", "10/week", "x/min", "10/"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn load(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let toml = format!(
            "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n{extra}"
        );
        crate::config::Config::load(&toml, &[], &|_| Err(std::io::Error::other("no files")))
    }

    #[test]
    fn the_example_limits_load_with_their_defaults() {
        let c = load(
            "[[limits]]\nname = \"per-client\"\nkey = \"client\"\nrate = \"600/min\"\n\n[[limits]]\nname = \"aql-daily\"\nkey = \"claim:team\"\nrate = \"10000/day\"\nkind = \"quota\"\npaths = [\"/ehrbase/rest/openehr/v1/query\"]\n[limits_store]\nurl = \"redis://cache:6380/1\"\non_error = \"deny\"\n[revocation]\nfile = \"/etc/entragate/revoked.txt\"\n",
        )
        .expect("config");
        assert_eq!(c.limits.len(), 2);
        assert_eq!((c.limits[0].burst, c.limits[0].kind), (10, LimitKind::Rate));
        assert_eq!(c.limits[1].key, LimitKey::Claim("team".into()));
        assert_eq!(
            (c.limits[1].burst, c.limits[1].kind),
            (10_000, LimitKind::Quota)
        );
        assert_eq!(c.limits[1].paths, ["/ehrbase/rest/openehr/v1/query"]);
        let redis = c.limits_store.redis.expect("redis");
        assert_eq!(
            (redis.host.as_str(), redis.port, redis.db),
            ("cache", 6380, 1)
        );
        assert_eq!(c.limits_store.on_error, OnError::Deny);
        assert_eq!(c.limits_store.timeout, Duration::from_millis(100));
        assert_eq!(
            c.revocation.file.as_deref(),
            Some("/etc/entragate/revoked.txt")
        );
        let c = load("").expect("config");
        assert!(c.limits.is_empty() && c.limits_store.redis.is_none());
        assert_eq!(c.limits_store.on_error, OnError::Allow);
    }

    #[test]
    fn the_store_url_may_come_from_the_environment() {
        let toml = "[entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"https://api.contoso.com\"]\n";
        let env = [(
            "ENTRAGATE_LIMITS_STORE__URL".to_owned(),
            "redis://:s3cret@cache:6380/2".to_owned(),
        )];
        let c = crate::config::Config::load(toml, &env, &|_| Err(std::io::Error::other("no")))
            .expect("config");
        let r = c.limits_store.redis.expect("redis");
        assert_eq!(
            (r.port, r.db, r.password.as_deref()),
            (6380, 2, Some("s3cret"))
        );
    }

    #[test]
    fn every_problem_names_its_key() {
        let e = load(
            "[[limits]]\nname = \"a b\"\nkey = \"session\"\nrate = \"5/week\"\nburst = 0\nkind = \"sliding\"\napis = [\"ehrbase\"]\npaths = [\"nope\"]\nextra = 1\n[[limits]]\nname = \"q\"\nkey = \"ip\"\nrate = \"1/s\"\nkind = \"quota\"\nburst = 3\n[[limits]]\nname = \"q\"\nkey = \"user\"\nrate = \"1/s\"\n[limits_store]\nurl = \"http://x\"\non_error = \"maybe\"\ntimeout = \"0s\"\n",
        )
        .expect_err("bad");
        let text = e.to_string();
        for key in [
            "limits[0].name",
            "limits[0].key",
            "limits[0].rate",
            "limits[0].burst",
            "limits[0].kind",
            "limits[0].paths",
            "limits[0].extra",
            "limits[1].burst",
            "limits[2].name",
            "limits_store.url",
            "limits_store.on_error",
            "limits_store.timeout",
        ] {
            assert!(text.contains(key), "{key} not named in:\n{text}");
        }
        assert!(
            text.contains("limits[0].apis")
                && text.contains("\"ehrbase\" names no API (the APIs are: default)"),
            "{text}"
        );
    }

    #[test]
    fn paths_match_segment_wise_with_one_segment_wildcards() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/ehrbase", "/ehrbase"));
        assert!(path_matches("/ehrbase", "/ehrbase/rest/x"));
        assert!(!path_matches("/ehrbase", "/ehrbase2"));
        assert!(path_matches("/ehr/*/composition", "/ehr/42/composition/7"));
        assert!(!path_matches("/ehr/*/composition", "/ehr/42"));
        assert!(!path_matches("/ehr/*/composition", "/ehr/42/other"));
    }
}
