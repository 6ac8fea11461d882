//! Non-canonical base64url in any part: unused trailing bits, padding, whitespace, other
//! alphabets and encodings.

use crate::common;

use std::collections::BTreeMap;

use super::{prepend_member, refuse_all};
use common::metrics::assert_denials;
use common::tokens::{b64, parts, sign_parts, sign_raw, unique_claims};
use common::verdicts::{PATH, accepted, refused_with};
use common::{Harness, TENANT};
use entragate::auth::Reason;
use entragate::keys::TokenVersion;
use serde_json::{Value, json};

/// Base64url alphabet, in value order.
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// JSON text of `claims` padded with blanks before the closing brace until its length is
/// `rem` modulo 3, so that its base64url form ends in a character with unused bits.
fn json_with_len_mod3(claims: &Value, rem: usize) -> String {
    let mut text = claims.to_string();
    while text.len() % 3 != rem {
        text.insert(text.len() - 1, ' ');
    }
    text
}

/// The same base64url text with the unused low bits of its last character set: it decodes
/// to the same bytes in a lenient decoder, and is refused by a strict one.
fn with_trailing_bits(canonical: &str) -> String {
    let spare_bits = match canonical.len() % 4 {
        2 => 4,
        3 => 2,
        _ => panic!(
            "no unused bits in a base64url string of length {}",
            canonical.len()
        ),
    };
    let last = *canonical.as_bytes().last().expect("non-empty");
    let value = B64URL.iter().position(|c| *c == last).expect("base64url");
    assert_eq!(value % (1 << spare_bits), 0, "canonical input");
    let mut out = canonical[..canonical.len() - 1].to_owned();
    out.push(char::from(B64URL[value | 1]));
    assert_ne!(out, canonical);
    out
}

