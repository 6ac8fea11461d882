//! `[[apis]]` through real sockets: two APIs, each with its own real upstream (two echo
//! servers), `strip_prefix`, per-API audiences and routes, a path under no API (the challenge
//! without a token, 404 `no_api` after authentication), step-up by authentication context,
//! the IP filter on the address a trusted proxy forwards, and the API's name in `/metrics`.

use entragate::dev::EchoUpstream;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

use crate::common::tokens::with;
use crate::common::{Extra, Harness, loopback};

const CDR_AUDIENCE: &str = "https://cdr.example.org";

/// `ehrbase` goes to the harness's echo (the `[upstream]` default, prefix kept); `fhir` to
/// a second echo with its prefix stripped and its own audience; `admin` inside `ehrbase`
/// (longest prefix) with a step-up route and an IP filter.
fn apis_toml(fhir_url: &str) -> String {
    format!(
        r#"
[[apis]]
name = "ehrbase"
prefix = "/ehrbase"

[[apis.routes]]
path = "/ehrbase/rest/openehr/v1/query"
scopes = ["aql.read"]

[[apis.routes]]
path = "/ehrbase/status"
anonymous = true

[[apis]]
name = "fhir"
prefix = "/fhir/"
upstream = {{ url = "{fhir_url}/base", strip_prefix = true }}
audiences = ["{CDR_AUDIENCE}"]

[[apis]]
name = "admin"
prefix = "/ehrbase/admin"
ip_allow = ["203.0.113.0/24", "127.0.0.1"]
ip_deny = ["203.0.113.66"]

[[apis.routes]]
path = "/ehrbase/admin/delete"
auth_context = "c1"
"#
    )
}

async fn start() -> (Harness, EchoUpstream) {
    let fhir = EchoUpstream::start(loopback()).await.expect("second echo");
    let h = Harness::start_with(Extra {
        server: "trusted_proxies = [\"127.0.0.1\"]\n".into(),
        tail: apis_toml(&fhir.url()),
        ..Extra::default()
    })
    .await;
    (h, fhir)
}

