//! Splitting and decoding a compact JWS (RFC 7515 §7.1) into its header and Entra claims.
//!
//! Nothing here is trusted yet: the result only tells the validator which issuer and key to
//! check the signature with. Parsing is strict: exactly three parts, unpadded base64url,
//! JSON objects without duplicate members, and claim types as RFC 7519 and Entra define them.
//!
//! Header and claims are each read in one pass that also notices a repeated member, so a
//! token's JSON is parsed once; member names are borrowed from the decoded bytes.

use std::borrow::Cow;
use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Reason;

/// The JOSE header members the gateway looks at. Everything else is ignored, in particular
/// `jku`, `x5u`, `jwk` and `x5c`: keys only ever come from the issuer's published JWKS.
#[derive(Debug)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
    pub crit: Option<serde_json::Value>,
}

/// `aud` is a string for Entra, but RFC 7519 allows an array.
#[derive(Debug, Clone)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// The audience values, one by one.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&str>, &[String]) = match self {
            Self::One(s) => (Some(s), &[]),
            Self::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }
}

/// The claims of an Entra access token (v1 or v2) that the gateway uses.
/// <https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub iss: Option<String>,
    pub aud: Option<Audience>,
    /// NumericDate: seconds, possibly fractional (RFC 7519 §2).
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    /// Issued at (NumericDate), for the lifetime bound.
    pub iat: Option<f64>,
    /// `"1.0"` or `"2.0"`.
    pub ver: Option<String>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub sub: Option<String>,
    /// v1 client application ID.
    pub appid: Option<String>,
    /// v2 client application ID.
    pub azp: Option<String>,
    /// Space-separated delegated scopes (user tokens only); some OpenID Connect providers
    /// (Okta) send an array, which is joined with spaces.
    /// RFC 9068 access tokens (Keycloak, Auth0) name it `scope`; a token with both is
    /// malformed.
    pub scp: Option<String>,
    /// App roles (app-only tokens' application permissions, or a user's roles).
    pub roles: Option<Vec<String>>,
    /// `app` for app-only tokens, when the optional claim is configured.
    pub idtyp: Option<String>,
    pub upn: Option<String>,
    pub unique_name: Option<String>,
    pub preferred_username: Option<String>,
    /// Every other claim, for route `claims` rules (`groups`, `wids`, custom claims).
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// The client application: `azp` (v2, OpenID Connect), else `appid` (v1).
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.azp.as_deref().or(self.appid.as_deref())
    }

    /// Delegated (user) tokens carry `scp`; app-only (client-credentials) tokens do not.
    #[must_use]
    pub fn is_delegated(&self) -> bool {
        self.scp.is_some() && self.idtyp.as_deref() != Some("app")
    }

    /// The delegated scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scp.as_deref().unwrap_or("").split_ascii_whitespace()
    }

    /// The app roles.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().flatten().map(String::as_str)
    }

    /// The string values of claim `name`: a string claim gives one, an array its string
    /// members, `scp` its space-separated scopes. `None` when the claim is absent.
    #[must_use]
    pub fn values(&self, name: &str) -> Option<Vec<&str>> {
        fn one(v: &Option<String>) -> Option<Vec<&str>> {
            v.as_deref().map(|s| vec![s])
        }
        match name {
            "iss" => one(&self.iss),
            "ver" => one(&self.ver),
            "tid" => one(&self.tid),
            "oid" => one(&self.oid),
            "sub" => one(&self.sub),
            "appid" => one(&self.appid),
            "azp" => one(&self.azp),
            "idtyp" => one(&self.idtyp),
            "upn" => one(&self.upn),
            "unique_name" => one(&self.unique_name),
            "preferred_username" => one(&self.preferred_username),
            "scp" => self
                .scp
                .as_deref()
                .map(|s| s.split_ascii_whitespace().collect()),
            "roles" => self
                .roles
                .as_ref()
                .map(|r| r.iter().map(String::as_str).collect()),
            "aud" => self.aud.as_ref().map(|a| a.iter().collect()),
            _ => match self.other.get(name)? {
                serde_json::Value::String(s) => Some(vec![s.as_str()]),
                serde_json::Value::Array(items) => {
                    Some(items.iter().filter_map(serde_json::Value::as_str).collect())
                }
                _ => Some(Vec::new()),
            },
        }
    }

    /// True when claim `name` was left out for size and is only referenced in `_claim_names`
    /// (Entra's group overage: more than 200 groups).
    #[must_use]
    pub fn is_overage(&self, name: &str) -> bool {
        self.other
            .get("_claim_names")
            .and_then(|n| n.get(name))
            .is_some()
    }

    /// The user's sign-in name: `upn`, else `preferred_username`, else `unique_name`.
    #[must_use]
    pub fn user_name(&self) -> Option<&str> {
        self.upn
            .as_deref()
            .or(self.preferred_username.as_deref())
            .or(self.unique_name.as_deref())
    }
}

