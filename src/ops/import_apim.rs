//! `entragate import-apim POLICY.xml`: an Azure API Management `<validate-jwt>` or
//! `<validate-azure-ad-token>` policy as entragate TOML.
//!
//! The first such element anywhere in the document is converted: its issuer (`openid-config`,
//! `tenant-id`, `authentication-endpoint`), `audiences`, `issuers`, client application IDs,
//! `clock-skew` and `required-claims` become `[entra]`, `[[oidc]]` and a catch-all
//! `[[routes]]` rule; every attribute or element with no equivalent becomes a comment saying
//! so. APIM named values (`{{name}}`) and policy expressions (`@(...)`) cannot be evaluated
//! here: they are left for the operator, and the output is checked with the gateway's own
//! config loader so what still needs editing is listed.

mod claims;
mod draft;

use roxmltree::{Document, Node};

use super::BAD_CONFIG;
use crate::config::Config;
use draft::{Draft, string, strings};

/// The converted policy.
#[derive(Debug)]
pub struct Converted {
    pub toml: String,
    /// What needs the operator's attention (also in the TOML as comments).
    pub warnings: Vec<String>,
}

/// Why nothing could be converted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error(
        "no <validate-jwt> or <validate-azure-ad-token> element found: pass the API's or operation's policy that holds it"
    )]
    NoPolicy,
}

/// `entragate import-apim POLICY` (`-` reads standard input): the TOML on stdout, what needs
/// attention on stderr; returns the exit code (0 converted, 2 unreadable, malformed, or no
/// validation element).
#[must_use]
pub fn command(policy: &std::path::Path) -> u8 {
    let (xml, source) = if policy.as_os_str() == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            eprintln!("entragate import-apim: cannot read standard input: {e}");
            return BAD_CONFIG;
        }
        (text, "standard input".to_owned())
    } else {
        match std::fs::read_to_string(policy) {
            Ok(t) => (t, policy.display().to_string()),
            Err(e) => {
                eprintln!(
                    "entragate import-apim: cannot read {}: {e}",
                    policy.display()
                );
                return BAD_CONFIG;
            }
        }
    };
    match convert(&xml, &source) {
        Ok(c) => {
            print!("{}", c.toml);
            for w in &c.warnings {
                eprintln!("entragate import-apim: {w}");
            }
            0
        }
        Err(e) => {
            eprintln!("entragate import-apim: {source}: {e}");
            BAD_CONFIG
        }
    }
}

/// Converts the policy document `xml` (named `source` in the output's header).
///
/// # Errors
/// Malformed XML, or no validation element in it.
pub fn convert(xml: &str, source: &str) -> Result<Converted, ImportError> {
    let doc = Document::parse(xml).map_err(|e| {
        let hint = if xml.contains("@(") {
            " (APIM accepts unescaped quotes inside @(...) expressions, XML does not: write them as &quot;)"
        } else {
            ""
        };
        ImportError::Xml(format!("{e}{hint}"))
    })?;
    let found: Vec<Node> = doc
        .descendants()
        .filter(|n| {
            n.is_element()
                && matches!(
                    n.tag_name().name(),
                    "validate-jwt" | "validate-azure-ad-token"
                )
        })
        .collect();
    let Some(policy) = found.first() else {
        return Err(ImportError::NoPolicy);
    };
    let mut c = Conversion::default();
    let kind = policy.tag_name().name();
    let line = doc.text_pos_at(policy.range().start).row;
    c.draft.header = vec![
        format!("entragate configuration converted by `entragate import-apim` from <{kind}> in {source} (line {line})."),
        "Review every comment, then run `entragate check --config <this file>` against your tenant.".into(),
    ];
    for other in found.iter().skip(1) {
        let row = doc.text_pos_at(other.range().start).row;
        c.unconverted(format!(
            "another <{}> at line {row}: only the first is converted; entragate has one token policy (use [[routes]] for per-path rules)",
            other.tag_name().name()
        ));
    }
    if let Some(when) = policy.ancestors().find(|a| a.has_tag_name("when")) {
        c.unconverted(format!(
            "the policy sits inside <when condition=\"{}\">: entragate applies it to every request (make paths open with [[routes]] anonymous = true)",
            when.attribute("condition").unwrap_or("")
        ));
    }
    c.draft
        .server
        .note("Not in the policy: where entragate listens (APIM's gateway address).");
    c.draft.server.set("listen", &string("0.0.0.0:8080"), "");
    backend(&doc, &mut c);
    if kind == "validate-jwt" {
        c.validate_jwt(*policy);
    } else {
        c.validate_azure_ad_token(*policy);
    }
    c.finish();
    other_policies(&doc, &mut c);

    let named = named_values(&c.draft.render());
    if !named.is_empty() {
        c.draft.header.push(format!(
            "APIM named values left in place, to replace with their values (API Management -> Named values): {}",
            named.join(", ")
        ));
        for n in &named {
            c.warnings.push(format!(
                "APIM named value {n} left in the output: replace it with its value"
            ));
        }
    }
    let toml = c.draft.render();
    // The output is checked by the loader `serve` uses; what it refuses is what to edit.
    if let Err(e) = Config::load(&toml, &[], &|_| Err(std::io::Error::other("not read"))) {
        for p in e.problems {
            c.warnings.push(format!("to edit before use: {p}"));
        }
    }
    Ok(Converted {
        toml,
        warnings: c.warnings,
    })
}

