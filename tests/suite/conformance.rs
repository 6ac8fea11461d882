//! One decision, three doors: the same table of requests sent through the proxy (raw HTTP/1.1
//! on a socket, so the target reaches the gateway exactly as written), forward-auth (the
//! original request in Traefik's `X-Forwarded-Method` / `X-Forwarded-Uri`, from a trusted
//! peer) and `ext_authz` gRPC (a tonic client, raw headers as Envoy's `encode_raw_headers`
//! sends them). For every row the three must agree on the decision (pass or refuse), the
//! reason counted in `/metrics`, the status (forward-auth's in its own shape: SPEC §4 maps
//! 400 and 503 to 401, and 405 and 413 to 403 since nginx passes nothing else; a 429 stays
//! a 429 with its headers, which Traefik, Caddy and Envoy pass on), and the
//! identity headers the upstream ends up with.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use entragate::app::Running;
use entragate::auth::Reason;
use entragate::config::Config;
use entragate::dev::{SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
use entragate::metrics::{Metrics, Outcome};
use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::tokens::{b64, with};
use crate::common::{self, Extra, Harness, TENANT};

const POWER_QUERY: &str = "a672d62c-fc7b-4e81-a576-e60dc46e951d";
const POWER_BI_REFRESH: &str = "b52893c8-bc2e-47fc-918b-77022b299bbc";
const OTHER_CLIENT: &str = "0e1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

const ROUTES: &str = r#"
[[routes]]
path = "/public"
anonymous = true

[[routes]]
path = "/query"
scopes = ["aql.read"]

[[routes]]
path = "/jobs"
roles = ["Jobs.Run"]

[[routes]]
path = "/excel"
clients = ["a672d62c-fc7b-4e81-a576-e60dc46e951d"]

[[routes]]
path = "/admins"
claims = { groups = ["g-admins"] }

[[routes]]
path = "/upload"
max_body = "1KiB"
"#;

/// An `oid` on the revocation list of the matrix's gateways.
const REVOKED_OID: &str = "0badf00d-0000-4000-8000-000000000001";

/// A limit of one request a day per client address under `/limited`: each door's requests
/// come from an address of their own (the proxy's and forward-auth's from loopback, to two
/// gateways; `ext_authz`'s from the address in the CheckRequest), so the first row under it
/// passes on every door and the second is over the limit on every door.
fn limits_and_revocations(revoked_file: &str) -> String {
    format!(
        "\n[[limits]]\nname = \"daily-per-ip\"\nkey = \"ip\"\nrate = \"1/day\"\npaths = [\"/limited\"]\n\n[revocation]\nfile = \"{revoked_file}\"\n"
    )
}

/// The identity headers the echo upstream reports, and the ones a door's answer sets.
const IDENTITY: [&str; 6] = [
    "x-auth-subject",
    "x-auth-tenant",
    "x-auth-client",
    "x-auth-scopes",
    "x-auth-roles",
    "x-auth-name",
];

/// What every door must do with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    passed: bool,
    status: u16,
    reason: String,
    /// The identity headers the upstream request carries (for a refusal: none).
    identity: BTreeMap<String, String>,
}

struct Row {
    name: &'static str,
    method: &'static str,
    target: String,
    /// The proxy's request target, where it cannot be the same text (CONNECT).
    proxy_target: Option<&'static str>,
    headers: Vec<(String, String)>,
    body: usize,
    /// The proxy's status; forward-auth's follows from it (see the module docs).
    status: u16,
    /// The `outcome/reason` labels counted.
    reason: String,
    /// The upstream's identity headers when passed.
    identity: Vec<(&'static str, String)>,
}

impl Row {
    fn new(name: &'static str, method: &'static str, target: &str) -> Self {
        Self {
            name,
            method,
            target: target.to_owned(),
            proxy_target: None,
            headers: Vec::new(),
            body: 0,
            status: 200,
            reason: "allowed/none".into(),
            identity: Vec::new(),
        }
    }

    fn anonymous(mut self) -> Self {
        self.reason = "anonymous/none".into();
        self
    }

