//! `entragate::auth::token::decode` with the fuzzer writing the JSON, not the base64: the input
//! is `header JSON \0 payload JSON` (or only the payload, under a fixed RS256 header), encoded
//! here into a compact JWS. Never panics; an accepted payload is one JSON object whose claims
//! read the same through the typed `Claims` as through a plain `serde_json::Value` (no member
//! that two parsers could read differently).
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entragate::auth::token::decode;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (header, payload): (&[u8], &[u8]) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (br#"{"typ":"JWT","alg":"RS256","kid":"k"}"#, data),
    };
    let token = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let Ok(d) = decode(&token) else {
        return;
    };
    let h: Value = serde_json::from_slice(header).expect("an accepted header is JSON");
    let p: Value = serde_json::from_slice(payload).expect("an accepted payload is JSON");
    assert!(h.is_object() && p.is_object());
    assert_eq!(
        h.get("alg").and_then(Value::as_str),
        Some(d.header.alg.as_str())
    );
    assert_eq!(
        h.get("kid").and_then(Value::as_str),
        d.header.kid.as_deref()
    );

    let c = &d.claims;
    for (name, typed) in [
        ("iss", c.iss.as_deref()),
        ("tid", c.tid.as_deref()),
        ("ver", c.ver.as_deref()),
        ("oid", c.oid.as_deref()),
        ("appid", c.appid.as_deref()),
        ("azp", c.azp.as_deref()),
        ("upn", c.upn.as_deref()),
    ] {
        assert_eq!(p.get(name).and_then(Value::as_str), typed, "{name}");
    }
    for (name, typed) in [("exp", c.exp), ("nbf", c.nbf)] {
        assert_eq!(p.get(name).and_then(Value::as_f64), typed, "{name}");
        assert!(typed.is_none_or(f64::is_finite), "{name}");
    }
    let aud: Option<Vec<&str>> = c.aud.as_ref().map(|a| a.iter().collect());
    let raw_aud: Option<Vec<&str>> = match p.get("aud") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.as_str()]),
        Some(Value::Array(v)) => Some(v.iter().map(|x| x.as_str().expect("string aud")).collect()),
        Some(other) => panic!("aud {other} accepted"),
    };
    assert_eq!(aud, raw_aud);
    // `scp` or (RFC 9068) `scope`, never both: the one present is the scopes.
    if let Some(Value::String(s)) = p.get("scp").or_else(|| p.get("scope"))
        && p.get("scp").is_some() != p.get("scope").is_some()
    {
        assert_eq!(c.scp.as_deref(), Some(s.as_str()));
    }
});