async fn echoed(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 200, "passed to an upstream");
    r.json().await.expect("echo json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_reaches_its_own_upstream() {
    let (h, fhir) = start().await;
    let token = h.token(TokenVersion::V1);
    let cdr = h
        .issuer
        .mint(&h.issuer.claims(TokenVersion::V2, CDR_AUDIENCE));

    // ehrbase: the harness's echo, the path as sent.
    let seen = echoed(h.get_with_token("/ehrbase/rest/x?q=1", &token).await).await;
    assert_eq!(seen["uri"], "/ehrbase/rest/x?q=1");
    assert_eq!(h.echo.requests(), 1);
    assert_eq!(fhir.requests(), 0);

    // fhir: the second echo, the prefix stripped and its base path put in front.
    let seen = echoed(h.get_with_token("/fhir/Patient/1?_format=json", &cdr).await).await;
    assert_eq!(seen["uri"], "/base/Patient/1?_format=json");
    let seen = echoed(h.get_with_token("/fhir", &cdr).await).await;
    assert_eq!(seen["uri"], "/base/");
    // Reached through an encoded letter: the normalised rest.
    let seen = echoed(h.get_with_token("/f%68ir/Patient/2", &cdr).await).await;
    assert_eq!(seen["uri"], "/base/Patient/2");
    assert_eq!(fhir.requests(), 3);
    assert_eq!(h.echo.requests(), 1);

    // Each API's audiences: a token for one is not for the other.
    let r = h.get_with_token("/fhir/Patient/1", &token).await;
    assert_eq!(r.status(), 401);
    let r = h.get_with_token("/ehrbase/rest/x", &cdr).await;
    assert_eq!(r.status(), 401);

    // Routes are scoped to their API: the anonymous route of ehrbase.
    let r = h
        .client
        .get(h.url("/ehrbase/status"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let r = h
        .client
        .get(h.url("/fhir/ehrbase/status"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);

    // The API's name in /metrics, beside the outcome.
    let text = h.metrics_text().await;
    assert!(
        text.contains("entragate_api_requests_total{api=\"fhir\",outcome=\"allowed\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("entragate_api_requests_total{api=\"ehrbase\",outcome=\"allowed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("entragate_api_requests_total{api=\"ehrbase\",outcome=\"anonymous\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_under_no_api_is_challenged_then_not_found() {
    let (h, fhir) = start().await;
    // No token: the same challenge as anywhere, no word about prefixes.
    let r = h
        .client
        .get(h.url("/elsewhere/x"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    let r = h
        .client
        .get(h.url("/elsewhere"))
        .header("authorization", "Bearer")
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        401,
        "Power Query's probe gets its answer anywhere"
    );
    // A valid token: 404 not_found, nothing forwarded.
    let token = h.token(TokenVersion::V1);
    for path in ["/elsewhere/x", "/ehrbasement", "/", "/fhirx"] {
        let r = h.get_with_token(path, &token).await;
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.expect("body");
        assert_eq!(body, r#"{"error":"not_found"}"#, "{path}");
        assert!(!body.contains("ehrbase") && !body.contains("fhir"));
    }
    // An invalid token there is refused as such, before the 404.
    let r = h.get_with_token("/elsewhere", "a.b.c").await;
    assert_eq!(r.status(), 401);
    assert_eq!(h.echo.requests(), 0);
    assert_eq!(fhir.requests(), 0);
    let text = h.metrics_text().await;
    assert!(
        text.contains("entragate_requests_total{outcome=\"denied\",reason=\"no_api\"} 4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_an_auth_context_asks_for_step_up() {
    let (h, _fhir) = start().await;
    let plain = h.token(TokenVersion::V2);
    let r = h.get_with_token("/ehrbase/admin/delete/1", &plain).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let realm = format!("{}/{}", h.issuer.authority(), h.issuer.tenant_id());
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{realm}\", authorization_uri=\"{realm}/oauth2/authorize\", error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19\""
        )
    );
    // Another context is not this one; the right one passes.
    let other = h
        .issuer
        .mint(&with(h.claims(TokenVersion::V2), "acrs", json!(["c2"])));
    let r = h.get_with_token("/ehrbase/admin/delete/1", &other).await;
    assert_eq!(r.status(), 401);
    let stepped = h.issuer.mint(&with(
        h.claims(TokenVersion::V2),
        "acrs",
        json!(["c2", "c1"]),
    ));
    let r = h.get_with_token("/ehrbase/admin/delete/1", &stepped).await;
    assert_eq!(r.status(), 200);
    // Elsewhere in the API, no step-up.
    let r = h.get_with_token("/ehrbase/admin/list", &plain).await;
    assert_eq!(r.status(), 200);
    let text = h.metrics_text().await;
    assert!(
        text.contains(
            "entragate_requests_total{outcome=\"denied\",reason=\"auth_context_required\"} 2"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_filter_uses_the_address_a_trusted_proxy_forwards() {
    let (h, _fhir) = start().await;
    let token = h.token(TokenVersion::V1);
    let get = |xff: Option<&'static str>, token: &str| {
        let mut req = h
            .client
            .get(h.url("/ehrbase/admin/list"))
            .header("authorization", format!("Bearer {token}"));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        req.send()
    };
    // The peer (127.0.0.1, trusted) sends no X-Forwarded-For: it is the client, allowed.
    assert_eq!(get(None, &token).await.expect("get").status(), 200);
    // It forwards an allowed client, then a denied one, then one outside ip_allow.
    assert_eq!(
        get(Some("203.0.113.5"), &token)
            .await
            .expect("get")
            .status(),
        200
    );
    let r = get(Some("203.0.113.66"), &token).await.expect("get");
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("www-authenticate").is_none());
    assert_eq!(r.text().await.expect("body"), r#"{"error":"forbidden"}"#);
    let r = get(Some("198.51.100.1"), "not-even-a-token")
        .await
        .expect("get");
    assert_eq!(r.status(), 403, "refused before the token is looked at");
    // The other APIs have no filter.
    let r = h
        .client
        .get(h.url("/ehrbase/status"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let text = h.metrics_text().await;
    assert!(
        text.contains("entragate_requests_total{outcome=\"denied\",reason=\"ip_denied\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("entragate_api_requests_total{api=\"admin\",outcome=\"denied\"} 2"),
        "{text}"
    );
}