    fn preflight(mut self) -> Self {
        self.reason = "preflight/none".into();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    fn refused(mut self, status: u16, reason: Reason) -> Self {
        self.status = status;
        self.reason = format!("denied/{reason}");
        self
    }

    fn limit(mut self, status: u16, reason: &'static str) -> Self {
        self.status = status;
        self.reason = format!("refused/{reason}");
        self
    }

    fn identity(mut self, claims: &Map<String, Value>) -> Self {
        let text = |n: &str| claims.get(n).and_then(Value::as_str).map(str::to_owned);
        for (header, value) in [
            ("x-auth-subject", text("oid")),
            ("x-auth-tenant", text("tid")),
            ("x-auth-client", text("appid").or_else(|| text("azp"))),
            ("x-auth-scopes", text("scp")),
            (
                "x-auth-roles",
                claims.get("roles").and_then(Value::as_array).map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                }),
            ),
            (
                "x-auth-name",
                text("upn").or_else(|| text("preferred_username")),
            ),
        ] {
            if let Some(v) = value {
                self.identity.push((header, v));
            }
        }
        self
    }

    fn expected(&self) -> Seen {
        Seen {
            passed: (200..300).contains(&self.status),
            status: self.status,
            reason: self.reason.clone(),
            identity: self
                .identity
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }
}

/// `row` as a WebSocket opening handshake (RFC 6455 §4.1).
fn websocket(row: Row) -> Row {
    row.header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
}

/// What forward-auth answers where the proxy answers `status` (SPEC §4).
fn forward_auth_status(status: u16) -> u16 {
    match status {
        400 | 503 => 401,
        404 | 405 | 413 => 403,
        s => s,
    }
}

fn without(mut claims: Map<String, Value>, name: &str) -> Map<String, Value> {
    claims.remove(name);
    claims
}

/// An app-only (client credentials) token's claims.
fn app_only(h: &Harness, roles: &[&str]) -> Map<String, Value> {
    let c = h.claims(TokenVersion::V2);
    let c = without(without(without(c, "scp"), "upn"), "preferred_username");
    let c = with(c, "idtyp", json!("app"));
    with(c, "roles", json!(roles))
}

fn rows(h: &Harness) -> Vec<Row> {
    let now = common::now();
    let key = h.issuer.signing_key();
    let v1 = h.claims(TokenVersion::V1);
    let v2 = h.claims(TokenVersion::V2);
    let good = h.issuer.mint(&v1);
    let good_v2 = h.issuer.mint(&v2);
    let mint = |c: &Map<String, Value>| h.issuer.mint(c);
    let header = |alg: &str, extra: Value| {
        let mut hd = json!({"typ": "JWT", "alg": alg, "kid": key.kid});
        if let (Some(o), Some(e)) = (hd.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        hd
    };
    let signed = |k: &SigningKey, hd: &Value, c: &Map<String, Value>| {
        sign_jwt(k, hd, &Value::Object(c.clone()))
    };
    let b64 = |v: &Value| b64(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&Value::Object(v2.clone()))
    );
    let tampered = {
        let (head, sig) = good.rsplit_once('.').expect("three parts");
        let mut sig = sig.as_bytes().to_vec();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(sig).expect("ascii"))
    };
    let other_key = SigningKey::generate();
    let other_tenant = "0f0f0f0f-1111-4222-8333-444444444444";
    let power_bi = with(v1.clone(), "appid", json!(POWER_BI_REFRESH));
    let in_group = with(v2.clone(), "groups", json!(["g-users", "g-admins"]));
    let overage = with(v2.clone(), "_claim_names", json!({"groups": "src1"}));
    let with_aql = with(v1.clone(), "scp", json!("user_impersonation aql.read"));
    let runner = app_only(h, &["Jobs.Run"]);
    let revoked = with(v2.clone(), "oid", json!(REVOKED_OID));

