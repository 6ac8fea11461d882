//! Property tests (proptest) over the entry points the fuzz targets cover (docs/fuzzing.md):
//! bearer parsing, token decoding, path normalisation, the config loader, forward-auth header
//! reading and claim validation. They run on stable in `cargo test`, with case counts kept
//! small enough for the whole module to finish in seconds in a debug build; the fuzz targets
//! are the long-running counterpart.
//!
//! No token string is written here: every token is assembled from generated JSON.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entragate::auth::bearer::{self, Bearer};
use entragate::auth::token::{Audience, Claims, decode};
use entragate::auth::{Reason, Validator};
use entragate::config::{Algorithm, Config, ConfigError, Entra, MAX_DURATION};
use entragate::forward_auth::{
    BadForwarded, X_FORWARDED_METHOD, X_FORWARDED_URI, X_ORIGINAL_METHOD, X_ORIGINAL_URI,
    X_ORIGINAL_URL, original, original_origin,
};
use entragate::keys::{IssuerPolicy, KeyStore};
use entragate::path::{BadPath, is_under, normalize};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        // No persistence file in the source tree: a failure prints its input, which becomes a
        // regression test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// --- bearer -------------------------------------------------------------------------------

/// An RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn b64token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/-]{1,64}={0,2}"
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn bearer_returns_the_token_after_any_casing_and_blanks(
        token in b64token(),
        scheme in "[bB][eE][aA][rR][eE][rR]",
        gap in "[ ]{1,3}",
        lead in "[ \t]{0,2}",
        trail in "[ \t]{0,2}",
    ) {
        let value = format!("{lead}{scheme}{gap}{token}{trail}");
        prop_assert_eq!(bearer::parse(value.as_bytes()), Bearer::Token(token.as_str()));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&value).expect("value"));
        prop_assert_eq!(bearer::extract(&headers), Bearer::Token(token.as_str()));
        // A second Authorization header is never resolved by picking one.
        headers.append(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        prop_assert_eq!(bearer::extract(&headers), Bearer::Duplicate);
    }

    #[test]
    fn bearer_refuses_a_token_with_any_other_character(
        head in b64token().prop_map(|t| t.trim_end_matches('=').to_owned()),
        bad in "[!\"#$%&'(),:;<>?@\\[\\\\\\]^`{|}*]",
        tail in "[A-Za-z0-9]{0,8}",
    ) {
        let value = format!("Bearer {head}{bad}{tail}");
        prop_assert_eq!(bearer::parse(value.as_bytes()), Bearer::Malformed);
    }

    #[test]
    fn bearer_never_panics_and_a_token_is_a_slice_after_the_scheme(value in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Bearer::Token(t) = bearer::parse(&value) {
            let offset = t.as_ptr() as usize - value.as_ptr() as usize;
            prop_assert!(offset + t.len() <= value.len());
            prop_assert!(String::from_utf8_lossy(&value[..offset]).trim().eq_ignore_ascii_case("bearer"));
        }
    }

    #[test]
    fn other_schemes_are_missing_not_malformed(scheme in "(Basic|Negotiate|NTLM|Digest|Bearerx)", rest in "[A-Za-z0-9=]{0,20}") {
        let value = format!("{scheme} {rest}");
        prop_assert_eq!(bearer::parse(value.as_bytes()), Bearer::Missing);
    }
}

// --- token decoding -------------------------------------------------------------------------

