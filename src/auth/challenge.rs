//! `WWW-Authenticate` values, built once at startup.
//!
//! Power Query reads the challenge to find where to sign in. Microsoft documents the answers
//! unquoted, and Power Query's empty-bearer probe gets exactly
//! `Bearer authorization_uri=https://login.microsoftonline.com/<tenant>/oauth2/authorize`, so
//! these are written byte for byte as documented (SPEC §4), not re-quoted per RFC 7235.

use http::HeaderValue;

use crate::config::Challenge;

/// Which challenge a refusal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No credentials: realm + authorization_uri, no error (RFC 6750 §3.1).
    Missing,
    /// Power Query's empty-bearer probe: authorization_uri only.
    EmptyBearer,
    /// `error="invalid_token"`.
    InvalidToken,
    /// `error="invalid_request"`.
    InvalidRequest,
}

/// Pre-built header values.
#[derive(Debug, Clone)]
pub struct Challenges {
    /// `challenge.realm` and `challenge.authorization_uri`, for the claims challenge.
    realm: String,
    authorization_uri: String,
    missing: HeaderValue,
    empty_bearer: HeaderValue,
    invalid_token: HeaderValue,
    invalid_request: HeaderValue,
    /// `resource_metadata` URL of RFC 9728, when it does not depend on the request.
    resource_metadata: ResourceMetadata,
}

/// Where RFC 9728's `resource_metadata` parameter comes from.
#[derive(Debug, Clone)]
pub enum ResourceMetadata {
    Off,
    /// Already part of the pre-built values (`server.public_url` set).
    Fixed,
    /// Built from the scheme and host each request arrived with.
    PerRequest,
}