    vec![
        // Passed.
        Row::new("v1 token", "GET", "/data/x?q=1")
            .bearer(&good)
            .identity(&v1),
        Row::new("v2 token", "POST", "/data")
            .bearer(&good_v2)
            .identity(&v2),
        Row::new("scope the route needs", "GET", "/query/aql?q=SELECT")
            .bearer(&mint(&with_aql))
            .identity(&with_aql),
        Row::new("role the route needs (app-only)", "POST", "/jobs/1")
            .bearer(&mint(&runner))
            .identity(&runner),
        Row::new("client the route allows", "GET", "/excel/sheet")
            .bearer(&good)
            .identity(&v1),
        Row::new("claim the route needs", "GET", "/admins/list")
            .bearer(&mint(&in_group))
            .identity(&in_group),
        Row::new("spoofed identity headers are replaced", "GET", "/data")
            .bearer(&good)
            .header("x-auth-subject", "spoofed")
            .header("x-auth-roles", "Admin")
            .header("x-auth-name", "mallory")
            .identity(&v1),
        // WebSocket handshakes are decided like any request (the proxy forwards the upgrade;
        // the echo upstream, no WebSocket server, answers 200).
        websocket(Row::new(
            "WebSocket handshake with a token",
            "GET",
            "/data/ws",
        ))
        .bearer(&good)
        .identity(&v1),
        websocket(Row::new(
            "WebSocket handshake, anonymous route",
            "GET",
            "/public/ws",
        ))
        .anonymous(),
        Row::new("anonymous route, no token", "GET", "/public/doc").anonymous(),
        Row::new("anonymous route, Power Query's probe", "GET", "/public/doc")
            .header("authorization", "Bearer")
            .anonymous(),
        Row::new(
            "anonymous route, spoofed identity removed",
            "GET",
            "/public/x",
        )
        .header("x-auth-subject", "spoofed")
        .header("x-auth-tenant", "spoofed")
        .anonymous(),
        Row::new("CORS preflight without a token", "OPTIONS", "/query/aql")
            .header("origin", "https://app.powerbi.com")
            .header("access-control-request-method", "POST")
            .preflight(),
        Row::new("a body within the route's limit", "POST", "/upload/doc")
            .bearer(&good)
            .identity(&v1)
            .with_body(512),
        Row::new(
            "double slashes into an anonymous route",
            "GET",
            "//public//doc",
        )
        .anonymous(),
        Row::new("percent-encoded letters", "GET", "/p%75blic/doc").anonymous(),
        Row::new(
            "a dot segment back into an anonymous route",
            "GET",
            "/data/../public/x",
        )
        .anonymous(),
        // Refused before the token is read.
        Row::new("no Authorization", "GET", "/data").refused(401, Reason::MissingToken),
        websocket(Row::new(
            "WebSocket handshake without a token",
            "GET",
            "/data/ws",
        ))
        .refused(401, Reason::MissingToken),
        websocket(Row::new(
            "WebSocket handshake, scope missing",
            "GET",
            "/query/ws",
        ))
        .bearer(&good)
        .refused(403, Reason::ScopeMissing),
        Row::new("Basic instead of Bearer", "GET", "/data")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .refused(401, Reason::MissingToken),
        Row::new("Power Query's probe", "GET", "/data")
            .header("authorization", "Bearer")
            .refused(401, Reason::EmptyBearer),
        Row::new("two Authorization headers", "GET", "/data")
            .bearer(&good)
            .bearer(&good)
            .refused(400, Reason::DuplicateAuthorization),
        Row::new(
            "token in the header and the query",
            "GET",
            &format!("/data?access_token={good}"),
        )
        .bearer(&good)
        .refused(400, Reason::DuplicateAuthorization),
        Row::new(
            "token in the header and the query, anonymous route",
            "GET",
            "/public/x?access_token=abc",
        )
        .bearer(&good)
        .refused(400, Reason::DuplicateAuthorization),
        Row::new("an encoded slash in a segment", "GET", "/data/a%2Fb")
            .bearer(&good)
            .refused(400, Reason::BadPath),
        Row::new("an encoded NUL", "GET", "/data/%00").refused(400, Reason::BadPath),
        Row::new(
            "a dot segment into a scoped route",
            "GET",
            "/public/../query/aql",
        )
        .bearer(&good)
        .refused(403, Reason::ScopeMissing),
        Row::new("CONNECT", "CONNECT", "/")
            .proxy_target("api.contoso.example:443")
            .limit(405, "method_not_allowed"),
        // Refused: the token.
        Row::new("not a JWS", "GET", "/data")
            .bearer("abc.def")
            .refused(401, Reason::Malformed),
        Row::new("anonymous route, an unusable token", "GET", "/public/doc")
            .bearer("abc.def")
            .refused(401, Reason::Malformed),
        Row::new("alg none", "GET", "/data")
            .bearer(&unsigned)
            .refused(401, Reason::AlgNotAllowed),
        Row::new("HMAC", "GET", "/data")
            .bearer(&format!(
                "{}.{}.c2ln",
                b64(&header("HS256", json!({}))),
                b64(&Value::Object(v2.clone()))
            ))
            .refused(401, Reason::AlgNotAllowed),
        Row::new("crit header", "GET", "/data")
            .bearer(&signed(
                &key,
                &header("RS256", json!({"crit": ["exp"]})),
                &v2,
            ))
            .refused(401, Reason::UnsupportedCrit),
        Row::new("no aud", "GET", "/data")
            .bearer(&mint(&without(v2.clone(), "aud")))
            .refused(401, Reason::MissingClaim),
        Row::new("a tampered signature", "GET", "/data")
            .bearer(&tampered)
            .refused(401, Reason::BadSignature),
        Row::new(
            "signed by another key under the issuer's kid",
            "GET",
            "/data",
        )
        .bearer(&signed(&other_key, &header("RS256", json!({})), &v2))
        .refused(401, Reason::BadSignature),
        Row::new("a kid the issuer never published", "GET", "/data")
            .bearer(&signed(
                &key,
                &header("RS256", json!({"kid": "never-published"})),
                &v2,
            ))
            .refused(401, Reason::UnknownKid),
        Row::new("expired", "GET", "/data")
            .bearer(&mint(&with(v2.clone(), "exp", json!(now - 3600))))
            .refused(401, Reason::Expired),
        Row::new("not yet valid", "GET", "/data")
            .bearer(&mint(&with(v2.clone(), "nbf", json!(now + 3600))))
            .refused(401, Reason::NotYetValid),
        Row::new("claims to live for years", "GET", "/data")
            .bearer(&mint(&with(
                v2.clone(),
                "exp",
                json!(now + 10 * 365 * 86_400),
            )))
            .refused(401, Reason::LifetimeTooLong),
        Row::new("another issuer", "GET", "/data")
            .bearer(&mint(&with(
                v2.clone(),
                "iss",
                json!("https://evil.example/"),
            )))
            .refused(401, Reason::IssuerMismatch),
        Row::new("another audience", "GET", "/data")
            .bearer(&mint(&with(
                v2.clone(),
                "aud",
                json!("https://other.example"),
            )))
            .refused(401, Reason::AudienceMismatch),
        Row::new("another tenant's tid", "GET", "/data")
            .bearer(&mint(&with(v2.clone(), "tid", json!(other_tenant))))
            .refused(401, Reason::TenantNotAllowed),
        Row::new("a client outside allowed_client_ids", "GET", "/data")
            .bearer(&mint(&with(v2.clone(), "azp", json!(OTHER_CLIENT))))
            .refused(401, Reason::ClientNotAllowed),
        // Refused: the route.
        Row::new("a scope the token lacks", "GET", "/query/aql")
            .bearer(&good)
            .refused(403, Reason::ScopeMissing),
        Row::new("a role the app-only token lacks", "POST", "/jobs/1")
            .bearer(&mint(&app_only(h, &["Other.Role"])))
            .refused(403, Reason::RoleMissing),
        Row::new("a client the route does not allow", "GET", "/excel/sheet")
            .bearer(&mint(&power_bi))
            .refused(403, Reason::ClientNotAllowedOnRoute),
        Row::new("a claim the route needs, absent", "GET", "/admins/list")
            .bearer(&good_v2)
            .refused(403, Reason::ClaimMissing),
        Row::new("groups overage", "GET", "/admins/list")
            .bearer(&mint(&overage))
            .refused(403, Reason::GroupsOverage),
        Row::new(
            "a declared body over the route's limit",
            "POST",
            "/upload/doc",
        )
        .bearer(&good)
        .with_body(2048)
        .limit(413, "body_too_large"),
        // Refused: the kill switch and the limits.
        Row::new("a revoked oid", "GET", "/data")
            .bearer(&mint(&revoked))
            .refused(401, Reason::Revoked),
        Row::new("the first request under a limit", "GET", "/limited/a")
            .bearer(&good)
            .identity(&v1),
        Row::new("over the limit", "GET", "/limited/b")
            .bearer(&good)
            .refused(429, Reason::RateLimited),
        Row::new(
            "an unauthenticated body over the limit is a 401 first",
            "POST",
            "/upload/doc",
        )
        .with_body(2048)
        .refused(401, Reason::MissingToken),
    ]
}