/// What is being built.
#[derive(Debug, Default)]
struct Conversion {
    draft: Draft,
    warnings: Vec<String>,
    tenant: Option<(String, String)>,
    authority: Option<(String, String)>,
    audiences: Vec<String>,
    audience_notes: Vec<String>,
    client_ids: Vec<String>,
    tenants: Vec<String>,
    clock_skew: Option<String>,
    /// `(issuer, discovery_url, why)` of other OpenID Connect issuers.
    oidc: Vec<(String, String, String)>,
    route: draft::Table,
    route_used: bool,
}

/// Entra's authorities (public and sovereign clouds).
const ENTRA_HOSTS: [&str; 5] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
];

impl Conversion {
    fn unconverted(&mut self, what: String) {
        self.warnings.push(format!("no equivalent: {what}"));
        self.draft.unconverted.push(what);
    }

    fn validate_jwt(&mut self, p: Node) {
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

    fn validate_azure_ad_token(&mut self, p: Node) {
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
    fn finish(&mut self) {
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
        if let Some((a, why)) = &self.authority
            && a != crate::config::DEFAULT_AUTHORITY
        {
            e.set("authority", &string(a), why);
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

/// `<set-backend-service base-url>` as `upstream.url`.
fn backend(doc: &Document, c: &mut Conversion) {
    let url = doc
        .descendants()
        .find(|n| n.has_tag_name("set-backend-service"))
        .and_then(|n| n.attribute("base-url"));
    let u = &mut c.draft.upstream;
    match url {
        Some(url) if url.starts_with("http://") && !url.contains('{') && !url.contains('@') => {
            u.set("url", &string(url), "from <set-backend-service base-url>");
        }
        Some(url) => {
            u.note(&format!("APIM's backend was {url}: set url to the API behind the gateway (plain http in this version)."));
            u.set("url", &string("http://127.0.0.1:8081"), "");
        }
        None => {
            u.note("Not in the policy: the API behind the gateway (APIM's backend service URL).");
            u.set("url", &string("http://127.0.0.1:8081"), "");
        }
    }
}

/// Other policy statements in the document, listed so nothing is dropped silently.
fn other_policies(doc: &Document, c: &mut Conversion) {
    const SECTIONS: [&str; 6] = [
        "inbound",
        "backend",
        "outbound",
        "on-error",
        "when",
        "otherwise",
    ];
    const HANDLED: [&str; 5] = [
        "base",
        "choose",
        "validate-jwt",
        "validate-azure-ad-token",
        "set-backend-service",
    ];
    let mut names: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_element())
        .filter(|n| {
            n.parent_element()
                .is_some_and(|p| SECTIONS.contains(&p.tag_name().name()))
        })
        .map(|n| n.tag_name().name())
        .filter(|n| !HANDLED.contains(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    if !names.is_empty() {
        let list: Vec<String> = names.iter().map(|n| format!("<{n}>")).collect();
        c.draft.unconverted.push(format!(
            "other policies in the file, not converted (not token validation): {}",
            list.join(", ")
        ));
    }
}

/// The distinct `{{name}}` APIM named values in `text`, in order of appearance.
fn named_values(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let name = &rest[start..start + len + 2];
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
        rest = &rest[start + len + 2..];
    }
    out
}

/// The text of each `<child>` of `node`, trimmed.
fn values(node: Node, child: &str) -> Vec<String> {
    node.children()
        .filter(|n| n.has_tag_name(child))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
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
    if let Some(rest) = iss.strip_prefix("https://sts.windows.net/") {
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
