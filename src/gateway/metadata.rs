//! The RFC 9728 protected-resource metadata document (`challenge.resource_metadata`).

use axum::body::Body;
use http::{HeaderValue, Response, header};

/// Inputs of the RFC 9728 protected-resource metadata document.
#[derive(Debug, Clone)]
pub struct ResourceMetadataDoc {
    /// `server.public_url`, else the request's own scheme and host.
    pub resource: Option<String>,
    pub authorization_server: String,
    pub scopes_supported: Vec<String>,
}

impl ResourceMetadataDoc {
    /// The document; `resource` is `server.public_url`, else `origin` (the request's own).
    #[must_use]
    pub fn render(&self, origin: Option<&str>) -> Response<Body> {
        let resource = self.resource.as_deref().or(origin).unwrap_or_default();
        let doc = serde_json::json!({
            "resource": resource,
            "authorization_servers": [self.authorization_server],
            "bearer_methods_supported": ["header"],
            "scopes_supported": self.scopes_supported,
        });
        let mut r = Response::new(Body::from(doc.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}