fn jws(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

fn claim_text() -> impl Strategy<Value = String> {
    "[ -~]{0,24}"
}

prop_compose! {
    /// A payload of string and numeric claims (each possibly absent) and whether `aud` is an
    /// array.
    fn payload()(
        iss in proptest::option::of(claim_text()),
        tid in proptest::option::of(claim_text()),
        azp in proptest::option::of(claim_text()),
        scp in proptest::option::of("[a-z_.]{1,12}( [a-z_.]{1,12}){0,3}"),
        aud in proptest::collection::vec(claim_text(), 0..3),
        aud_array in any::<bool>(),
        exp in proptest::option::of(-1.0e12f64..1.0e12),
        nbf in proptest::option::of(0i64..4_000_000_000),
        extra in proptest::collection::btree_map("[a-z]{1,8}", claim_text(), 0..3),
    ) -> Value {
        let mut p = serde_json::Map::new();
        for (k, v) in extra {
            p.insert(format!("x_{k}"), json!(v));
        }
        for (k, v) in [("iss", iss), ("tid", tid), ("azp", azp), ("scp", scp)] {
            if let Some(v) = v {
                p.insert(k.into(), json!(v));
            }
        }
        match (aud_array, aud.first()) {
            (true, _) => { p.insert("aud".into(), json!(aud)); }
            (false, Some(a)) => { p.insert("aud".into(), json!(a)); }
            (false, None) => {}
        }
        if let Some(exp) = exp {
            p.insert("exp".into(), json!(exp));
        }
        if let Some(nbf) = nbf {
            p.insert("nbf".into(), json!(nbf));
        }
        Value::Object(p)
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn decoded_claims_are_the_payload_json(p in payload(), kid in "[A-Za-z0-9_-]{1,16}", sig in "[A-Za-z0-9_-]{0,43}") {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": kid});
        let token = jws(&header, &p, &sig);
        let d = decode(&token).expect("a well-formed token decodes");
        // Compared with the payload as JSON text reads back (serde_json's default number
        // parser may differ from the generated f64 in the last bit; both sides use it).
        let p: Value = serde_json::from_str(&p.to_string()).expect("JSON");
        prop_assert_eq!(d.header.alg.as_str(), "RS256");
        prop_assert_eq!(d.header.kid.as_deref(), Some(kid.as_str()));
        prop_assert_eq!(d.signature, sig.as_str());
        prop_assert_eq!(format!("{}.{}", d.signing_input, d.signature), token.clone());
        let c = &d.claims;
        for (name, typed) in [("iss", &c.iss), ("tid", &c.tid), ("azp", &c.azp), ("scp", &c.scp)] {
            prop_assert_eq!(p.get(name).and_then(Value::as_str), typed.as_deref(), "{}", name);
        }
        prop_assert_eq!(p.get("exp").and_then(Value::as_f64), c.exp);
        prop_assert_eq!(p.get("nbf").and_then(Value::as_f64), c.nbf);
        let aud: Option<Vec<&str>> = c.aud.as_ref().map(|a| a.iter().collect());
        let raw: Option<Vec<&str>> = p.get("aud").map(|a| match a {
            Value::Array(v) => v.iter().filter_map(Value::as_str).collect(),
            other => vec![other.as_str().expect("string aud")],
        });
        prop_assert_eq!(aud, raw);
        for (k, v) in p.as_object().expect("object") {
            if k.starts_with("x_") {
                prop_assert_eq!(c.values(k), Some(vec![v.as_str().expect("string")]));
            }
        }
    }

    #[test]
    fn any_change_to_the_part_count_is_malformed(p in payload(), extra in "[A-Za-z0-9_-]{0,8}", cut in any::<bool>()) {
        let token = jws(&json!({"alg": "RS256", "kid": "k"}), &p, "c2ln");
        let changed = if cut {
            token.rsplit_once('.').expect("three parts").0.to_owned()
        } else {
            format!("{token}.{extra}")
        };
        prop_assert_eq!(decode(&changed).err(), Some(Reason::Malformed));
    }

    #[test]
    fn a_repeated_claim_is_malformed(p in payload(), name in "(iss|aud|exp|tid|azp)") {
        prop_assume!(p.get(&name).is_some());
        let body = p.to_string();
        let value = p.get(&name).expect("present").to_string();
        let twice = format!("{{\"{name}\":{value},{}", &body[1..]);
        let token = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(twice)
        );
        prop_assert_eq!(decode(&token).err(), Some(Reason::Malformed));
    }

    #[test]
    fn decode_never_panics(s in "[A-Za-z0-9_.=+/-]{0,120}") {
        if let Ok(d) = decode(&s) {
            prop_assert!(s.starts_with(d.signing_input));
            prop_assert!(d.claims.exp.is_none_or(f64::is_finite));
        }
    }
}

// --- path normalisation ---------------------------------------------------------------------

/// A path segment as clients write it: plain characters, dots, escapes and parameters.
fn raw_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9_~-]{1,8}",
        1 => Just(String::new()),
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => "[a-z]{1,4};[a-z]=[0-9]",
        1 => "%[0-9A-Fa-f]{2}",
        1 => Just("%2e%2E".to_owned()),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(raw_segment(), 0..8).prop_map(|s| format!("/{}", s.join("/")))
}

