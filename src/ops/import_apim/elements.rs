//! The two policy elements, attribute by attribute and child by child: what maps to an
//! entragate key, what is collected for `[entra]` / `[[oidc]]` / `[[routes]]`, and what has no
//! equivalent (recorded as such).

use roxmltree::Node;

use super::draft::{self, string, strings};
use super::{Conversion, claims, values};

/// Entra's authorities (public and sovereign clouds).
const ENTRA_HOSTS: [&str; 5] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
];

impl Conversion {
    pub(super) fn unconverted(&mut self, what: String) {
        self.warnings.push(format!("no equivalent: {what}"));
        self.draft.unconverted.push(what);
    }

    pub(super) fn validate_jwt(&mut self, p: Node) {
        self.common_attributes(p);
        for a in p.attributes() {
            match a.name() {
                "clock-skew" => self.clock_skew(a.value()),
                "require-expiration-time" if a.value().eq_ignore_ascii_case("false") => self
                    .unconverted(
                        "require-expiration-time=\"false\": entragate always requires exp".into(),
                    ),
                "require-signed-tokens" if a.value().eq_ignore_ascii_case("false") => self
                    .unconverted(
                        "require-signed-tokens=\"false\": entragate accepts signed tokens only"
                            .into(),
                    ),
                "require-scheme" if !a.value().eq_ignore_ascii_case("bearer") => {
                    self.unconverted(format!(
                        "require-scheme=\"{}\": entragate reads Bearer tokens only",
                        a.value()
                    ))
                }
                _ => {}
            }
        }
        let mut issuers = Vec::new();
        let mut openid = Vec::new();
        for child in p.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "openid-config" => openid.extend(child.attribute("url").map(str::to_owned)),
                "audiences" => self.audiences_from(child, "audience"),
                "issuers" => issuers.extend(values(child, "issuer")),
                "required-claims" => claims::required(self, child),
                "issuer-signing-keys" => self.unconverted("<issuer-signing-keys>: keys come only from the issuer's published metadata (add <openid-config> instead); symmetric (HMAC) keys are never accepted".into()),
                "decryption-keys" => self.unconverted("<decryption-keys>: encrypted tokens (JWE) are not accepted".into()),
                other => self.unconverted(format!("<{other}> element")),
            }
        }
        for url in &openid {
            self.openid_config(url, &issuers);
        }
        if openid.is_empty() {
            // Without metadata, Entra issuers still name the tenant.
            for iss in &issuers {
                if let Some(tid) = entra_issuer_tenant(iss) {
                    self.tenant
                        .get_or_insert((tid, format!("from <issuer>{iss}</issuer>")));
                }
            }
        }
        let entra_issuers: Vec<&String> = issuers
            .iter()
            .filter(|i| entra_issuer_tenant(i).is_some())
            .collect();
        if !entra_issuers.is_empty() {
            self.audience_notes.push(format!(
                "<issuers> {entra_issuers:?}: entragate takes the issuer from the tenant's metadata and accepts both Entra forms (v1 https://sts.windows.net/<tenant>/ and v2 <authority>/<tenant>/v2.0)"
            ));
        }
    }

    pub(super) fn validate_azure_ad_token(&mut self, p: Node) {
        self.common_attributes(p);
        if let Some(t) = p.attribute("tenant-id") {
            let t = t.trim();
            let t = t
                .strip_prefix("https://")
                .unwrap_or(t)
                .trim_end_matches('/');
            self.tenant = Some((t.to_owned(), "from tenant-id".into()));
        }
        if let Some(e) = p.attribute("authentication-endpoint") {
            self.authority = Some((
                e.trim().trim_end_matches('/').to_owned(),
                "from authentication-endpoint".into(),
            ));
        }
        for child in p.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "client-application-ids" => self.client_ids.extend(values(child, "application-id")),
                "backend-application-ids" => {
                    self.audience_notes.push(
                        "<backend-application-ids>: the API's client IDs, the aud of v2 tokens;\nadd the Application ID URI too if clients request it (v1 tokens, e.g. Power BI)"
                            .into(),
                    );
                    self.audiences.extend(values(child, "application-id"));
                }
                "audiences" => self.audiences_from(child, "audience"),
                "required-claims" => claims::required(self, child),
                "decryption-keys" => self.unconverted(
                    "<decryption-keys>: encrypted tokens (JWE) are not accepted".into(),
                ),
                other => self.unconverted(format!("<{other}> element")),
            }
        }
    }

    /// Attributes both policies share.
    fn common_attributes(&mut self, p: Node) {
        for a in p.attributes() {
            let (name, value) = (a.name(), a.value());
            match name {
                "header-name" if value.eq_ignore_ascii_case("authorization") => {}
                "header-name" => self.unconverted(format!("header-name=\"{value}\": entragate reads the token from the Authorization header only")),
                "query-parameter-name" => self.unconverted(format!("query-parameter-name=\"{value}\": entragate reads the token from the Authorization header only")),
                "token-value" => self.unconverted(format!("token-value=\"{value}\": entragate reads the token from the Authorization header only")),
                "failed-validation-httpcode" if value.trim() == "401" => {}
                "failed-validation-httpcode" => self.unconverted(format!("failed-validation-httpcode=\"{value}\": entragate answers 401 invalid_token with the WWW-Authenticate challenge Power Query needs (403 only for [[routes]] rules)")),
                "failed-validation-error-message" => self.unconverted(format!("failed-validation-error-message=\"{value}\": entragate answers {{\"error\":\"invalid_token\"}}; the reason goes to its log and metrics")),
                "output-token-variable-name" => self.unconverted(format!("output-token-variable-name=\"{value}\": the verified identity goes to the upstream in X-Auth-* headers ([identity] claims_header for every claim)")),
                "clock-skew" | "require-expiration-time" | "require-signed-tokens" | "require-scheme" | "tenant-id" | "authentication-endpoint" => {}
                other => self.unconverted(format!("attribute {other}=\"{value}\"")),
            }
        }
    }

    fn clock_skew(&mut self, value: &str) {
        match value.trim().parse::<u64>() {
            Ok(s) => self.clock_skew = Some(format!("{s}s")),
            Err(_) => self.unconverted(format!("clock-skew=\"{value}\": not a number of seconds")),
        }
    }

    fn audiences_from(&mut self, node: Node, child: &str) {
        for v in values(node, child) {
            if v.starts_with('@') {
                self.unconverted(format!("audience {v}: a policy expression (APIM computed it per request); list the public URL clients call, e.g. https://api.contoso.com, in entra.audiences"));
            } else {
                self.audiences.push(v);
            }
        }
    }

    fn openid_config(&mut self, url: &str, issuers: &[String]) {
        if let Some((authority, tenant, appid)) = entra_metadata(url) {
            self.tenant = Some((tenant, format!("from <openid-config url=\"{url}\">")));
            self.authority = Some((authority, "from <openid-config>".into()));
            if appid {
                self.unconverted(format!(
                    "the ?appid= in {url}: application-specific signing keys are not supported"
                ));
            }
            return;
        }
        let derived = url
            .strip_suffix("/.well-known/openid-configuration")
            .map(str::to_owned);
        let (issuer, why) = match issuers.iter().find(|i| entra_issuer_tenant(i).is_none()) {
            Some(i) => (i.clone(), "from <issuers>".to_owned()),
            None => (
                derived.unwrap_or_else(|| url.to_owned()),
                "derived from the openid-config URL: must equal the metadata's issuer (entragate check shows it)".to_owned(),
            ),
        };
        self.oidc.push((issuer, url.to_owned(), why));
    }

    /// Writes `[entra]`, `[[routes]]` and `[[oidc]]` from what was collected.
    pub(super) fn finish(&mut self) {
        let d = &mut self.draft;
        let e = &mut d.entra;
        match &self.tenant {
            Some((t, why)) => e.set("tenant_id", &string(t), why),
            None if self.oidc.is_empty() => {
                e.note(
                    "No Entra tenant in the policy: set tenant_id to the Directory (tenant) ID.",
                );
                e.set("tenant_id", &string(""), "REQUIRED");
            }
            None => {
                e.note("Not an Entra policy: its tokens come from the [[oidc]] issuer below. [entra] is always in force:\nset your Entra tenant and API here (with the placeholders, /readyz waits for keys that never load).");
                e.set(
                    "tenant_id",
                    &string("00000000-0000-0000-0000-000000000000"),
                    "placeholder: not in the policy",
                );
                self.warnings.push("[entra] holds placeholders: entragate always validates Entra tokens too; set the tenant_id and audiences of your Entra app".into());
            }
        }
        // A sovereign cloud's sign-in host is entra.cloud (which sets the authority, the
        // challenge host and the v1 issuer); any other host stays an authority.
        if let Some((a, why)) = &self.authority
            && a != crate::config::DEFAULT_AUTHORITY
        {
            match crate::config::Cloud::of_authority(a) {
                Some(crate::config::Cloud::Global) => {}
                Some(cloud) => e.set("cloud", &string(cloud.as_str()), &format!("{why} {a}")),
                None => e.set("authority", &string(a), why),
            }
        }
        let mut audiences = self.audiences.clone();
        audiences.dedup();
        for n in &self.audience_notes {
            e.note(n);
        }
        if self.oidc.is_empty() || self.tenant.is_some() {
            e.set("audiences", &strings(&audiences), "from <audiences>; for Power BI include the Application ID URI https://<public host>");
        } else {
            e.set(
                "audiences",
                &strings(&["00000000-0000-0000-0000-000000000000"]),
                "placeholder: the policy's audiences belong to the [[oidc]] issuer",
            );
        }
        if !self.client_ids.is_empty() {
            e.set(
                "allowed_client_ids",
                &strings(&self.client_ids),
                "from client application IDs / required appid, azp",
            );
        }
        if !self.tenants.is_empty() {
            e.set(
                "allowed_tenants",
                &strings(&self.tenants),
                "from required-claims tid",
            );
        }
        match &self.clock_skew {
            Some(s) => e.set("clock_skew", &string(s), "from clock-skew"),
            None => e.set(
                "clock_skew",
                &string("0s"),
                "APIM's default; entragate's own default is 60s",
            ),
        }
        if self.route_used {
            let mut route = std::mem::take(&mut self.route);
            let mut head = draft::Table::default();
            head.note("From <required-claims>: every request must meet these.");
            head.set("path", &string("/"), "");
            head.append(&mut route);
            d.routes.push(head);
        }
        for (issuer, url, why) in &self.oidc {
            let mut t = draft::Table::default();
            t.set("issuer", &string(issuer), why);
            t.set("discovery_url", &string(url), "from <openid-config>");
            t.set("audiences", &strings(&self.audiences), "from <audiences>");
            if !self.client_ids.is_empty() {
                t.set(
                    "allowed_client_ids",
                    &strings(&self.client_ids),
                    "from required-claims",
                );
            }
            d.oidc.push(t);
        }
    }
}

/// `(authority, tenant, has ?appid=)` of an Entra metadata URL.
fn entra_metadata(url: &str) -> Option<(String, String, bool)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    if !ENTRA_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return None;
    }
    let path = uri.path();
    let tenant = path.trim_start_matches('/').split('/').next()?.to_owned();
    if tenant.is_empty() || !path.ends_with("/.well-known/openid-configuration") {
        return None;
    }
    let appid = uri.query().is_some_and(|q| q.contains("appid="));
    Some((format!("{}://{}", uri.scheme_str()?, host), tenant, appid))
}

/// The tenant of an Entra issuer value (v1 or v2 form).
fn entra_issuer_tenant(iss: &str) -> Option<String> {
    if let Some(rest) = iss
        .strip_prefix("https://sts.windows.net/")
        .or_else(|| iss.strip_prefix("https://sts.chinacloudapi.cn/"))
    {
        return Some(rest.trim_end_matches('/').to_owned());
    }
    let uri: http::Uri = iss.parse().ok()?;
    let host = uri.host()?;
    if !ENTRA_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return None;
    }
    let tenant = uri.path().trim_start_matches('/').split('/').next()?;
    (!tenant.is_empty()).then(|| tenant.to_owned())
}