impl Row {
    fn with_body(mut self, len: usize) -> Self {
        self.body = len;
        self.headers
            .push(("content-length".into(), len.to_string()));
        self
    }

    fn proxy_target(mut self, target: &'static str) -> Self {
        self.proxy_target = Some(target);
        self
    }
}

/// Every outcome a row can be counted under.
fn outcomes() -> Vec<Outcome> {
    [
        Outcome::Allowed,
        Outcome::Preflight,
        Outcome::Anonymous,
        Outcome::BodyTooLarge,
        Outcome::MethodNotAllowed,
        Outcome::ClientClosed,
        Outcome::UpstreamUnreachable,
        Outcome::UpstreamTimeout,
    ]
    .into_iter()
    .chain(Reason::ALL.into_iter().map(Outcome::Denied))
    .collect()
}

fn counts(m: &Metrics) -> Vec<u64> {
    outcomes().into_iter().map(|o| m.requests(o)).collect()
}

/// The one outcome counted between `before` and now.
fn counted(m: &Metrics, before: &[u64], what: &str) -> String {
    let after = counts(m);
    let changed: Vec<Outcome> = outcomes()
        .into_iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(o, _)| o)
        .collect();
    assert_eq!(changed.len(), 1, "{what}: counted {changed:?}");
    let (outcome, reason) = changed[0].labels();
    format!("{outcome}/{reason}")
}