/// Writes a normalised path back as a client would have to send it: `%` and `;` escaped,
/// so normalising it again decodes exactly once more.
fn reencode(p: &str) -> String {
    p.replace('%', "%25").replace(';', "%3B")
}

/// `/`-led path of plain segments (no dots, no escapes).
fn plain_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[A-Za-z0-9_~-]{1,8}", 0..6).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn normalising_is_stable(raw in raw_path()) {
        let Ok(once) = normalize(&raw) else { return Ok(()); };
        // A normal path comes back as it is, without a copy.
        let written = reencode(&once);
        let again = normalize(&written).expect("a normalised path normalises");
        prop_assert_eq!(again.as_ref(), once.as_ref());
        if !once.contains(['%', ';']) {
            prop_assert!(matches!(normalize(&once), Ok(Cow::Borrowed(p)) if p == once.as_ref()));
        }
    }

    #[test]
    fn no_dot_segment_survives_and_none_climbs_above_the_root(raw in raw_path()) {
        match normalize(&raw) {
            Ok(p) => {
                prop_assert!(p.starts_with('/'));
                prop_assert!(p == "/" || !p.ends_with('/'));
                for seg in p.split('/').skip(1).filter(|s| !s.is_empty()) {
                    prop_assert!(seg != "." && seg != "..", "{:?} -> {:?}", raw, p);
                }
            }
            Err(BadPath) => {
                // Refused only for `..` above the root or an escape that is not a clean byte
                // of a segment.
                let depth_goes_negative = {
                    let mut depth = 0i32;
                    raw.split('/').any(|s| {
                        let s = s.split(';').next().unwrap_or("");
                        let s = s.replace("%2e", ".").replace("%2E", ".");
                        match s.as_str() {
                            ".." => { depth -= 1; depth < 0 }
                            "" | "." => false,
                            _ => { depth += 1; false }
                        }
                    })
                };
                prop_assert!(depth_goes_negative || raw.contains('%'), "{:?}", raw);
            }
        }
    }

    #[test]
    fn percent_encoding_a_character_changes_nothing(p in plain_path(), at in any::<prop::sample::Index>(), upper in any::<bool>()) {
        prop_assume!(p.len() > 1);
        let bytes = p.as_bytes();
        // Encode one character of a segment (never a `/`).
        let i = 1 + at.index(bytes.len() - 1);
        prop_assume!(bytes[i] != b'/');
        let escape = if upper { format!("%{:02X}", bytes[i]) } else { format!("%{:02x}", bytes[i]) };
        let encoded = format!("{}{escape}{}", &p[..i], &p[i + 1..]);
        prop_assert_eq!(normalize(&encoded).expect("encoded"), normalize(&p).expect("plain"));
    }

    #[test]
    fn a_detour_through_dot_dot_lands_where_it_started(p in plain_path(), detour in "[a-z]{1,6}", dots in "(\\.\\.|%2e%2e|%2E\\.)") {
        let via = format!("/{detour}/{dots}{p}");
        prop_assert_eq!(normalize(&via).expect("detour"), normalize(&p).expect("plain"));
        // An escaped `/` is never a separator, so it cannot be used to climb either.
        let hidden = format!("/{detour}%2F..{p}");
        prop_assert_eq!(normalize(&hidden), Err(BadPath));
        // Climbing above the root is refused, not clamped.
        let above = format!("/..{p}");
        prop_assert_eq!(normalize(&above), Err(BadPath));
    }

    #[test]
    fn prefix_rules_match_whole_segments(p in plain_path(), q in "[A-Za-z0-9]{1,6}") {
        let p = normalize(&p).expect("plain").into_owned();
        prop_assert!(is_under(&p, "/"));
        prop_assert!(is_under(&p, &p));
        let longer = if p == "/" { format!("/{q}") } else { format!("{p}{q}") };
        prop_assert!(!is_under(&p, &longer));
        let child = if p == "/" { format!("/{q}") } else { format!("{p}/{q}") };
        prop_assert!(is_under(&child, &p));
        prop_assert!(p == "/" || !is_under(&longer, &p));
    }
}