/// A decoded but not yet verified token.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub header: Header,
    pub claims: Claims,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    pub signing_input: &'a str,
    /// The base64url signature, still encoded.
    pub signature: &'a str,
}

/// Splits and decodes `token`. Any deviation from a well-formed compact JWS is `Malformed`.
///
/// # Errors
/// [`Reason::Malformed`].
pub fn decode(token: &str) -> Result<Decoded<'_>, Reason> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    // An empty signature is well-formed here: `alg: none` is then refused by name, and any
    // other algorithm fails verification (`bad_signature`).
    if h.is_empty() || p.is_empty() {
        return Err(Reason::Malformed);
    }
    let header: Header = from_b64_json(h)?;
    let claims: Claims = from_b64_json(p)?;
    if [claims.exp, claims.nbf, claims.iat]
        .iter()
        .any(|v| v.is_some_and(|v| !v.is_finite()))
    {
        return Err(Reason::Malformed);
    }
    Ok(Decoded {
        header,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: s,
    })
}

fn from_b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, Reason> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Reason::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)
}

// ---- One-pass readers. A repeated member is an error: serde would otherwise keep one of
// two silently, and two parsers disagreeing on which one wins is how validation gets
// bypassed, so the whole token is refused instead.

/// A member name, borrowed from the JSON when it holds no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Marks member `bit` as read; an error when it was read before.
fn first<E: de::Error>(seen: &mut u32, bit: u32, name: &'static str) -> Result<(), E> {
    if *seen & (1 << bit) != 0 {
        return Err(E::duplicate_field(name));
    }
    *seen |= 1 << bit;
    Ok(())
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JOSE header object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let (mut alg, mut kid, mut crit) = (None, None, None);
                let mut seen = 0;
                // Members the gateway ignores (typ, x5t, ...), only to notice a repeat.
                let mut others: BTreeSet<Cow<'de, str>> = BTreeSet::new();
                while let Some(Name(name)) = map.next_key()? {
                    match name.as_ref() {
                        "alg" => {
                            first(&mut seen, 0, "alg")?;
                            alg = Some(map.next_value::<String>()?);
                        }
                        "kid" => {
                            first(&mut seen, 1, "kid")?;
                            kid = map.next_value()?;
                        }
                        "crit" => {
                            first(&mut seen, 2, "crit")?;
                            crit = map.next_value()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            if !others.insert(name) {
                                return Err(de::Error::custom("duplicate member"));
                            }
                        }
                    }
                }
                let alg = alg.ok_or_else(|| de::Error::missing_field("alg"))?;
                Ok(Header { alg, kid, crit })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Claims;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JWT claims object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
                let mut c = Claims::default();
                let mut seen = 0;
                while let Some(Name(name)) = map.next_key()? {
                    let field: (&mut Option<String>, u32, &'static str) = match name.as_ref() {
                        "iss" => (&mut c.iss, 0, "iss"),
                        "ver" => (&mut c.ver, 1, "ver"),
                        "tid" => (&mut c.tid, 2, "tid"),
                        "oid" => (&mut c.oid, 3, "oid"),
                        "sub" => (&mut c.sub, 4, "sub"),
                        "appid" => (&mut c.appid, 5, "appid"),
                        "azp" => (&mut c.azp, 6, "azp"),
                        "idtyp" => (&mut c.idtyp, 7, "idtyp"),
                        "upn" => (&mut c.upn, 8, "upn"),
                        "unique_name" => (&mut c.unique_name, 9, "unique_name"),
                        "preferred_username" => {
                            (&mut c.preferred_username, 10, "preferred_username")
                        }
                        "aud" => {
                            first(&mut seen, 11, "aud")?;
                            c.aud = map.next_value()?;
                            continue;
                        }
                        "exp" => {
                            first(&mut seen, 12, "exp")?;
                            c.exp = map.next_value()?;
                            continue;
                        }
                        "nbf" => {
                            first(&mut seen, 13, "nbf")?;
                            c.nbf = map.next_value()?;
                            continue;
                        }
                        "iat" => {
                            first(&mut seen, 16, "iat")?;
                            c.iat = map.next_value()?;
                            continue;
                        }
                        "scp" | "scope" => {
                            first(&mut seen, 14, "scp")?;
                            c.scp = map.next_value::<Option<Scopes>>()?.map(|s| s.0);
                            continue;
                        }
                        "roles" => {
                            first(&mut seen, 15, "roles")?;
                            c.roles = map.next_value()?;
                            continue;
                        }
                        _ => {
                            let value = map.next_value()?;
                            if c.other.insert(name.into_owned(), value).is_some() {
                                return Err(de::Error::custom("duplicate member"));
                            }
                            continue;
                        }
                    };
                    let (slot, bit, name) = field;
                    first(&mut seen, bit, name)?;
                    *slot = map.next_value()?;
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Audience, E> {
                Ok(Audience::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Audience, A::Error> {
                strings(seq).map(Audience::Many)
            }
        }
        d.deserialize_any(V)
    }
}

/// `scp` as a space-separated string, or an array of scope names (joined with spaces).
struct Scopes(String);

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scopes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scopes, E> {
                Ok(Scopes(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scopes, E> {
                Ok(Scopes(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scopes, A::Error> {
                strings(seq).map(|v| Scopes(v.join(" ")))
            }
        }
        d.deserialize_any(V)
    }
}

fn strings<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<String>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
    while let Some(s) = seq.next_element::<String>()? {
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(h: &str, p: &str) -> String {
        format!("{}.{}.c2ln", b64(h), b64(p))
    }

    #[test]
    fn decodes_v1_shape() {
        let t = token(
            r#"{"typ":"JWT","alg":"RS256","x5t":"k1","kid":"k1"}"#,
            r#"{"aud":"https://api.contoso.com","iss":"https://sts.windows.net/t/","exp":1.5e9,"appid":"a","scp":"user_impersonation","ver":"1.0"}"#,
        );
        let d = decode(&t).expect("decodes");
        assert_eq!(d.header.kid.as_deref(), Some("k1"));
        assert_eq!(d.claims.client_id(), Some("a"));
        assert_eq!(d.signature, "c2ln");
        assert!(t.starts_with(d.signing_input) && d.signing_input.ends_with(&b64(r#"{"aud":"https://api.contoso.com","iss":"https://sts.windows.net/t/","exp":1.5e9,"appid":"a","scp":"user_impersonation","ver":"1.0"}"#)));
    }

    #[test]
    fn refuses_malformed_shapes() {
        let ok_h = r#"{"alg":"RS256","kid":"k"}"#;
        let ok_p = r#"{"exp":1}"#;
        for bad in [
            String::new(),
            "a.b".into(),
            "a.b.c.d.e".into(),
            format!(".{}.c2ln", b64(ok_p)),
            format!("{}=.{}.c2ln", b64(ok_h), b64(ok_p)),
            token(r#"{"alg":"RS256","alg":"none"}"#, ok_p),
            token(ok_h, r#"{"exp":1,"exp":2}"#),
            token(ok_h, r#"{"exp":"1"}"#),
            token(ok_h, r#"{"aud":5}"#),
            token(ok_h, "[1]"),
            token("{}", ok_p),
        ] {
            assert_eq!(decode(&bad).err(), Some(Reason::Malformed), "{bad}");
        }
    }

    #[test]
    fn repeated_members_are_malformed_however_spelled() {
        let ok_h = r#"{"alg":"RS256","kid":"k"}"#;
        for (h, p) in [
            (r#"{"alg":"RS256","typ":"JWT","typ":"JWT"}"#, r#"{"exp":1}"#),
            (
                r#"{"alg":"RS256","kid":"a","k\u0069d":"b"}"#,
                r#"{"exp":1}"#,
            ),
            (ok_h, r#"{"scp":"a","scope":"b"}"#),
            (ok_h, r#"{"groups":["g1"],"groups":["g2"]}"#),
            (ok_h, r#"{"iss":"a","i\u0073s":"b"}"#),
            (ok_h, r#"{"roles":["a"],"roles":["b"]}"#),
        ] {
            assert_eq!(
                decode(&token(h, p)).err(),
                Some(Reason::Malformed),
                "{h} {p}"
            );
        }
    }

    #[test]
    fn claims_in_every_shape_entra_and_oidc_send() {
        let t = token(
            r#"{"alg":"PS256","kid":"k","crit":["b64"]}"#,
            r#"{"aud":["a","b"],"scope":["x","y"],"roles":["R"],"exp":1700000000.5,"nbf":null,"groups":["g"],"_claim_names":{"groups":"src1"}}"#,
        );
        let d = decode(&t).expect("decodes");
        assert_eq!(d.header.alg, "PS256");
        assert!(d.header.crit.is_some());
        assert_eq!(
            d.claims.aud.as_ref().map(|a| a.iter().collect::<Vec<_>>()),
            Some(vec!["a", "b"])
        );
        assert_eq!(d.claims.scp.as_deref(), Some("x y"));
        assert_eq!(d.claims.roles().collect::<Vec<_>>(), ["R"]);
        assert_eq!(d.claims.exp, Some(1_700_000_000.5));
        assert_eq!(d.claims.nbf, None);
        assert_eq!(d.claims.values("groups"), Some(vec!["g"]));
        assert!(d.claims.is_overage("groups"));
        assert!(!d.claims.other.contains_key("scope"));
    }

    #[test]
    fn audience_forms() {
        let one = Audience::One("a".into());
        let many = Audience::Many(vec!["b".into(), "c".into()]);
        assert_eq!(one.iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(many.iter().collect::<Vec<_>>(), ["b", "c"]);
    }
}
