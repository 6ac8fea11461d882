//! `entragate explain TOKEN`: what a token is, and whether this config accepts it, with every
//! reason why not and the fix in Entra terms.
//!
//! The token is decoded by the gateway's own decoder and judged by the validator's own checks
//! ([`Validator::diagnose`]); the route rules come from the config's `[[routes]]`. The keys
//! are fetched as `serve` fetches them, so the signature is verified too; with `--offline`, or
//! when the identity provider cannot be reached, only the claims are judged. The signature is
//! never printed, and the token never goes to a log.

mod fixes;
mod report;

pub use report::{About, Explanation, Finding, KeyFetch};

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::{BAD_CONFIG, FAILED, ms};
use crate::auth::diagnose::{IssuerFinding, SignatureFinding, expected_issuers};
use crate::auth::validate::unix_now;
use crate::auth::{Challenges, Policy, Reason, Validator, token};
use crate::cli::Format;
use crate::config::{Config, Mode};
use crate::gateway::Refusal;
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::path;

/// What to evaluate the token for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Do not fetch keys.
    pub offline: bool,
    pub method: http::Method,
    pub path: String,
}

/// Why `explain` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no token given: pass it as the argument, or \"-\" and pipe it in")]
    NoToken,
    #[error("cannot read the token from standard input: {0}")]
    Stdin(std::io::Error),
    #[error(
        "--path {0:?} is not a path the gateway would accept (it must start with '/' and decode cleanly)"
    )]
    BadPath(String),
    #[error("{0}")]
    Client(String),
    #[error("the challenge headers cannot be built: {0}")]
    Challenge(String),
}

/// The command line of `entragate explain`.
#[derive(Debug)]
pub struct Args {
    pub config: std::path::PathBuf,
    pub token: String,
    pub offline: bool,
    pub method: String,
    pub path: String,
    pub format: Format,
}

/// `entragate explain`: prints the explanation; returns the exit code (0 accepted, 1 refused
/// or the identity provider's client could not start, 2 bad usage or bad config).
pub async fn command(args: Args) -> u8 {
    let config = match Config::load_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("entragate explain: {}: {e}", args.config.display());
            return BAD_CONFIG;
        }
    };
    let Ok(method) = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) else {
        eprintln!(
            "entragate explain: --method {:?} is not an HTTP method",
            args.method
        );
        return BAD_CONFIG;
    };
    let token = match read_token(&args.token, std::io::stdin().lock()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("entragate explain: {e}");
            return BAD_CONFIG;
        }
    };
    let opts = Options {
        offline: args.offline,
        method,
        path: args.path,
    };
    match explain(&config, &token, &opts, &mut std::io::stderr()).await {
        Ok(x) => {
            match args.format {
                Format::Text => print!("{}", x.to_text()),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&x).unwrap_or_default())
                }
            }
            if x.accepted { 0 } else { FAILED }
        }
        Err(e @ ExplainError::Client(_)) => {
            eprintln!("entragate explain: {e}");
            FAILED
        }
        Err(e) => {
            eprintln!("entragate explain: {e}");
            BAD_CONFIG
        }
    }
}

/// The token from the argument or, for `-`, from `stdin`: surrounding blanks and a leading
/// `Bearer ` (as copied from a request) are removed.
///
/// # Errors
/// An empty token, or unreadable input.
pub fn read_token(arg: &str, stdin: impl Read) -> Result<String, ExplainError> {
    let mut text = String::new();
    let raw = if arg == "-" {
        let mut input = stdin;
        input
            .read_to_string(&mut text)
            .map_err(ExplainError::Stdin)?;
        text.as_str()
    } else {
        arg
    };
    let mut t = raw.trim();
    if t.len() > 7 && t[..7].eq_ignore_ascii_case("bearer ") {
        t = t[7..].trim_start();
    }
    if t.is_empty() {
        return Err(ExplainError::NoToken);
    }
    Ok(t.to_owned())
}