// --- the config loader ----------------------------------------------------------------------

const MINIMAL: &str = r#"
[entra]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
audiences = ["https://api.contoso.com"]
"#;

fn no_files(_: &str) -> std::io::Result<String> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no such file",
    ))
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load(text, &env, &no_files)
}

/// Keys of every table that the minimal config does not set itself (so a generated value is
/// the only one there), from the reader's own list, without the keys that read files
/// (`*_file`, certificates and keys).
fn keys() -> Vec<&'static str> {
    const READ_FILES: [&str; 5] = [
        "server.tls_cert",
        "server.tls_key",
        "upstream.ca_file",
        "upstream.client_cert",
        "upstream.client_key",
    ];
    entragate::config::KNOWN_KEYS
        .iter()
        .copied()
        .filter(|k| !matches!(*k, "entra.tenant_id" | "entra.audiences"))
        .filter(|k| !k.ends_with("_file") && !READ_FILES.contains(k))
        .collect()
}

/// A TOML value of any type, with the edges the loader must survive.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just(i64::MAX.to_string()),
        Just(i64::MIN.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}").replace("NaN", "nan")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
        (any::<u64>(), "(ns|ms|s|m|h|d|w|M|y)").prop_map(|(n, u)| format!("\"{n}{u}\"")),
        (any::<u64>(), "(B|KiB|MiB|GiB|KB|MB|GB|kib)").prop_map(|(n, u)| format!("\"{n}{u}\"")),
        proptest::collection::vec("[ -~]{0,8}", 0..3).prop_map(|v| format!("{v:?}")),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("[1, \"a\"]".to_owned()),
    ]
}

/// `MINIMAL` with `key = value` written into its table.
fn with_key(key: &str, value: &str) -> String {
    let (table, name) = key.split_once('.').expect("table.key");
    if table == "entra" {
        format!("{MINIMAL}{name} = {value}\n")
    } else {
        format!("{MINIMAL}\n[{table}]\n{name} = {value}\n")
    }
}

