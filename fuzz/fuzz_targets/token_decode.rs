//! `entragate::auth::token::decode` on any string: never panics; a decoded token is exactly
//! `signing_input "." signature` of the input, its NumericDates are finite, and every claim
//! accessor the route rules use works on it.
#![no_main]

use entragate::auth::token::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = decode(token) else {
        return;
    };
    assert_eq!(format!("{}.{}", d.signing_input, d.signature), token);
    assert_eq!(d.signing_input.matches('.').count(), 1);
    assert!(!d.signature.contains('.'));
    assert!(d.claims.exp.is_none_or(f64::is_finite));
    assert!(d.claims.nbf.is_none_or(f64::is_finite));
    exercise(&d.claims);
});

fn exercise(c: &entragate::auth::Claims) {
    let _ = c.client_id();
    let _ = c.is_delegated();
    let _ = c.scopes().count();
    let _ = c.roles().count();
    let _ = c.user_name();
    let _ = c.is_overage("groups");
    for name in [
        "aud",
        "scp",
        "roles",
        "groups",
        "tid",
        "wids",
        "_claim_names",
    ] {
        let _ = c.values(name);
    }
}
