//! `entragate explain` with tokens minted at run time by the embedded issuer: what a token is,
//! every reason a config refuses it with the fix in Entra terms, the signature verified when
//! keys can be fetched and never printed, and the same verdict as the running gateway.

use crate::common;

use common::process::{Proc, TempFile};
use common::{API_CLIENT_ID, AUDIENCE, Extra, Harness, TENANT, loopback, now};
use entragate::auth::Reason;
use entragate::config::Config;
use entragate::dev::{DevIssuer, EchoUpstream, SigningKey, sign_jwt};
use entragate::keys::TokenVersion;
use entragate::metrics::Outcome;
use entragate::ops::explain::{self, Explanation, Options};
use serde_json::{Map, Value, json};

const OTHER_TENANT: &str = "99999999-8888-4777-8666-555555555555";

struct Setup {
    issuer: DevIssuer,
    echo: EchoUpstream,
}

impl Setup {
    async fn start() -> Self {
        Self {
            issuer: DevIssuer::start(loopback(), TENANT).await.expect("issuer"),
            echo: EchoUpstream::start(loopback()).await.expect("echo"),
        }
    }

    fn config(&self, extra: &Extra) -> Config {
        let toml = common::config_toml(&self.issuer, &self.echo.url(), extra);
        common::load(&toml)
    }

    fn claims(&self, version: TokenVersion) -> Map<String, Value> {
        self.issuer.claims(version, AUDIENCE)
    }

    fn mint(&self, claims: &Map<String, Value>) -> String {
        self.issuer.mint(claims)
    }
}

async fn run(config: &Config, token: &str, offline: bool, path: &str) -> Explanation {
    let opts = Options {
        offline,
        method: http::Method::GET,
        path: path.to_owned(),
    };
    let mut progress = Vec::new();
    explain::explain(config, token, &opts, &mut progress)
        .await
        .expect("explain runs")
}

fn codes(x: &Explanation) -> Vec<&'static str> {
    x.reasons.iter().map(|f| f.reason).collect()
}

fn finding(x: &Explanation, reason: Reason) -> &explain::Finding {
    x.reasons
        .iter()
        .find(|f| f.reason == reason.as_str())
        .unwrap_or_else(|| panic!("no {reason} in {:?}", codes(x)))
}

#[tokio::test]
async fn accepted_v1_and_v2_tokens_are_described_and_their_signature_verified() {
    let s = Setup::start().await;
    let config = s.config(&Extra::default());
    for version in [TokenVersion::V1, TokenVersion::V2] {
        let x = run(&config, &s.mint(&s.claims(version)), false, "/").await;
        assert!(x.accepted, "{}", x.to_text());
        assert_eq!(x.status, 200);
        assert!(x.signature_verified, "{}", x.signature);
        let v = x.about.version.clone().unwrap_or_default();
        match version {
            TokenVersion::V1 => assert!(v.starts_with("v1") && v.contains("null or 1"), "{v}"),
            TokenVersion::V2 => assert!(v.starts_with("v2") && v.contains("2;"), "{v}"),
        }
        assert!(
            x.about
                .client_name
                .as_deref()
                .unwrap_or_default()
                .contains("Power BI Desktop"),
            "{:?}",
            x.about
        );
        assert!(
            x.about
                .kind
                .as_deref()
                .unwrap_or_default()
                .starts_with("delegated")
        );
        assert!(x.to_text().contains("ACCEPTED"));
        assert!(x.key_fetches.iter().all(|f| f.ok), "{:?}", x.key_fetches);
    }
}

#[tokio::test]
async fn a_wrong_audience_is_explained_with_the_application_id_uri() {
    let s = Setup::start().await;
    let config = s.config(&Extra::default());
    let mut claims = s.claims(TokenVersion::V1);
    claims.insert("aud".into(), json!("https://api.x.com/"));
    let x = run(&config, &s.mint(&claims), false, "/").await;
    assert_eq!(codes(&x), ["audience_mismatch"]);
    assert_eq!(x.status, 401);
    let f = finding(&x, Reason::AudienceMismatch);
    assert!(
        f.problem.contains("aud is https://api.x.com/") && f.problem.contains(AUDIENCE),
        "{}",
        f.problem
    );
    assert!(
        f.fix.contains("Power BI requests the URL's scheme+host")
            && f.fix.contains("Application ID URI")
            && f.fix.contains(&format!("must be exactly {AUDIENCE}")),
        "{}",
        f.fix
    );
    assert!(x.signature_verified, "a genuine token with the wrong aud");
}