/// One HTTP/1.1 request, written as is, on a new connection; `(status, headers, body)`.
/// Unlike `common::wire::send_raw` it writes the row's own `Content-Length` and tolerates a
/// reset after the answer: a refusal sent before a large body was read may close the
/// connection with that body unread.
async fn raw_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: usize,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nhost: api.contoso.example\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(&vec![b'x'; body]).await.expect("body");
    let mut out = Vec::new();
    // A refusal before the body was read may reset the connection once answered.
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// The identity headers among `headers`.
fn identity_of<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    headers
        .filter(|(k, _)| IDENTITY.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

/// What the upstream gets when an ingress applies a door's answer to the row's headers:
/// the client's identity headers minus the removals, then the headers set.
fn applied(
    row: &Row,
    set: &BTreeMap<String, String>,
    removed: &[String],
) -> BTreeMap<String, String> {
    let mut out = identity_of(row.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    out.retain(|k, _| !removed.iter().any(|r| r.eq_ignore_ascii_case(k)) && !set.contains_key(k));
    out.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

async fn through_proxy(h: &Harness, row: &Row) -> Seen {
    let before = counts(&h.gw.metrics);
    let target = row.proxy_target.unwrap_or(&row.target);
    let (status, _, body) = raw_http(h.gw.addr, row.method, target, &row.headers, row.body).await;
    let reason = counted(&h.gw.metrics, &before, &format!("proxy: {}", row.name));
    let passed = status == 200;
    let identity = if passed {
        let seen: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("proxy: {}: not the echo ({e}): {body}", row.name));
        let headers = seen["headers"].as_object().cloned().unwrap_or_default();
        identity_of(
            headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))),
        )
    } else {
        BTreeMap::new()
    };
    Seen {
        passed,
        status,
        reason,
        identity,
    }
}