/// Path of the RFC 9728 document for a resource at the host's root.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// When `path` is the RFC 9728 document's, the resource path it names: `""` for the host's
/// root, `"/api"` for the path-inserted form of a resource at `/api` (§3.1).
#[must_use]
pub fn metadata_resource_path(path: &str) -> Option<&str> {
    path.strip_prefix(RESOURCE_METADATA_PATH)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// RFC 9728 §3.1: the metadata URL of `resource` inserts the well-known path between its
/// origin and its path (`https://h/api` -> `https://h/.well-known/oauth-protected-resource/api`).
#[must_use]
pub fn metadata_url(resource: &str) -> String {
    let resource = resource.trim_end_matches('/');
    let origin_end = resource
        .find("://")
        .and_then(|i| resource[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(resource.len());
    let (origin, path) = resource.split_at(origin_end);
    format!("{origin}{RESOURCE_METADATA_PATH}{path}")
}

impl Challenges {
    /// # Errors
    /// A value that cannot be a header (config validation already refuses those).
    pub fn new(
        c: &Challenge,
        public_url: Option<&str>,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let (suffix, resource_metadata) = match (c.resource_metadata, public_url) {
            (false, _) => (String::new(), ResourceMetadata::Off),
            (true, Some(url)) => (
                format!(", resource_metadata=\"{}\"", metadata_url(url)),
                ResourceMetadata::Fixed,
            ),
            (true, None) => (String::new(), ResourceMetadata::PerRequest),
        };
        let uri = &c.authorization_uri;
        Ok(Self {
            realm: c.realm.clone(),
            authorization_uri: c.authorization_uri.clone(),
            missing: HeaderValue::try_from(format!(
                "Bearer realm={}, authorization_uri={uri}{suffix}",
                c.realm
            ))?,
            // Power Query's probe: exactly as documented, never with extra parameters.
            empty_bearer: HeaderValue::try_from(format!("Bearer authorization_uri={uri}"))?,
            invalid_token: HeaderValue::try_from(format!(
                "Bearer authorization_uri={uri}, error=\"invalid_token\"{suffix}"
            ))?,
            invalid_request: HeaderValue::try_from(format!(
                "Bearer authorization_uri={uri}, error=\"invalid_request\"{suffix}"
            ))?,
            resource_metadata,
        })
    }

    /// The challenge of `kind`; `origin` (`scheme://host`) is used only when the RFC 9728
    /// metadata URL follows the request's own host.
    #[must_use]
    pub fn get(&self, kind: Kind, origin: Option<&str>) -> HeaderValue {
        let base = match kind {
            Kind::Missing => &self.missing,
            Kind::EmptyBearer => return self.empty_bearer.clone(),
            Kind::InvalidToken => &self.invalid_token,
            Kind::InvalidRequest => &self.invalid_request,
        };
        match (&self.resource_metadata, origin) {
            (ResourceMetadata::PerRequest, Some(origin)) => {
                let mut v = base.as_bytes().to_vec();
                v.extend_from_slice(b", resource_metadata=\"");
                v.extend_from_slice(origin.as_bytes());
                v.extend_from_slice(RESOURCE_METADATA_PATH.as_bytes());
                v.push(b'"');
                HeaderValue::from_bytes(&v).unwrap_or_else(|_| base.clone())
            }
            _ => base.clone(),
        }
    }

    /// `Bearer error="insufficient_scope", scope="…"` (RFC 6750 §3.1); `scope` is left out
    /// when the route names none. Scope names are checked at config time, so the value is
    /// always a valid quoted string.
    #[must_use]
    pub fn insufficient_scope(&self, scope: &str, origin: Option<&str>) -> HeaderValue {
        let value = if scope.is_empty() {
            "Bearer error=\"insufficient_scope\"".to_owned()
        } else {
            format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
        };
        self.finish(value, origin)
            .unwrap_or_else(|| HeaderValue::from_static("Bearer error=\"insufficient_scope\""))
    }

    /// Entra's claims challenge for a Conditional Access authentication context
    /// (learn.microsoft.com/entra/identity-platform/claims-challenge):
    /// `Bearer realm="…", authorization_uri="…", error="insufficient_claims", claims="…"`,
    /// where `claims` is the standard (padded) base64 of
    /// `{"access_token":{"acrs":{"essential":true,"value":"<context>"}}}`. MSAL decodes it and
    /// asks Entra for a new token with that claims request, which runs the Conditional
    /// Access policies of the context (MFA, a compliant device). The context ID is checked
    /// at config time (letters, digits, `-`, `_`).
    #[must_use]
    pub fn insufficient_claims(&self, context: &str, origin: Option<&str>) -> HeaderValue {
        use base64::Engine as _;
        let request =
            format!(r#"{{"access_token":{{"acrs":{{"essential":true,"value":"{context}"}}}}}}"#);
        let claims = base64::engine::general_purpose::STANDARD.encode(request);
        let value = format!(
            "Bearer realm=\"{}\", authorization_uri=\"{}\", error=\"insufficient_claims\", claims=\"{claims}\"",
            self.realm, self.authorization_uri
        );
        self.finish(value, origin)
            .unwrap_or_else(|| HeaderValue::from_static("Bearer error=\"insufficient_claims\""))
    }

    /// `value` with the RFC 9728 metadata URL appended when it is served.
    fn finish(&self, mut value: String, origin: Option<&str>) -> Option<HeaderValue> {
        match (&self.resource_metadata, origin) {
            (ResourceMetadata::Fixed, _) => {
                // The fixed suffix is the tail of every pre-built challenge but the probe's.
                let missing = self.missing.to_str().unwrap_or("");
                if let Some(i) = missing.find(", resource_metadata=") {
                    value.push_str(&missing[i..]);
                }
            }
            (ResourceMetadata::PerRequest, Some(origin)) => {
                value.push_str(&format!(
                    ", resource_metadata=\"{origin}{RESOURCE_METADATA_PATH}\""
                ));
            }
            _ => {}
        }
        HeaderValue::try_from(value).ok()
    }

    /// True when RFC 9728 metadata is served.
    #[must_use]
    pub fn serves_resource_metadata(&self) -> bool {
        !matches!(self.resource_metadata, ResourceMetadata::Off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_document_paths_and_the_resource_they_name() {
        let doc = RESOURCE_METADATA_PATH;
        assert_eq!(metadata_resource_path(doc), Some(""));
        assert_eq!(metadata_resource_path(&format!("{doc}/api")), Some("/api"));
        assert_eq!(metadata_resource_path(&format!("{doc}x")), None);
        assert_eq!(metadata_resource_path("/api"), None);
    }

    fn challenge(resource_metadata: bool) -> Challenge {
        Challenge {
            authorization_uri: "https://login.microsoftonline.com/t/oauth2/authorize".into(),
            realm: "https://login.microsoftonline.com/t".into(),
            resource_metadata,
        }
    }

    #[test]
    fn documented_forms() {
        let c = Challenges::new(&challenge(false), None).expect("valid");
        assert_eq!(
            c.get(Kind::Missing, None),
            "Bearer realm=https://login.microsoftonline.com/t, authorization_uri=https://login.microsoftonline.com/t/oauth2/authorize"
        );
        assert_eq!(
            c.get(Kind::EmptyBearer, None),
            "Bearer authorization_uri=https://login.microsoftonline.com/t/oauth2/authorize"
        );
        assert_eq!(
            c.get(Kind::InvalidToken, None),
            "Bearer authorization_uri=https://login.microsoftonline.com/t/oauth2/authorize, error=\"invalid_token\""
        );
    }

    #[test]
    fn the_claims_challenge_is_microsofts() {
        let c = Challenges::new(&challenge(false), None).expect("valid");
        // The example of learn.microsoft.com/entra/identity-platform/claims-challenge, for
        // {"access_token":{"acrs":{"essential":true,"value":"c1"}}}.
        assert_eq!(
            c.insufficient_claims("c1", None),
            "Bearer realm=\"https://login.microsoftonline.com/t\", authorization_uri=\"https://login.microsoftonline.com/t/oauth2/authorize\", error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19\""
        );
        // Padded standard base64, as in Microsoft's other example (value "cp1").
        assert!(
            c.insufficient_claims("cp1", None)
                .to_str()
                .expect("ascii")
                .ends_with("claims=\"eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ==\"")
        );
    }

    #[test]
    fn path_inserted_metadata_url() {
        assert_eq!(
            metadata_url("https://api.contoso.com/"),
            "https://api.contoso.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_url("https://api.contoso.com/ehrbase/rest"),
            "https://api.contoso.com/.well-known/oauth-protected-resource/ehrbase/rest"
        );
    }

    #[test]
    fn resource_metadata_never_on_the_probe() {
        let fixed =
            Challenges::new(&challenge(true), Some("https://api.contoso.com/")).expect("valid");
        assert!(
            fixed
                .get(Kind::Missing, None)
                .to_str()
                .expect("ascii")
                .ends_with(", resource_metadata=\"https://api.contoso.com/.well-known/oauth-protected-resource\"")
        );
        assert!(
            !fixed
                .get(Kind::EmptyBearer, None)
                .to_str()
                .expect("ascii")
                .contains("resource_metadata")
        );
        let per_request = Challenges::new(&challenge(true), None).expect("valid");
        assert!(
            per_request
                .get(Kind::InvalidToken, Some("http://h:1"))
                .to_str()
                .expect("ascii")
                .ends_with("resource_metadata=\"http://h:1/.well-known/oauth-protected-resource\"")
        );
        assert!(
            !per_request
                .get(Kind::EmptyBearer, Some("http://h:1"))
                .to_str()
                .expect("ascii")
                .contains("resource_metadata")
        );
    }
}