#[tokio::test]
async fn v1_v2_mix_ups_name_access_token_accepted_version() {
    let s = Setup::start().await;
    // Only the Application ID URI configured; the manifest switched to v2 tokens (aud = GUID).
    let mut url_only = s.config(&Extra::default());
    url_only.entra.audiences = vec![AUDIENCE.to_owned()];
    let mut v2 = s.claims(TokenVersion::V2);
    v2.insert("aud".into(), json!(API_CLIENT_ID));
    let x = run(&url_only, &s.mint(&v2), false, "/").await;
    let f = finding(&x, Reason::AudienceMismatch);
    assert!(
        f.fix.contains("accessTokenAcceptedVersion to 2") && f.fix.contains("client ID"),
        "{}",
        f.fix
    );

    // Only the client ID configured; Power BI gets v1 tokens by default (aud = App ID URI).
    let mut guid_only = s.config(&Extra::default());
    guid_only.entra.audiences = vec![API_CLIENT_ID.to_owned()];
    let x = run(&guid_only, &s.mint(&s.claims(TokenVersion::V1)), false, "/").await;
    let f = finding(&x, Reason::AudienceMismatch);
    assert!(
        f.fix.contains("v1 token") && f.fix.contains("accessTokenAcceptedVersion null or 1"),
        "{}",
        f.fix
    );
}

#[tokio::test]
async fn every_reason_is_listed_in_the_gateways_order_with_how_long_ago_it_expired() {
    let s = Setup::start().await;
    let config = s.config(&Extra {
        entra: r#"allowed_client_ids = ["b52893c8-bc2e-47fc-918b-77022b299bbc"]"#.into(),
        ..Extra::default()
    });
    let mut claims = s.claims(TokenVersion::V2);
    claims.insert("aud".into(), json!("https://other.example"));
    claims.insert("iat".into(), json!(now() - 3 * 3600));
    claims.insert("nbf".into(), json!(now() - 3 * 3600));
    claims.insert("exp".into(), json!(now() - 2 * 3600 - 5));
    let x = run(&config, &s.mint(&claims), false, "/").await;
    assert_eq!(
        codes(&x),
        ["expired", "audience_mismatch", "client_not_allowed"]
    );
    let expired = finding(&x, Reason::Expired);
    assert!(
        expired.problem.starts_with("expired 2h"),
        "{}",
        expired.problem
    );
    assert!(expired.fix.contains("offline_access"), "{}", expired.fix);
    let client = finding(&x, Reason::ClientNotAllowed);
    assert!(
        client.problem.contains("Power BI Desktop") && client.fix.contains("AADSTS650057"),
        "{client:?}"
    );
    let text = x.to_text();
    assert!(
        text.contains("REFUSED with 401: the gateway logs auth.reason=expired"),
        "{text}"
    );
    assert!(text.contains("  3. client_not_allowed (401)"), "{text}");
}

#[tokio::test]
async fn a_token_that_claims_to_live_for_years_is_explained() {
    let s = Setup::start().await;
    let config = s.config(&Extra::default());
    let mut claims = s.claims(TokenVersion::V2);
    claims.insert("iat".into(), json!(now()));
    claims.insert("exp".into(), json!(1e300));
    let x = run(&config, &s.mint(&claims), false, "/").await;
    assert_eq!(codes(&x), ["lifetime_too_long"]);
    let f = finding(&x, Reason::LifetimeTooLong);
    assert!(
        f.problem
            .contains("longer than entra.max_token_lifetime 1day 4h"),
        "{}",
        f.problem
    );
    assert!(f.fix.contains("60-90 minutes"), "{}", f.fix);
    assert!(
        x.to_text()
            .contains("REFUSED with 401: the gateway logs auth.reason=lifetime_too_long"),
        "{}",
        x.to_text()
    );
}