proptest! {
    #![proptest_config(cases(384))]

    #[test]
    fn any_value_of_a_known_key_loads_or_is_blamed_on_that_key(key in proptest::sample::select(keys()), value in toml_value()) {
        let text = with_key(key, &value);
        // The minimal config is valid, so a refusal comes from this one key: each problem
        // names it, as its key, an entry of it (`dev.users[0].username` for an array of
        // tables) or (for a check across keys) in its message.
        match load(&text, &[]) {
            Ok(c) => {
                for d in [c.server.shutdown_grace, c.entra.jwks_max_stale, c.entra.clock_skew, c.upstream.timeout] {
                    prop_assert!(d <= MAX_DURATION);
                }
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    prop_assert!(p.key == key || p.key.starts_with(&format!("{key}[")) || p.message.contains(key), "{} = {}: {}", key, value, p);
                }
            }
        }
    }

    #[test]
    fn the_same_value_from_the_environment_is_blamed_on_its_variable(key in proptest::sample::select(keys()), value in "[ -~]{0,20}") {
        let (table, name) = key.split_once('.').expect("table.key");
        let var = format!("ENTRAGATE_{}__{}", table.to_ascii_uppercase(), name.to_ascii_uppercase());
        if let Err(e) = load(MINIMAL, &[(var.as_str(), value.as_str())]) {
            for p in &e.problems {
                prop_assert!(p.key == key || p.key.starts_with(&format!("{key}[")) || p.message.contains(key), "{}={:?}: {}", var, value, p);
                if p.key == key {
                    prop_assert_eq!(p.env_var.as_deref(), Some(var.as_str()));
                }
            }
        }
    }

    #[test]
    fn durations_load_up_to_the_limit_and_no_further(secs in prop_oneof![0u64..5000, any::<u64>()], unit in "(s|m|h|d|y)", extra_ms in 0u32..2000) {
        let value = format!("\"{secs}{unit} {extra_ms}ms\"");
        let per_unit: u128 = match unit.as_str() {
            "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400, _ => 31_557_600,
        };
        let total_ms = u128::from(secs) * per_unit * 1000 + u128::from(extra_ms);
        let fits = total_ms <= MAX_DURATION.as_millis();
        match load(&with_key("server.shutdown_grace", &value), &[]) {
            Ok(c) => {
                prop_assert!(fits, "{} loaded", value);
                prop_assert_eq!(c.server.shutdown_grace.as_millis(), total_ms);
            }
            Err(e) => {
                prop_assert!(!fits, "{} refused: {}", value, e);
                prop_assert_eq!(e.problems[0].key.as_str(), "server.shutdown_grace");
            }
        }
    }

    #[test]
    fn sizes_are_bytes_or_a_problem(n in prop_oneof![-10i64..5000, any::<i64>()], unit in "(|B|KiB|MiB|GiB|KB|MB|GB)", quoted in any::<bool>()) {
        let value = if quoted || !unit.is_empty() { format!("\"{n}{unit}\"") } else { n.to_string() };
        let factor: u128 = match unit.as_str() {
            "" | "B" => 1, "KiB" => 1 << 10, "MiB" => 1 << 20, "GiB" => 1 << 30,
            "KB" => 1_000, "MB" => 1_000_000, _ => 1_000_000_000,
        };
        let expected = u128::try_from(n).ok().map(|n| n * factor).filter(|b| *b <= u128::from(u64::MAX));
        match (load(&with_key("server.max_body", &value), &[]), expected) {
            (Ok(c), Some(b)) => prop_assert_eq!(c.server.max_body.map(u128::from), (b > 0).then_some(b)),
            (Err(e), None) => prop_assert_eq!(e.problems[0].key.as_str(), "server.max_body"),
            (got, want) => prop_assert!(false, "{} -> {:?}, expected {:?}", value, got.map(|c| c.server.max_body), want),
        }
    }
}

// --- forward-auth headers -------------------------------------------------------------------

fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append((*n).clone(), HeaderValue::from_str(v).expect("value"));
    }
    h
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "\\?[a-z=&/%]{0,12}", "#[a-z]{0,6}"]
}

