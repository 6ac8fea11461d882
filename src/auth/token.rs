//! Splitting and decoding a compact JWS (RFC 7515 §7.1) into its header and Entra claims.
//!
//! Nothing here is trusted yet: the result only tells the validator which issuer and key to
//! check the signature with. Parsing is strict: exactly three parts, unpadded base64url,
//! JSON objects without duplicate members, and claim types as RFC 7519 and Entra define them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::Reason;

/// The JOSE header members the gateway looks at. Everything else is ignored, in particular
/// `jku`, `x5u`, `jwk` and `x5c`: keys only ever come from the issuer's published JWKS.
#[derive(Debug, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// `aud` is a string for Entra, but RFC 7519 allows an array.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    pub iss: Option<String>,
    pub aud: Option<Audience>,
    /// NumericDate: seconds, possibly fractional (RFC 7519 §2).
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
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
    /// RFC 9068 access tokens (Keycloak, Auth0) name it `scope`.
    #[serde(default, alias = "scope", deserialize_with = "scopes")]
    pub scp: Option<String>,
    /// App roles (app-only tokens' application permissions, or a user's roles).
    pub roles: Option<Vec<String>>,
    /// `app` for app-only tokens, when the optional claim is configured.
    pub idtyp: Option<String>,
    pub upn: Option<String>,
    pub unique_name: Option<String>,
    pub preferred_username: Option<String>,
    /// Every other claim, for route `claims` rules (`groups`, `wids`, custom claims).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `scp` as a space-separated string, or an array of scope names.
fn scopes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scp {
        Text(String),
        List(Vec<String>),
    }
    Ok(Option::<Scp>::deserialize(d)?.map(|s| match s {
        Scp::Text(t) => t,
        Scp::List(v) => v.join(" "),
    }))
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
    if claims.exp.is_some_and(|v| !v.is_finite()) || claims.nbf.is_some_and(|v| !v.is_finite()) {
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
    if has_duplicate_members(&bytes) {
        return Err(Reason::Malformed);
    }
    serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)
}

/// True when the top-level JSON object repeats a member name. serde keeps the last of two
/// `ignored` duplicates silently, and two parsers disagreeing on which one wins is how
/// validation gets bypassed, so the whole token is refused instead.
fn has_duplicate_members(json: &[u8]) -> bool {
    let Ok(map) = serde_json::from_slice::<DuplicateCheck>(json) else {
        // Not an object at all: the typed parse reports it.
        return false;
    };
    map.0
}

/// Deserializes an object's keys only, remembering whether one repeated.
struct DuplicateCheck(bool);

impl<'de> Deserialize<'de> for DuplicateCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DuplicateCheck;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut dup = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    dup |= !seen.insert(key.into_owned());
                }
                Ok(DuplicateCheck(dup))
            }
        }
        d.deserialize_map(V)
    }
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
    fn audience_forms() {
        let one = Audience::One("a".into());
        let many = Audience::Many(vec!["b".into(), "c".into()]);
        assert_eq!(one.iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(many.iter().collect::<Vec<_>>(), ["b", "c"]);
    }
}