#[tokio::test]
async fn route_rules_scope_and_group_overage_are_explained() {
    let s = Setup::start().await;
    let mut config = s.config(&Extra::default());
    let routes = Config::load(
        &format!(
            "{}\n[[routes]]\npath = \"/query\"\nscopes = [\"aql.read\"]\n\n[[routes]]\npath = \"/admin\"\nclaims = {{ groups = [\"g-admins\"] }}\n",
            common::config_toml(&s.issuer, &s.echo.url(), &Extra::default())
        ),
        &[],
        &|p| std::fs::read_to_string(p),
    )
    .expect("config with routes");
    config.routes = routes.routes;

    let x = run(
        &config,
        &s.mint(&s.claims(TokenVersion::V1)),
        false,
        "/query/aql",
    )
    .await;
    assert_eq!(codes(&x), ["scope_missing"]);
    assert_eq!(x.status, 403);
    let f = finding(&x, Reason::ScopeMissing);
    assert!(
        f.problem.contains("[aql.read]") && f.problem.contains("user_impersonation"),
        "{}",
        f.problem
    );
    assert!(
        f.fix.contains("Expose the scope") && f.fix.contains("consent"),
        "{}",
        f.fix
    );

    let mut claims = s.claims(TokenVersion::V2);
    claims.insert("_claim_names".into(), json!({"groups": "src1"}));
    let x = run(&config, &s.mint(&claims), false, "/admin/users").await;
    assert_eq!(codes(&x), ["groups_overage"]);
    let f = finding(&x, Reason::GroupsOverage);
    assert!(
        f.problem.contains("200 groups") && f.fix.contains("ApplicationGroup"),
        "{f:?}"
    );
    // Elsewhere a valid token suffices.
    assert!(
        run(&config, &s.mint(&claims), false, "/other")
            .await
            .accepted
    );
}

#[tokio::test]
async fn a_token_of_another_tenant_names_both_tenants() {
    let s = Setup::start().await;
    let config = s.config(&Extra::default());
    let mut claims = s.claims(TokenVersion::V1);
    claims.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{OTHER_TENANT}/")),
    );
    claims.insert("tid".into(), json!(OTHER_TENANT));
    let x = run(&config, &s.mint(&claims), false, "/").await;
    assert_eq!(codes(&x), ["issuer_mismatch"]);
    let f = finding(&x, Reason::IssuerMismatch);
    assert!(
        f.fix.contains(OTHER_TENANT) && f.fix.contains(TENANT),
        "{}",
        f.fix
    );
}

#[tokio::test]
async fn offline_judges_the_claims_and_leaves_the_signature_unverified() {
    let s = Setup::start().await;
    let config = s.config(&Extra::default());
    s.issuer.set_up(false);
    let good = s.mint(&s.claims(TokenVersion::V2));
    // A forged signature passes offline on its claims, and says the signature is unchecked.
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": s.issuer.signing_key().kid});
    let forged = sign_jwt(
        &SigningKey::generate(),
        &header,
        &Value::Object(s.claims(TokenVersion::V2)),
    );
    for token in [&good, &forged] {
        let x = run(&config, token, true, "/").await;
        assert!(x.accepted, "{}", x.to_text());
        assert!(!x.signature_verified);
        assert!(x.signature.contains("not checked"), "{}", x.signature);
        assert!(
            x.issuer.contains("Entra writes for entra.tenant_id"),
            "{}",
            x.issuer
        );
        assert!(x.key_fetches.is_empty());
        assert!(x.to_text().contains("the signature was not verified"));
    }
    // Claims faults show offline too.
    let mut claims = s.claims(TokenVersion::V2);
    claims.insert("aud".into(), json!("https://other.example"));
    let x = run(&config, &s.mint(&claims), true, "/").await;
    assert_eq!(codes(&x), ["audience_mismatch"]);

    // Online, with the issuer back, the forgery is caught.
    s.issuer.set_up(true);
    let x = run(&config, &forged, false, "/").await;
    assert_eq!(codes(&x), ["bad_signature"]);
    assert!(x.signature.starts_with("NOT verified"), "{}", x.signature);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_running_gateway() {
    let extra = Extra {
        entra: r#"allowed_client_ids = ["a672d62c-fc7b-4e81-a576-e60dc46e951d"]"#.into(),
        ..Extra::default()
    };
    let h = Harness::start_with(extra.clone()).await;
    let toml = common::config_toml(&h.issuer, &h.echo.url(), &extra);
    let config = common::load(&toml);

    let base = h.claims(TokenVersion::V2);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c.insert(k.into(), v);
        h.issuer.mint(&c)
    };
    let mut no_exp = base.clone();
    no_exp.remove("exp");
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": h.issuer.signing_key().kid});
    let tokens = [
        h.issuer.mint(&base),
        with("aud", json!("https://elsewhere.example")),
        with("exp", json!(now() - 600)),
        with("nbf", json!(now() + 600)),
        with("azp", json!("b52893c8-bc2e-47fc-918b-77022b299bbc")),
        with("ver", json!("1.0")),
        with(
            "iss",
            json!(format!("{}/{OTHER_TENANT}/v2.0", h.issuer.authority())),
        ),
        h.issuer.mint(&no_exp),
        sign_jwt(
            &SigningKey::generate(),
            &header,
            &Value::Object(base.clone()),
        ),
    ];
    let mut refused = 0;
    for token in &tokens {
        let x = run(&config, token, false, "/").await;
        let outcome = x.reasons.first().map_or(Outcome::Allowed, |first| {
            Outcome::Denied(
                *Reason::ALL
                    .iter()
                    .find(|r| r.as_str() == first.reason)
                    .expect("a reason code"),
            )
        });
        let before = h.gw.metrics.requests(outcome);
        let r = h.get_with_token("/x", token).await;
        assert_eq!(x.status, r.status().as_u16(), "{}", x.to_text());
        assert_eq!(
            h.gw.metrics.requests(outcome),
            before + 1,
            "the gateway's outcome is {outcome:?} too"
        );
        refused += usize::from(!x.accepted);
    }
    assert_eq!(refused, tokens.len() - 1, "all but the first are refused");
}