fn method() -> impl Strategy<Value = Method> {
    proptest::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ])
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn every_family_yields_the_same_method_and_path(
        path in "/[A-Za-z0-9/%._~-]{0,24}",
        q in query(),
        host in "[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{2,5})?",
        m in method(),
        family in 0usize..4,
    ) {
        let target = format!("{path}{q}");
        let url = format!("https://{host}{target}");
        let h = match family {
            0 => headers(&[(&X_FORWARDED_METHOD, m.as_str()), (&X_FORWARDED_URI, &target)]),
            1 => headers(&[(&X_ORIGINAL_METHOD, m.as_str()), (&X_ORIGINAL_URL, &url)]),
            2 => headers(&[(&X_ORIGINAL_METHOD, m.as_str()), (&X_ORIGINAL_URL, &url), (&X_ORIGINAL_URI, &target)]),
            _ => headers(&[(&X_FORWARDED_METHOD, m.as_str()), (&X_FORWARDED_URI, &url)]),
        };
        let o = original(&Method::HEAD, "/own", &h, true).expect("agreeing headers");
        prop_assert!(o.forwarded);
        prop_assert_eq!(&o.method, &m);
        prop_assert_eq!(o.path, path.as_str());
        // Untrusted, the same headers change nothing.
        let own = original(&Method::HEAD, "/own", &h, false).expect("own");
        prop_assert!(!own.forwarded);
        prop_assert_eq!(own.path, "/own");
        prop_assert_eq!(own.method, Method::HEAD);
        // The origin follows X-Original-URL when there is one.
        if family == 1 || family == 2 {
            let origin = format!("https://{host}");
            prop_assert_eq!(original_origin(&h, true), Some(origin));
        }
    }

    #[test]
    fn headers_naming_different_paths_or_methods_are_refused(
        a in "/[a-z0-9]{1,12}",
        b in "/[a-z0-9]{1,12}",
        q in query(),
        ma in method(),
        mb in method(),
        which in 0usize..3,
    ) {
        let b_target = format!("{b}{q}");
        let b_url = format!("http://gw{b_target}");
        let (other, value) = match which {
            0 => (&X_FORWARDED_URI, b_target.as_str()),
            1 => (&X_ORIGINAL_URI, b_target.as_str()),
            _ => (&X_ORIGINAL_URL, b_url.as_str()),
        };
        let h = headers(&[(&X_ORIGINAL_URI, &a), (other, value)]);
        let got = original(&Method::GET, "/own", &h, true);
        if a == b {
            prop_assert_eq!(got.map(|o| o.path), Ok(a.as_str()));
        } else {
            prop_assert_eq!(got, Err(BadForwarded));
        }
        let h = headers(&[(&X_FORWARDED_METHOD, ma.as_str()), (&X_ORIGINAL_METHOD, mb.as_str())]);
        let got = original(&Method::GET, "/own", &h, true).map(|o| o.method);
        prop_assert_eq!(got, if ma == mb { Ok(ma) } else { Err(BadForwarded) });
    }

    #[test]
    fn an_origin_only_from_plain_hosts(scheme in "(http|https|ftp|javascript)", host in "[ -~]{0,16}") {
        let url = format!("{scheme}://{host}/x");
        let Ok(v) = HeaderValue::from_str(&url) else { return Ok(()); };
        let mut h = HeaderMap::new();
        h.insert(X_ORIGINAL_URL, v);
        let host_part = &host[..host.find(['/', '?', '#']).unwrap_or(host.len())];
        let plain = matches!(scheme.as_str(), "http" | "https")
            && !host_part.is_empty()
            && host_part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        let got = original_origin(&h, true);
        prop_assert_eq!(got, plain.then(|| format!("{scheme}://{host_part}")));
    }
}

// --- claim validation -----------------------------------------------------------------------

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
const AUDIENCES: [&str; 2] = [
    "https://api.contoso.com",
    "api://6e74172b-be56-4843-9ff4-e66a39bb12e3",
];
const NOW: f64 = 1_800_000_000.0;
const SKEW_SECS: u64 = 300;
const MAX_LIFETIME_SECS: u64 = 28 * 3600;

fn validator() -> Validator {
    let entra = Entra {
        tenant_id: TENANT.into(),
        authority: "https://login.microsoftonline.com".into(),
        audiences: AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
        allowed_tenants: vec![TENANT.into()],
        allowed_client_ids: vec![CLIENT.into()],
        algorithms: vec![Algorithm::RS256],
        clock_skew: Duration::from_secs(SKEW_SECS),
        max_token_lifetime: Duration::from_secs(MAX_LIFETIME_SECS),
        jwks_refresh: Duration::from_secs(3600),
        jwks_min_refetch: Duration::from_secs(300),
        jwks_max_stale: Duration::from_secs(86_400),
        metadata_timeout: Duration::from_secs(10),
        cloud: entragate::config::Cloud::Global,
        jwks_file: None,
        jwks_file_reload: Duration::from_secs(10),
    };
    Validator::new(
        &entra,
        Arc::new(KeyStore {
            issuers: Vec::new(),
        }),
    )
}

fn policy() -> IssuerPolicy {
    IssuerPolicy {
        audiences: AUDIENCES.iter().map(|s| (*s).to_owned()).collect(),
        allowed_client_ids: vec![CLIENT.into()],
        allowed_tenants: vec![TENANT.into()],
    }
}

/// Claims that pass every check at `NOW`.
fn good_claims() -> Claims {
    Claims {
        iss: Some(format!("https://sts.windows.net/{TENANT}/")),
        aud: Some(Audience::One(AUDIENCES[0].into())),
        exp: Some(NOW + 3600.0),
        nbf: Some(NOW - 60.0),
        tid: Some(TENANT.into()),
        appid: Some(CLIENT.into()),
        ..Claims::default()
    }
}

fn failures(c: &Claims) -> Vec<Reason> {
    validator().claim_failures(c, &policy(), NOW).collect()
}