/// Explains `token` against `config`. Progress (key fetches) goes to `progress`.
///
/// # Errors
/// A `--path` the gateway could not route, or an HTTP client that cannot be built.
pub async fn explain(
    config: &Config,
    token: &str,
    opts: &Options,
    progress: &mut dyn std::io::Write,
) -> Result<Explanation, ExplainError> {
    let normalized = path::normalize(&opts.path)
        .ok()
        .filter(|_| opts.path.starts_with('/'))
        .ok_or_else(|| ExplainError::BadPath(opts.path.clone()))?;
    let challenges = Challenges::new(&config.challenge, config.server.public_url.as_deref())
        .map_err(|e| ExplainError::Challenge(e.to_string()))?;
    let status = |r: Reason| status_of(r, config.server.mode, &challenges);
    let client = crate::app::idp_client(config.entra.metadata_timeout)
        .map_err(|e| ExplainError::Client(e.to_string()))?;
    let keys = Arc::new(KeyStore::new(
        &config.key_entra(),
        &config.oidc,
        &client,
        &Metrics::new(),
    ));
    let validator = Validator::new(&config.entra, Arc::clone(&keys));
    // The API the gateway would pick: the longest prefix the path is under.
    let api = config
        .apis
        .iter()
        .filter(|a| path::is_under(&normalized, &a.prefix))
        .max_by_key(|a| a.prefix.len());
    let policy = Policy::new(
        api.map(|a| config.routes_of(a).to_vec())
            .unwrap_or_default(),
    );
    let route = policy.route(&opts.method, &normalized);
    let api_text = match api {
        _ if config.apis.len() == 1 && config.apis[0].prefix == "/" => String::new(),
        Some(a) => format!("API {} (prefix {}), ", a.name, a.prefix),
        None => "under no [[apis]] prefix (404 once authenticated), ".into(),
    };
    let step_up = |r: &crate::config::Route| {
        r.auth_context.as_ref().map_or_else(String::new, |c| {
            format!(", step-up: acrs must contain {c} (else 401 with Entra's claims challenge)")
        })
    };
    let ip_text = |f: &crate::config::IpFilter| {
        if f.is_empty() {
            String::new()
        } else {
            format!(
                ", client address: allow [{}], deny [{}] (not checked here)",
                f.allow
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                f.deny
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    };
    let route_text = match route {
        None => format!(
            "{} {}: {api_text}no [[routes]] rule matches, a valid token suffices{}",
            opts.method,
            opts.path,
            api.map(|a| ip_text(&a.ip)).unwrap_or_default()
        ),
        Some(r) if r.anonymous => format!(
            "{} {}: {api_text}anonymous route {} (a token, if sent, must still be valid){}",
            opts.method,
            opts.path,
            r.path,
            ip_text(&r.ip)
        ),
        Some(r) => format!(
            "{} {}: {api_text}route {} (scopes [{}], roles [{}], clients [{}], claims {:?}{}){}",
            opts.method,
            opts.path,
            r.path,
            r.scopes.join(" "),
            r.roles.join(" "),
            r.clients.join(" "),
            r.claims,
            step_up(r),
            ip_text(&r.ip)
        ),
    };

    let Ok(decoded) = token::decode(token) else {
        return Ok(malformed(token, route_text));
    };
    let key_fetches = if opts.offline {
        Vec::new()
    } else {
        load_keys(&keys, progress).await
    };
    let now = unix_now();
    let offline_issuers = expected_issuers(&config.entra, &keys);
    let mut diagnosis = validator
        .diagnose(&decoded, route, &offline_issuers, now)
        .await;
    // What the gateway decides after the token and the route's rules: the API's audiences,
    // the route's authentication context, and a path under no API.
    let claims = &decoded.claims;
    let own_audiences = config.apis.iter().any(|a| a.audiences.is_some());
    let mut more = Vec::new();
    if let Some(a) = api
        && own_audiences
        && claims.ver.is_some()
    {
        let wanted = a.audiences.as_ref().unwrap_or(&config.entra.audiences);
        let ok = claims.aud.iter().flat_map(|x| x.iter()).any(|x| {
            wanted
                .iter()
                .any(|w| crate::keys::trim_slash(w) == crate::keys::trim_slash(x))
        });
        if !ok {
            more.push(Reason::AudienceMismatch);
        }
    }
    if api.is_none() {
        more.push(Reason::NoApi);
    }
    if let Some(context) = route.and_then(|r| r.auth_context.as_deref())
        && !claims.values("acrs").is_some_and(|v| v.contains(&context))
    {
        more.push(Reason::AuthContextRequired);
    }
    for r in more {
        if !diagnosis.reasons.contains(&r) {
            diagnosis.reasons.push(r);
        }
    }

    let header = decode_part(token.split('.').next().unwrap_or(""));
    let claims_json = decode_part(token.split('.').nth(1).unwrap_or(""));
    let cx = fixes::Context {
        config,
        claims: &decoded.claims,
        header: &header,
        diagnosis: &diagnosis,
        route,
        now,
    };
    // The kill switch: the file's entries, and the Redis set's unless --offline.
    let mut all_reasons = diagnosis.reasons.clone();
    if revoked(config, &decoded.claims, opts.offline).await {
        all_reasons.push(Reason::Revoked);
    }
    let route_text = format!(
        "{route_text}{}",
        limits_text(config, &normalized, &decoded.claims)
    );
    let reasons: Vec<Finding> = all_reasons
        .iter()
        .map(|r| {
            let (problem, fix) = fixes::describe(*r, &cx);
            Finding {
                reason: r.as_str(),
                status: status(*r),
                problem,
                fix,
            }
        })
        .collect();
    let issuer = match &diagnosis.issuer {
        IssuerFinding::Matched { source } => format!("trusted ({source} metadata)"),
        IssuerFinding::Expected { source } => {
            format!("the {source} issuer Entra writes for entra.tenant_id (metadata not loaded)")
        }
        IssuerFinding::Mismatch { .. } => "not trusted (see below)".into(),
        IssuerFinding::Missing => "absent".into(),
        IssuerFinding::Unknown => {
            "not checked: the metadata is not loaded and entra.tenant_id is a domain name".into()
        }
    };
    let (signature, verified) = match &diagnosis.signature {
        SignatureFinding::Verified { kid, source } => {
            (format!("verified with key {kid} of {source}"), true)
        }
        SignatureFinding::Failed { reason, source } => {
            (format!("NOT verified ({reason}, keys of {source})"), false)
        }
        SignatureFinding::NotChecked(why) => (
            format!(
                "not checked: {why}{}",
                if opts.offline { " (--offline)" } else { "" }
            ),
            false,
        ),
    };
    Ok(Explanation {
        accepted: reasons.is_empty(),
        status: all_reasons.first().map_or(200, |r| status(*r)),
        header,
        claims: claims_json,
        signature_bytes: signature_len(decoded.signature),
        about: report::about(&decoded.claims, now),
        issuer,
        signature,
        signature_verified: verified,
        route: route_text,
        reasons,
        key_fetches,
    })
}

/// Whether the revocation list (file, and Redis unless `offline`) revokes these claims.
async fn revoked(config: &Config, claims: &crate::auth::Claims, offline: bool) -> bool {
    let mut entries = Vec::new();
    if let Some(file) = &config.revocation.file {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        entries.extend(crate::revocation::entry::parse_file(&text).0);
    }
    if !offline
        && config.limits_store.redis.is_some()
        && let Ok(store) = crate::revocation::store::Store::of(config)
        && let Ok(list) = store.list().await
    {
        entries.extend(list);
    }
    let now = crate::revocation::unix_now();
    crate::revocation::List::of(entries.iter().filter(|e| e.until > now))
        .revoked(claims, now)
        .is_some()
}

/// The `[[limits]]` that count this request, and by which value: `; limits: name (rate
/// per key = value)`.
fn limits_text(config: &Config, path: &str, claims: &crate::auth::Claims) -> String {
    let applying: Vec<String> = config
        .limits
        .iter()
        .filter(|l| {
            l.paths.is_empty() || l.paths.iter().any(|p| crate::config::path_matches(p, path))
        })
        .map(|l| {
            let value = match l.key {
                crate::config::LimitKey::Ip => "the client address".to_owned(),
                _ => crate::limits::key_of(&l.key, claims)
                    .map_or_else(|| "absent: not counted".to_owned(), |v| v.into_owned()),
            };
            format!(
                "{} ({} per {} = {value})",
                l.name,
                l.rate.as_config(),
                l.key.as_config()
            )
        })
        .collect();
    if applying.is_empty() {
        String::new()
    } else {
        format!("; limits: {}", applying.join(", "))
    }
}

/// Fetches every key source (as `serve` does at startup), saying so on `progress`.
async fn load_keys(keys: &KeyStore, progress: &mut dyn std::io::Write) -> Vec<KeyFetch> {
    let mut out = Vec::new();
    for issuer in &keys.issuers {
        let s = &issuer.source;
        let verb = if s.file_path().is_some() {
            "reading"
        } else {
            "fetching"
        };
        let _ = write!(
            progress,
            "{verb} {} keys from {} ... ",
            s.name, s.metadata_url
        );
        let _ = progress.flush();
        let started = Instant::now();
        let result = s.refresh().await;
        let took = ms(started.elapsed());
        let _ = match &result {
            Ok(()) => writeln!(progress, "ok ({took} ms)"),
            Err(e) => writeln!(progress, "failed ({took} ms): {e}"),
        };
        out.push(KeyFetch {
            source: s.name.clone(),
            url: s.metadata_url.clone(),
            ok: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
            ms: took,
        });
    }
    out
}

/// The status the gateway answers `r` with in `mode`, as [`Refusal`] (the one place that
/// decides it) builds it.
fn status_of(r: Reason, mode: Mode, challenges: &Challenges) -> u16 {
    let refusal = match mode {
        Mode::Proxy => Refusal::proxy(r, "", challenges, None),
        Mode::ForwardAuth => Refusal::forward_auth(r, "", challenges, None),
    };
    refusal.status.as_u16()
}

/// The explanation of a token that does not decode: which part is at fault.
fn malformed(token: &str, route: String) -> Explanation {
    let parts: Vec<&str> = token.split('.').collect();
    let problem = if parts.len() != 3 {
        format!(
            "a compact JWS has three parts separated by dots; this has {}",
            parts.len()
        )
    } else if decode_part(parts[0]).is_null() {
        "the first part (header) is not base64url-encoded JSON".to_owned()
    } else if decode_part(parts[1]).is_null() {
        "the second part (claims) is not base64url-encoded JSON".to_owned()
    } else {
        "a member has the wrong type (e.g. exp not a number, aud not a string), or a name appears twice".to_owned()
    };
    let fix = "Pass the access token itself, as sent in `Authorization: Bearer <token>`; an encrypted token (five parts) or an opaque one cannot be used with this API.".to_owned();
    Explanation {
        accepted: false,
        status: 401,
        header: parts.first().map_or(Value::Null, |p| decode_part(p)),
        claims: parts.get(1).map_or(Value::Null, |p| decode_part(p)),
        signature_bytes: parts.get(2).map_or(0, |s| signature_len(s)),
        about: About::default(),
        issuer: "not checked".into(),
        signature: "not checked".into(),
        signature_verified: false,
        route,
        reasons: vec![Finding {
            reason: Reason::Malformed.as_str(),
            status: 401,
            problem,
            fix,
        }],
        key_fetches: Vec::new(),
    }
}

fn decode_part(part: &str) -> Value {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .unwrap_or(Value::Null)
}

fn signature_len(s: &str) -> usize {
    URL_SAFE_NO_PAD.decode(s).map_or(0, |b| b.len())
}