#[tokio::test]
async fn the_binary_reads_stdin_never_prints_the_signature_and_exits_by_verdict() {
    let s = Setup::start().await;
    let file = TempFile::with(
        "explain.toml",
        &common::config_toml(&s.issuer, &s.echo.url(), &Extra::default()),
    );
    let good = s.mint(&s.claims(TokenVersion::V1));
    let signature = good.rsplit('.').next().expect("signature").to_owned();

    let out = Proc::run(
        &["explain", "--config", file.as_str(), "-"],
        &[],
        Some(&format!("Bearer {good}\n")),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ACCEPTED"), "{}", out.stdout);
    assert!(
        out.stderr.contains("fetching entra-v1 keys"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains(&signature) && !out.stderr.contains(&signature));

    let mut claims = s.claims(TokenVersion::V1);
    claims.insert("aud".into(), json!("https://api.x.com/"));
    let bad = s.mint(&claims);
    let out = Proc::run(
        &[
            "explain",
            "--config",
            file.as_str(),
            "--format",
            "json",
            &bad,
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["accepted"], false);
    assert_eq!(v["reasons"][0]["reason"], "audience_mismatch");
    assert_eq!(v["claims"]["aud"], "https://api.x.com/");
    let bad_signature = bad.rsplit('.').next().expect("signature");
    assert!(!out.stdout.contains(bad_signature));

    // Not a JWS: refused (1), naming the part at fault.
    let out = Proc::run(
        &["explain", "--config", file.as_str(), "--offline", "abc.def"],
        &[],
        None,
    )
    .await;
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("three parts"), "{}", out.stdout);

    // No token at all: bad usage (2).
    let out = Proc::run(
        &["explain", "--config", file.as_str(), "-"],
        &[],
        Some("  \n"),
    )
    .await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("no token given"), "{}", out.stderr);
}

#[tokio::test]
async fn apis_step_up_and_no_api_are_explained() {
    let s = Setup::start().await;
    let config = s.config(&Extra {
        tail: "[[apis]]\nname = \"ehrbase\"\nprefix = \"/ehrbase\"\n\n[[apis.routes]]\npath = \"/ehrbase/admin\"\nauth_context = \"c1\"\nip_allow = [\"10.0.0.0/8\"]\n\n[[apis]]\nname = \"fhir\"\nprefix = \"/fhir\"\naudiences = [\"api://fhir\"]\n".into(),
        ..Extra::default()
    });
    let token = s.mint(&s.claims(TokenVersion::V2));
    // The route's authentication context, named with how to step up.
    let x = run(&config, &token, false, "/ehrbase/admin/x").await;
    assert_eq!(codes(&x), ["auth_context_required"]);
    assert_eq!(x.status, 401);
    assert!(
        x.route.contains("API ehrbase (prefix /ehrbase)"),
        "{}",
        x.route
    );
    assert!(x.route.contains("acrs must contain c1"), "{}", x.route);
    assert!(x.route.contains("allow [10.0.0.0/8]"), "{}", x.route);
    let f = finding(&x, Reason::AuthContextRequired);
    assert!(
        f.problem.contains("c1") && f.fix.contains("insufficient_claims"),
        "{f:?}"
    );
    let stepped = s.mint(&common::tokens::with(
        s.claims(TokenVersion::V2),
        "acrs",
        json!(["c1"]),
    ));
    assert!(
        run(&config, &stepped, false, "/ehrbase/admin/x")
            .await
            .accepted
    );
    // Another API's own audience.
    let x = run(&config, &token, false, "/fhir/Patient").await;
    assert_eq!(codes(&x), ["audience_mismatch"]);
    // Under no API.
    let x = run(&config, &token, false, "/other").await;
    assert_eq!(codes(&x), ["no_api"]);
    assert_eq!(x.status, 404);
    assert!(x.route.contains("under no [[apis]] prefix"), "{}", x.route);
}