fn skew() -> f64 {
    // The validator's own reading of the configured skew.
    validator().clock_skew()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_token_for_another_audience_is_refused(aud in proptest::collection::vec("[ -~]{0,30}", 0..4), array in any::<bool>()) {
        let foreign = |a: &String| !AUDIENCES.contains(&a.strip_suffix('/').unwrap_or(a));
        prop_assume!(aud.iter().all(foreign));
        let mut c = good_claims();
        c.aud = Some(match (array, aud.first()) {
            (false, Some(a)) => Audience::One(a.clone()),
            _ => Audience::Many(aud.clone()),
        });
        prop_assert_eq!(failures(&c), vec![Reason::AudienceMismatch]);
        // One configured audience among them is enough, with or without a trailing `/`.
        let mut with_ours = aud.clone();
        with_ours.push(format!("{}/", AUDIENCES[1]));
        c.aud = Some(Audience::Many(with_ours));
        prop_assert_eq!(failures(&c), Vec::<Reason>::new());
    }

    #[test]
    fn expiry_holds_exactly_up_to_the_skew(offset in -1.0e9f64..1.0e9) {
        let mut c = good_claims();
        let exp = NOW + offset;
        c.exp = Some(exp);
        let expired = NOW > exp + skew();
        prop_assert_eq!(failures(&c).contains(&Reason::Expired), expired, "exp {}", exp);
        // Past by more than the skew is always refused.
        c.exp = Some(NOW - skew() - offset.abs() - 1.0);
        prop_assert_eq!(failures(&c), vec![Reason::Expired]);
    }

    #[test]
    fn lifetime_is_bounded_from_iat_and_from_now(
        ahead in 0.0f64..1.0e6,
        issued in proptest::option::of(-1.0e6f64..1.0e6),
    ) {
        let mut c = good_claims();
        let exp = NOW + ahead;
        c.exp = Some(exp);
        c.iat = issued.map(|i| NOW + i);
        let max = MAX_LIFETIME_SECS as f64;
        let too_long = exp - NOW > max + skew() || c.iat.is_some_and(|iat| exp - iat > max);
        prop_assert_eq!(
            failures(&c),
            if too_long { vec![Reason::LifetimeTooLong] } else { vec![] },
            "exp {} iat {:?}", exp, c.iat
        );
    }

    #[test]
    fn not_before_holds_exactly_up_to_the_skew(offset in -1.0e9f64..1.0e9) {
        let mut c = good_claims();
        c.nbf = Some(NOW + offset);
        let early = NOW + skew() < NOW + offset;
        prop_assert_eq!(failures(&c), if early { vec![Reason::NotYetValid] } else { vec![] });
    }

    #[test]
    fn only_the_allowed_tenant_and_client_pass(
        tid in proptest::option::of("[0-9a-fA-F-]{36}"),
        azp in proptest::option::of("[0-9a-fA-F-]{36}"),
        upper in any::<bool>(),
    ) {
        let mut c = good_claims();
        c.tid = tid.clone();
        c.appid = None;
        c.azp = azp.clone();
        let tid_ok = tid.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(TENANT));
        let client_ok = azp.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(CLIENT));
        let mut want = Vec::new();
        if !tid_ok { want.push(Reason::TenantNotAllowed); }
        if !client_ok { want.push(Reason::ClientNotAllowed); }
        prop_assert_eq!(failures(&c), want);
        // Case does not matter for GUIDs.
        let case = |s: &str| if upper { s.to_ascii_uppercase() } else { s.to_owned() };
        c.tid = Some(case(TENANT));
        c.azp = Some(case(CLIENT));
        prop_assert_eq!(failures(&c), Vec::<Reason>::new());
    }

    #[test]
    fn missing_required_claims_are_named(drop_exp in any::<bool>(), drop_aud in any::<bool>()) {
        let mut c = good_claims();
        if drop_exp { c.exp = None; }
        if drop_aud { c.aud = None; }
        let want: Vec<Reason> = [drop_exp, drop_aud].iter().filter(|d| **d).map(|_| Reason::MissingClaim).collect();
        prop_assert_eq!(failures(&c), want);
    }
}
