//! Issuer values as OpenID metadata publishes them, including Entra's multi-tenant template
//! (`https://login.microsoftonline.com/{tenantid}/v2.0`), matched without allocating.

use crate::config::is_guid;

const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// An issuer, either exact or with a `{tenantid}` placeholder filled from the token's `tid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerTemplate {
    prefix: String,
    /// Present when the issuer holds `{tenantid}`: what follows the placeholder.
    suffix: Option<String>,
}

impl IssuerTemplate {
    #[must_use]
    pub fn new(issuer: &str) -> Self {
        match issuer.split_once(TENANT_PLACEHOLDER) {
            Some((prefix, suffix)) => Self {
                prefix: prefix.to_owned(),
                suffix: Some(suffix.to_owned()),
            },
            None => Self {
                prefix: issuer.to_owned(),
                suffix: None,
            },
        }
    }

    /// True when the issuer is a multi-tenant template.
    #[must_use]
    pub fn is_template(&self) -> bool {
        self.suffix.is_some()
    }

    /// Does `iss` equal this issuer, with `{tenantid}` replaced by `tid`?
    ///
    /// For a template, `tid` must be a GUID (Microsoft.IdentityModel's `AadIssuerValidator`
    /// does the same); an exact issuer ignores `tid`.
    #[must_use]
    pub fn matches(&self, iss: &str, tid: Option<&str>) -> bool {
        match &self.suffix {
            None => iss == self.prefix,
            Some(suffix) => {
                let Some(tid) = tid.filter(|t| is_guid(t)) else {
                    return false;
                };
                iss.len() == self.prefix.len() + tid.len() + suffix.len()
                    && iss.starts_with(self.prefix.as_str())
                    && iss.ends_with(suffix.as_str())
                    && &iss[self.prefix.len()..self.prefix.len() + tid.len()] == tid
            }
        }
    }
}

impl std::fmt::Display for IssuerTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.suffix {
            Some(s) => write!(f, "{}{TENANT_PLACEHOLDER}{s}", self.prefix),
            None => f.write_str(&self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn exact_issuer() {
        let t =
            IssuerTemplate::new("https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/");
        assert!(!t.is_template());
        assert!(t.matches(&format!("https://sts.windows.net/{TID}/"), None));
        assert!(!t.matches(&format!("https://sts.windows.net/{TID}"), Some(TID)));
    }

    #[test]
    fn template_issuer() {
        let t = IssuerTemplate::new("https://login.microsoftonline.com/{tenantid}/v2.0");
        assert!(t.is_template());
        let iss = format!("https://login.microsoftonline.com/{TID}/v2.0");
        assert!(t.matches(&iss, Some(TID)));
        assert!(!t.matches(&iss, None));
        assert!(!t.matches(&iss, Some("00000000-0000-0000-0000-000000000000")));
        assert!(!t.matches("https://login.microsoftonline.com/evil/v2.0", Some("evil")));
        assert!(!t.matches(&format!("{iss}/x"), Some(TID)));
        assert_eq!(
            t.to_string(),
            "https://login.microsoftonline.com/{tenantid}/v2.0"
        );
    }
}
