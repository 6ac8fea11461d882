//! `exp` and `nbf` of every shape: strings, floats, negative, huge; each judged as an RFC 7519
//! NumericDate.

use crate::common;

use std::collections::BTreeMap;

use super::{header_text, prepend_member, refuse_all};
use common::metrics::{allowed, assert_denials};
use common::tokens::{sign_raw, unique_claims, with};
use common::verdicts::accepted;
use common::{Harness, now};
use entragate::auth::Reason;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

#[tokio::test]
async fn numeric_dates_of_every_shape_are_judged_as_rfc_7519_numeric_dates() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let header = header_text(&key.kid);
    let t = now();
    let v2 = || unique_claims(&h, TokenVersion::V2);
    // Claims JSON with `exp`/`nbf` replaced by raw JSON number text (to write 1e300, 1e309 and
    // integers beyond i64 exactly as an attacker would).
    let raw_dates = |exp: &str, nbf: Option<&str>| {
        let mut claims = v2();
        claims.remove("exp");
        claims.remove("nbf");
        let text = Value::Object(claims).to_string();
        let text = prepend_member(&text, &format!("\"exp\":{exp}"));
        let text = match nbf {
            Some(n) => prepend_member(&text, &format!("\"nbf\":{n}")),
            None => text,
        };
        sign_raw(&key, &header, &text)
    };

    let refusals: Vec<(String, String, Reason)> = vec![
        (
            "nbf as a string",
            h.issuer
                .mint(&with(v2(), "nbf", json!((t - 60).to_string()))),
            Reason::Malformed,
        ),
        (
            "exp as a string float",
            h.issuer
                .mint(&with(v2(), "exp", json!(format!("{}.5", t + 3600)))),
            Reason::Malformed,
        ),
        (
            "exp as an ISO date",
            h.issuer
                .mint(&with(v2(), "exp", json!("2999-01-01T00:00:00Z"))),
            Reason::Malformed,
        ),
        (
            "exp true",
            h.issuer.mint(&with(v2(), "exp", json!(true))),
            Reason::Malformed,
        ),
        (
            "exp as an array",
            h.issuer.mint(&with(v2(), "exp", json!([t + 3600]))),
            Reason::Malformed,
        ),
        (
            "exp as an object",
            h.issuer
                .mint(&with(v2(), "exp", json!({"value": t + 3600}))),
            Reason::Malformed,
        ),
        (
            "nbf as an array",
            h.issuer.mint(&with(v2(), "nbf", json!([t - 60]))),
            Reason::Malformed,
        ),
        (
            "exp 1e309 (beyond f64)",
            raw_dates("1e309", None),
            Reason::Malformed,
        ),
        (
            "exp -1e309 (beyond f64)",
            raw_dates("-1e309", None),
            Reason::Malformed,
        ),
        (
            "nbf 1e309 (beyond f64)",
            raw_dates(&(t + 3600).to_string(), Some("1e309")),
            Reason::Malformed,
        ),
        (
            "exp null",
            h.issuer.mint(&with(v2(), "exp", json!(null))),
            Reason::MissingClaim,
        ),
        (
            "exp negative",
            h.issuer.mint(&with(v2(), "exp", json!(-1))),
            Reason::Expired,
        ),
        (
            "exp 0",
            h.issuer.mint(&with(v2(), "exp", json!(0))),
            Reason::Expired,
        ),
        ("exp -1e300", raw_dates("-1e300", None), Reason::Expired),
        (
            "exp float 2 min ago",
            h.issuer.mint(&with(v2(), "exp", json!(t as f64 - 120.5))),
            Reason::Expired,
        ),
        ("exp -0.0", raw_dates("-0.0", None), Reason::Expired),
        (
            "nbf float 5 min ahead",
            h.issuer.mint(&with(v2(), "nbf", json!(t as f64 + 300.5))),
            Reason::NotYetValid,
        ),
        (
            "nbf 1e300",
            raw_dates(&(t + 3600).to_string(), Some("1e300")),
            Reason::NotYetValid,
        ),
        (
            "nbf f64::MAX",
            raw_dates(&(t + 3600).to_string(), Some("1.7976931348623157e308")),
            Reason::NotYetValid,
        ),
        // Signed, but claiming to live for years: entra.max_token_lifetime (28 h).
        (
            "exp 1e300",
            raw_dates("1e300", None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp f64::MAX",
            raw_dates("1.7976931348623157e308", None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp i64::MAX",
            raw_dates(&i64::MAX.to_string(), None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp beyond u64",
            raw_dates("18446744073709551616", None),
            Reason::LifetimeTooLong,
        ),
        (
            "exp ten years ahead",
            h.issuer
                .mint(&with(v2(), "exp", json!(t + 10 * 365 * 24 * 3600))),
            Reason::LifetimeTooLong,
        ),
        (
            "exp 29 h ahead, no iat",
            h.issuer.mint(&with(
                {
                    let mut c = v2();
                    c.remove("iat");
                    c
                },
                "exp",
                json!(t + 29 * 3600),
            )),
            Reason::LifetimeTooLong,
        ),
        (
            "issued 30 h ago, exp 1 h ahead (lives 31 h)",
            h.issuer.mint(&with(v2(), "iat", json!(t - 30 * 3600))),
            Reason::LifetimeTooLong,
        ),
        (
            "iat as a string",
            h.issuer.mint(&with(v2(), "iat", json!(t.to_string()))),
            Reason::Malformed,
        ),
    ]
    .into_iter()
    .map(|(w, tok, r)| (w.to_owned(), tok, r))
    .collect();
    refuse_all(&h, &refusals).await;
    assert_eq!(h.echo.requests(), 0);

    // RFC 7519 §2: NumericDate is a JSON number, "non-integer values can be represented".
    let acceptances: Vec<(&str, String)> = vec![
        (
            "exp float 1 h ahead",
            h.issuer.mint(&with(v2(), "exp", json!(t as f64 + 3600.5))),
        ),
        (
            "exp float with exponent",
            raw_dates(&format!("{:e}", (t + 3600) as f64), None),
        ),
        (
            "nbf float in the past",
            h.issuer.mint(&with(v2(), "nbf", json!(t as f64 - 0.5))),
        ),
        ("nbf negative", h.issuer.mint(&with(v2(), "nbf", json!(-1)))),
        (
            "nbf -1e300",
            raw_dates(&(t + 3600).to_string(), Some("-1e300")),
        ),
        ("nbf null", h.issuer.mint(&with(v2(), "nbf", json!(null)))),
        // entra.max_token_lifetime (28 h by default): up to it, from iat and from now.
        (
            "exp 27 h ahead, iat now",
            h.issuer.mint(&with(
                with(v2(), "iat", json!(t)),
                "exp",
                json!(t + 27 * 3600),
            )),
        ),
        (
            "exp 28 h ahead, no iat",
            h.issuer.mint(&with(
                {
                    let mut c = v2();
                    c.remove("iat");
                    c
                },
                "exp",
                json!(t + 28 * 3600),
            )),
        ),
        (
            "iat in the future (not checked: Entra does not require it)",
            h.issuer.mint(&with(v2(), "iat", json!(t + 600))),
        ),
    ];
    for (what, token) in &acceptances {
        accepted(&h, token, what).await;
    }
    assert_eq!(allowed(&h).await, 9);
    assert_eq!(h.echo.requests(), 9);
    // Nothing was refused after the refusals above.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, _, r) in &refusals {
        *expected.entry(r.as_str()).or_default() += 1;
    }
    assert_denials(&h, &expected).await;
}