#[tokio::test]
async fn non_canonical_base64url_padding_and_whitespace_are_refused() {
    let h = Harness::start().await;
    let key = h.issuer.signing_key();
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": key.kid});

    // Header and payload whose base64url ends in a character with unused bits (lengths 1 and
    // 2 modulo 3), each signed as sent, so only the encoding can be the reason.
    let header_1 = b64(json_with_len_mod3(&header, 1));
    let header_2 = b64(json_with_len_mod3(&header, 2));
    let payload_1 = b64(json_with_len_mod3(
        &Value::Object(unique_claims(&h, TokenVersion::V2)),
        1,
    ));
    let payload_2 = b64(json_with_len_mod3(
        &Value::Object(unique_claims(&h, TokenVersion::V1)),
        2,
    ));
    let good = h.issuer.mint(&unique_claims(&h, TokenVersion::V2));
    let (gh, gp, gs) = parts(&good);
    assert_eq!(gs.len() % 4, 2, "a 256-byte signature has 4 unused bits");

    // A signature with a base64 (not base64url) character in it.
    let std_alphabet_sig = loop {
        let t = h.issuer.mint(&unique_claims(&h, TokenVersion::V2));
        let (th, tp, ts) = parts(&t);
        if let Some(i) = ts.find(['-', '_']) {
            let swapped = if &ts[i..=i] == "-" { "+" } else { "/" };
            break format!("{th}.{tp}.{}{swapped}{}", &ts[..i], &ts[i + 1..]);
        }
    };

    let cases: Vec<(String, String, Reason)> = vec![
        (
            "header with trailing bits (4 unused)",
            sign_parts(&key, &with_trailing_bits(&header_1), &payload_1),
            Reason::Malformed,
        ),
        (
            "header with trailing bits (2 unused)",
            sign_parts(&key, &with_trailing_bits(&header_2), &payload_2),
            Reason::Malformed,
        ),
        (
            "payload with trailing bits (4 unused)",
            sign_parts(&key, &header_1, &with_trailing_bits(&payload_1)),
            Reason::Malformed,
        ),
        (
            "payload with trailing bits (2 unused)",
            sign_parts(&key, &header_2, &with_trailing_bits(&payload_2)),
            Reason::Malformed,
        ),
        (
            "signature with trailing bits",
            format!("{gh}.{gp}.{}", with_trailing_bits(gs)),
            Reason::BadSignature,
        ),
        (
            "signature padded with ==",
            format!("{good}=="),
            Reason::BadSignature,
        ),
        (
            "signature in the base64 alphabet",
            std_alphabet_sig,
            Reason::BadSignature,
        ),
        (
            "header padded with =",
            sign_parts(&key, &format!("{header_1}=="), &payload_1),
            Reason::Malformed,
        ),
        (
            "payload padded with =",
            sign_parts(&key, &header_1, &format!("{payload_1}==")),
            Reason::Malformed,
        ),
        (
            "header with a '/' (base64 alphabet)",
            format!("/{}.{gp}.{gs}", &gh[1..]),
            Reason::Malformed,
        ),
        (
            "UTF-8 BOM before the header JSON",
            sign_raw(
                &key,
                &format!("\u{feff}{header}"),
                &Value::Object(unique_claims(&h, TokenVersion::V2)).to_string(),
            ),
            Reason::Malformed,
        ),
        (
            "trailing bytes after the payload JSON",
            sign_raw(
                &key,
                &header.to_string(),
                &format!("{}x", Value::Object(unique_claims(&h, TokenVersion::V2))),
            ),
            Reason::Malformed,
        ),
        (
            "two JSON objects as the payload",
            sign_raw(
                &key,
                &header.to_string(),
                &format!("{0}{0}", Value::Object(unique_claims(&h, TokenVersion::V2))),
            ),
            Reason::Malformed,
        ),
        (
            "lone surrogate escape in a claim",
            sign_raw(
                &key,
                &header.to_string(),
                &prepend_member(
                    &Value::Object(unique_claims(&h, TokenVersion::V2)).to_string(),
                    "\"name\":\"\\ud800\"",
                ),
            ),
            Reason::Malformed,
        ),
        (
            "invalid UTF-8 in the payload",
            sign_parts(
                &key,
                &b64(header.to_string()),
                &b64([
                    &b"{\"name\":\"\xff\","[..],
                    &Value::Object(unique_claims(&h, TokenVersion::V2))
                        .to_string()
                        .as_bytes()[1..],
                ]
                .concat()),
            ),
            Reason::Malformed,
        ),
        (
            "payload nested 20000 deep",
            sign_raw(
                &key,
                &header.to_string(),
                &prepend_member(
                    &Value::Object(unique_claims(&h, TokenVersion::V2)).to_string(),
                    &format!("\"deep\":{}{}", "[".repeat(20_000), "]".repeat(20_000)),
                ),
            ),
            Reason::Malformed,
        ),
    ]
    .into_iter()
    .map(|(w, t, r)| (w.to_owned(), t, r))
    .collect();
    refuse_all(&h, &cases).await;

    // Whitespace inside the token: never a b64token (RFC 6750 §2.1), so never parsed.
    let mut whitespace = 0;
    for (what, value) in [
        (
            "blank inside the header",
            format!("Bearer {} {}.{gp}.{gs}", &gh[..4], &gh[4..]),
        ),
        ("blank before a dot", format!("Bearer {gh} .{gp}.{gs}")),
        (
            "tab inside the payload",
            format!("Bearer {gh}.{}\t{}.{gs}", &gp[..4], &gp[4..]),
        ),
        (
            "blank inside the signature",
            format!("Bearer {gh}.{gp}.{} {}", &gs[..4], &gs[4..]),
        ),
        (
            "a second token after a blank",
            format!("Bearer {good} {good}"),
        ),
        (
            "a second credential after a comma",
            format!("Bearer {good}, Basic dXNlcjpwYXNz"),
        ),
    ] {
        refused_with(&h, TENANT, &value, what).await;
        whitespace += 1;
    }
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, _, r) in &cases {
        *expected.entry(r.as_str()).or_default() += 1;
    }
    *expected.entry("malformed").or_default() += whitespace;
    assert_denials(&h, &expected).await;
    assert_eq!(h.echo.requests(), 0);

    // Controls: the padded-JSON constructions, canonically encoded, and blanks around the
    // token (RFC 6750 allows 1*SP after the scheme; the gateway also trims tabs).
    accepted(
        &h,
        &sign_parts(&key, &header_1, &payload_1),
        "canonical, 4 unused bits",
    )
    .await;
    accepted(
        &h,
        &sign_parts(&key, &header_2, &payload_2),
        "canonical, 2 unused bits",
    )
    .await;
    accepted(&h, &good, "the untouched token").await;
    let r = h
        .client
        .get(h.url(PATH))
        .header("authorization", format!("Bearer  \t {good}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "blanks between scheme and token");
}