async fn through_forward_auth(gw: &Running, row: &Row) -> Seen {
    let before = counts(&gw.metrics);
    let mut headers = row.headers.clone();
    headers.push(("x-forwarded-method".into(), row.method.into()));
    headers.push(("x-forwarded-uri".into(), row.target.clone()));
    let (status, answer, _) = raw_http(gw.addr, "GET", "/auth", &headers, row.body).await;
    let reason = counted(&gw.metrics, &before, &format!("forward-auth: {}", row.name));
    let passed = status == 200;
    let identity = if passed {
        let set = identity_of(answer.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let removed: Vec<String> = answer
            .iter()
            .filter(|(k, _)| k == "x-envoy-auth-headers-to-remove")
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
            .collect();
        applied(row, &set, &removed)
    } else {
        BTreeMap::new()
    };
    Seen {
        passed,
        status,
        reason,
        identity,
    }
}

async fn through_ext_authz(h: &Harness, row: &Row) -> Seen {
    let before = counts(&h.gw.metrics);
    let req = common::ext_authz::with_raw_headers(
        common::ext_authz::request(row.method, &row.target, &[]),
        &row.headers,
    );
    let addr = h.gw.ext_authz_addr.expect("ext_authz listener");
    let r: CheckResponse = common::ext_authz::check(addr, req).await;
    let reason = counted(&h.gw.metrics, &before, &format!("ext_authz: {}", row.name));
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => {
            let (set, removed) = common::ext_authz::allowed(&r);
            let set: BTreeMap<String, String> =
                identity_of(set.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            Seen {
                passed: true,
                status: 200,
                reason,
                identity: applied(row, &set, &removed),
            }
        }
        _ => Seen {
            passed: false,
            status: u16::try_from(common::ext_authz::denied(&r).0).unwrap_or(0),
            reason,
            identity: BTreeMap::new(),
        },
    }
}

/// The forward-auth gateway: the same config as `h`'s in forward-auth mode, trusting
/// loopback, with the same issuer and upstream (or, with `closed`, an authority on that
/// port, where nothing listens).
/// Each row through the three doors: what differs from the row's expectation (forward-auth
/// in its 401/403 shape), one line per row and door.
async fn every_door(h: &Harness, fa: &Running, rows: &[Row]) -> Vec<String> {
    let mut failures = Vec::new();
    for row in rows {
        let want = row.expected();
        let fa_want = Seen {
            status: forward_auth_status(want.status),
            ..want.clone()
        };
        for (door, got, want) in [
            ("proxy", through_proxy(h, row).await, &want),
            (
                "forward-auth",
                through_forward_auth(fa, row).await,
                &fa_want,
            ),
            ("ext_authz", through_ext_authz(h, row).await, &want),
        ] {
            if &got != want {
                failures.push(format!("{}: {door}: got {got:?}, want {want:?}", row.name));
            }
        }
    }
    failures
}

async fn forward_auth_gateway(h: &Harness, extra: &Extra, closed: Option<u16>) -> Running {
    let extra = Extra {
        server: format!(
            "mode = \"forward-auth\"\n{}",
            extra
                .server
                .replace("ext_authz_listen = \"127.0.0.1:0\"\n", "")
        ),
        ..extra.clone()
    };
    let mut toml = common::config_toml(&h.issuer, &h.echo.url(), &extra);
    if let Some(port) = closed {
        toml = toml.replace(
            &format!("authority = \"{}\"", h.issuer.authority()),
            &format!("authority = \"http://127.0.0.1:{port}\""),
        );
    }
    let config = Config::load(&toml, &[], &|p| std::fs::read_to_string(p)).expect("config");
    let gw = entragate::app::start(&config)
        .await
        .expect("forward-auth gateway");
    for _ in 0..400 {
        if closed.is_some() || gw.keys().is_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_decides_every_row_the_same() {
    let revoked = common::process::TempFile::with(
        "revoked.txt",
        &format!("oid={REVOKED_OID} until=2100-01-01T00:00:00Z\n"),
    );
    let extra = Extra {
        server: "trusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"127.0.0.1:0\"\n".into(),
        entra: format!(
            "allowed_tenants = [\"{TENANT}\"]\nallowed_client_ids = [\"{POWER_QUERY}\", \"{POWER_BI_REFRESH}\"]\n"
        ),
        tail: format!("{ROUTES}{}", limits_and_revocations(revoked.as_str())),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let fa = forward_auth_gateway(&h, &extra, None).await;
    let rows = rows(&h);
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let failures = every_door(&h, &fa, &rows).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every refusal reason the three doors share is in the table (keys_unavailable and
    // bad_forwarded_request have tests of their own, below; the [[apis]] reasons are in
    // the table of `every_door_decides_apis_the_same`).
    for reason in Reason::ALL {
        if matches!(
            reason,
            Reason::KeysUnavailable | Reason::BadForwardedRequest
        ) || API_REASONS.contains(&reason)
        {
            continue;
        }
        assert!(
            rows.iter().any(|r| r.reason == format!("denied/{reason}")),
            "no row refused with {reason}"
        );
    }
}

/// The reasons of `[[apis]]`, step-up and the IP filter, decided by the table below.
const API_REASONS: [Reason; 3] = [Reason::NoApi, Reason::AuthContextRequired, Reason::IpDenied];

/// One API at `/data` (no API elsewhere), with a step-up route and IP-filtered routes. The
/// client address: for the proxy and forward-auth, what the trusted peer (loopback) forwards
/// in `X-Forwarded-For`; for `ext_authz`, the downstream address Envoy reports (203.0.113.7
/// in `common::ext_authz::request`), so the rows send that same address.
const APIS: &str = r#"
[[apis]]
name = "data"
prefix = "/data"

[[apis.routes]]
path = "/data/admin"
auth_context = "c1"

[[apis.routes]]
path = "/data/guarded"
ip_deny = ["203.0.113.0/24"]

[[apis.routes]]
path = "/data/lan"
ip_allow = ["203.0.113.0/24"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_decides_apis_the_same() {
    let extra = Extra {
        server: "trusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"127.0.0.1:0\"\n".into(),
        tail: APIS.into(),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let fa = forward_auth_gateway(&h, &extra, None).await;
    let v1 = h.claims(TokenVersion::V1);
    let good = h.issuer.mint(&v1);
    let stepped_claims = with(v1.clone(), "acrs", json!(["c1"]));
    let stepped = h.issuer.mint(&stepped_claims);
    let client = "203.0.113.7";
    let rows = vec![
        Row::new("a path of the API", "GET", "/data/x")
            .bearer(&good)
            .identity(&v1),
        Row::new("under no API, no token", "GET", "/other/x").refused(401, Reason::MissingToken),
        Row::new("under no API, Power Query's probe", "GET", "/")
            .header("authorization", "Bearer")
            .refused(401, Reason::EmptyBearer),
        Row::new("under no API, a valid token", "GET", "/other/x")
            .bearer(&good)
            .refused(404, Reason::NoApi),
        Row::new("under no API, an invalid token", "GET", "/datax")
            .bearer("abc.def")
            .refused(401, Reason::Malformed),
        Row::new("a route's auth context, absent", "DELETE", "/data/admin/1")
            .bearer(&good)
            .refused(401, Reason::AuthContextRequired),
        Row::new("a route's auth context, present", "DELETE", "/data/admin/1")
            .bearer(&stepped)
            .identity(&stepped_claims),
        Row::new("a denied client address", "GET", "/data/guarded")
            .header("x-forwarded-for", client)
            .bearer(&good)
            .refused(403, Reason::IpDenied),
        Row::new(
            "a denied client address, no token",
            "GET",
            "/data/guarded/x",
        )
        .header("x-forwarded-for", client)
        .refused(403, Reason::IpDenied),
        Row::new("an allowed client address", "GET", "/data/lan")
            .header("x-forwarded-for", client)
            .bearer(&good)
            .identity(&v1),
    ];
    let failures = every_door(&h, &fa, &rows).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for reason in API_REASONS {
        assert!(
            rows.iter().any(|r| r.reason == format!("denied/{reason}")),
            "no row refused with {reason}"
        );
    }
}

/// Before any key set has loaded: the proxy and `ext_authz` answer 503 with `Retry-After`,
/// forward-auth 401 with it (nginx passes nothing else); all three count
/// `keys_unavailable`, and a client that went away is no part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_every_door_says_keys_unavailable() {
    let extra = Extra {
        server: "trusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"127.0.0.1:0\"\n".into(),
        ..Extra::default()
    };
    let (h, closed) = Harness::start_without_keys(extra.clone()).await;
    let token = h.token(TokenVersion::V1);
    let row = Row::new("no keys", "GET", "/data")
        .bearer(&token)
        .refused(503, Reason::KeysUnavailable);
    let want = row.expected();
    assert_eq!(through_proxy(&h, &row).await, want);
    assert_eq!(through_ext_authz(&h, &row).await, want);
    let fa = forward_auth_gateway(&h, &extra, Some(closed)).await;
    assert_eq!(
        through_forward_auth(&fa, &row).await,
        Seen {
            status: 401,
            ..want
        }
    );
}

/// What only a door that reads the original request from somewhere else can get wrong:
/// forward-auth headers that disagree, an `ext_authz` check without an origin-form path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_original_request_is_bad_forwarded_request() {
    let extra = Extra {
        server: "trusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"127.0.0.1:0\"\n".into(),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let fa = forward_auth_gateway(&h, &extra, None).await;
    let token = h.token(TokenVersion::V1);
    let row = Row::new("disagreeing", "GET", "/data")
        .bearer(&token)
        .header("x-original-uri", "/public")
        .refused(401, Reason::BadForwardedRequest);
    assert_eq!(through_forward_auth(&fa, &row).await, row.expected());
    let row = Row::new("no path", "GET", "api.contoso.example")
        .bearer(&token)
        .refused(400, Reason::BadForwardedRequest);
    assert_eq!(through_ext_authz(&h, &row).await, row.expected());
}

/// A 429 carries `Retry-After` and the draft's `RateLimit-Policy` / `RateLimit` through
/// every door: the proxy's answer, forward-auth's answer (for Traefik, Caddy and Envoy to
/// pass on) and the `ext_authz` denied response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_answer_carries_its_headers_through_every_door() {
    let extra = Extra {
        server: "trusted_proxies = [\"127.0.0.1\"]\next_authz_listen = \"127.0.0.1:0\"\n".into(),
        tail: "[[limits]]\nname = \"per-user\"\nkey = \"user\"\nrate = \"1/h\"\n".into(),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let fa = forward_auth_gateway(&h, &extra, None).await;
    let token = h.token(TokenVersion::V1);
    let bearer = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    let want = |door: &str, status: u16, headers: &[(String, String)], body: &str| {
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{door}: no {n} in {headers:?}"))
        };
        assert_eq!(status, 429, "{door}");
        assert_eq!(body, r#"{"error":"rate_limited"}"#, "{door}");
        let retry: u64 = get("retry-after").parse().expect("seconds");
        assert!(
            (3500..=3600).contains(&retry),
            "{door}: Retry-After {retry}"
        );
        assert_eq!(get("ratelimit-policy"), "\"per-user\";q=1;w=3600", "{door}");
        assert!(
            get("ratelimit").starts_with("\"per-user\";r=0;t="),
            "{door}"
        );
        assert!(
            !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("www-authenticate")),
            "{door}: no challenge on a 429"
        );
    };
    for _ in 0..2 {
        let (status, headers, body) = raw_http(h.gw.addr, "GET", "/data", &bearer, 0).await;
        if status == 429 {
            want("proxy", status, &headers, &body);
        } else {
            assert_eq!(status, 200, "the first request passes");
        }
    }
    let mut fa_headers = bearer.clone();
    fa_headers.push(("x-forwarded-method".into(), "GET".into()));
    fa_headers.push(("x-forwarded-uri".into(), "/data".into()));
    assert_eq!(
        raw_http(fa.addr, "GET", "/auth", &fa_headers, 0).await.0,
        200
    );
    let (status, headers, body) = raw_http(fa.addr, "GET", "/auth", &fa_headers, 0).await;
    want("forward-auth", status, &headers, &body);
    // The proxy's gateway already counted this user: ext_authz shares it.
    let req = common::ext_authz::with_raw_headers(
        common::ext_authz::request("GET", "/data", &[]),
        &bearer,
    );
    let r: CheckResponse =
        common::ext_authz::check(h.gw.ext_authz_addr.expect("ext_authz"), req).await;
    assert_eq!(
        r.status.as_ref().map(|s| s.code),
        Some(8),
        "RESOURCE_EXHAUSTED"
    );
    let (status, headers, body) = common::ext_authz::denied(&r);
    want(
        "ext_authz",
        u16::try_from(status).expect("status"),
        &headers,
        &body,
    );
    assert_eq!(h.gw.metrics.limits.rate_limited("per-user"), 2);
}
