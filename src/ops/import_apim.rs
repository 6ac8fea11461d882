//! `entragate import-apim POLICY.xml`: an Azure API Management `<validate-jwt>` or
//! `<validate-azure-ad-token>` policy as entragate TOML.
//!
//! The input is a policy document, or an ARM template exported from APIM (JSON), whose API
//! resource brings its service URL and whose policy resource brings the policy ([`export`]).
//! The backend becomes `upstream.url`: `<set-backend-service base-url>` first (APIM applies
//! it over the API's setting), else the API's `serviceUrl`, else a placeholder to fill in.
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
mod elements;
mod export;
mod limits;

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
    #[error("not an APIM export: {0}")]
    Export(String),
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
pub fn convert(input: &str, source: &str) -> Result<Converted, ImportError> {
    let (xml, service_url) = if input.trim_start().starts_with('{') {
        if let Some((apis, service_policy)) = export::read_all(input)? {
            return convert_many(&apis, service_policy.as_deref(), source);
        }
        let api = export::read(input)?;
        (api.policy, api.service_url)
    } else {
        (input.to_owned(), None)
    };
    let c = convert_policy(&xml, service_url.as_deref(), source)?;
    Ok(output(c))
}

/// The named values left in, and what the config loader refuses, as warnings.
fn output(mut c: Conversion) -> Converted {
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
    Converted {
        toml,
        warnings: c.warnings,
    }
}

/// Parses a policy document, as XML with APIM's hint for unescaped quotes.
fn parse(xml: &str) -> Result<Document<'_>, ImportError> {
    Document::parse(xml).map_err(|e| {
        let hint = if xml.contains("@(") {
            " (APIM accepts unescaped quotes inside @(...) expressions, XML does not: write them as &quot;)"
        } else {
            ""
        };
        ImportError::Xml(format!("{e}{hint}"))
    })
}

/// True when the policy document holds a token validation element.
fn validates(xml: &str) -> bool {
    xml.contains("validate-jwt") || xml.contains("validate-azure-ad-token")
}

/// The conversion of one policy document, with the API's `service_url`.
fn convert_policy(
    xml: &str,
    service_url: Option<&str>,
    source: &str,
) -> Result<Conversion, ImportError> {
    let doc = parse(xml)?;
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
    backend(&doc, service_url, &mut c);
    if kind == "validate-jwt" {
        c.validate_jwt(*policy);
    } else {
        c.validate_azure_ad_token(*policy);
    }
    c.finish();
    limits::convert(&doc, None, &mut c.draft.limits, &mut c.draft.unconverted);
    other_policies(&doc, &mut c);
    Ok(c)
}

/// An export with several APIs: `[entra]` (and `[[oidc]]`) from the first API whose policy
/// validates tokens (else the service-wide policy), and one `[[apis]]` entry per API: its
/// `path` as the prefix, its backend as the upstream, its own audiences when they differ,
/// its `<required-claims>` as an `[[apis.routes]]` rule on the prefix.
fn convert_many(
    apis: &[export::ExportedApi],
    service_policy: Option<&str>,
    source: &str,
) -> Result<Converted, ImportError> {
    let primary = apis
        .iter()
        .find_map(|a| a.policy.as_deref().filter(|p| validates(p)))
        .or(service_policy.filter(|p| validates(p)))
        .ok_or(ImportError::NoPolicy)?;
    let mut base = convert_policy(primary, None, source)?;
    base.draft.header[0] = format!(
        "entragate configuration converted by `entragate import-apim` from {source}: {} APIs, as [[apis]].",
        apis.len()
    );
    // Each API names its own backend; the primary policy's routes go to its API below.
    base.draft.upstream = draft::Table::default();
    base.draft.routes.clear();
    // Limits likewise: each policy's own, scoped to its API below; the service-wide
    // policy's apply to every API.
    base.draft.limits.clear();
    if let Some(doc) = service_policy.and_then(|p| parse(p).ok()) {
        limits::convert(
            &doc,
            None,
            &mut base.draft.limits,
            &mut base.draft.unconverted,
        );
    }
    base.warnings.retain(|w| !w.starts_with("upstream.url"));
    let mut names: Vec<String> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    for api in apis {
        let mut name = api_name(&api.name);
        while names.contains(&name) {
            name.push_str("-2");
        }
        names.push(name.clone());
        let prefix = format!("/{}", api.path.trim_matches('/'));
        let mut t = draft::Table::default();
        t.set("name", &string(&name), "from the API's resource name");
        t.set(
            "prefix",
            &string(&prefix),
            "from the API's path (API URL suffix)",
        );
        if prefixes.contains(&prefix) {
            base.warnings.push(format!(
                "apis: {name}'s path {prefix:?} is another API's too (APIM tells them apart by version or revision): give it its own prefix"
            ));
        }
        prefixes.push(prefix.clone());
        let own = api.policy.as_deref().filter(|p| validates(p));
        let mut conv = match own {
            Some(xml) => Some(convert_policy(xml, api.service_url.as_deref(), source)?),
            None => None,
        };
        // The backend: <set-backend-service> in the API's policy, else its serviceUrl.
        let from_policy = api
            .policy
            .as_deref()
            .and_then(|p| parse(p).ok().and_then(|d| backend_url(&d)));
        let url = from_policy
            .as_deref()
            .or(api.service_url.as_deref())
            .map(str::trim)
            .filter(|u| is_literal_url(u));
        match url {
            Some(u) => t.set(
                "upstream",
                &format!("{{ url = {} }}", string(u)),
                "from the API's backend (set-backend-service or serviceUrl)",
            ),
            None => {
                t.set(
                    "upstream",
                    &format!("{{ url = {} }}", string(PLACEHOLDER_URL)),
                    "placeholder: fill in the API behind the gateway",
                );
                base.warnings.push(format!(
                    "apis: {name}'s backend is not in the export as a plain URL; replace the placeholder {PLACEHOLDER_URL}"
                ));
            }
        }
        if let Some(doc) = api.policy.as_deref().and_then(|p| parse(p).ok()) {
            let mut unconverted = Vec::new();
            limits::convert(&doc, Some(&name), &mut base.draft.limits, &mut unconverted);
            for u in unconverted {
                base.draft.unconverted.push(format!("API {name}: {u}"));
            }
        }
        let mut routes = Vec::new();
        match conv.as_mut() {
            Some(c) => {
                let mut auds = c.audiences.clone();
                auds.dedup();
                if !auds.is_empty() && auds != base.audiences {
                    t.set("audiences", &strings(&auds), "from this API's <audiences>");
                }
                if c.tenant.as_ref().map(|t| &t.0) != base.tenant.as_ref().map(|t| &t.0) {
                    base.draft.unconverted.push(format!(
                        "API {name} validates tokens of another tenant or issuer than the first: entragate has one [entra] tenant (add the other issuer as [[oidc]])"
                    ));
                }
                for mut r in std::mem::take(&mut c.draft.routes) {
                    r.replace("path", &string(&prefix), "");
                    routes.push(r);
                }
                // Its limits are converted above, scoped to the API.
                c.draft.limits.clear();
                for u in std::mem::take(&mut c.draft.unconverted) {
                    let u = format!("API {name}: {u}");
                    if !base.draft.unconverted.contains(&u) {
                        base.draft.unconverted.push(u);
                    }
                }
            }
            None => {
                let why = if service_policy.is_some_and(validates) {
                    "its token check is the service-wide policy's"
                } else {
                    "it has no <validate-jwt> in APIM, but entragate requires a valid token on every API (mark open paths with [[apis.routes]] anonymous = true)"
                };
                t.note(&format!("API {name}: {why}."));
                base.warnings.push(format!("apis: {name}: {why}"));
            }
        }
        base.draft.apis.push((t, routes));
    }
    Ok(output(base))
}

/// An `[[apis]]` name from an APIM API name: letters, digits, `-`, `_`, `.` kept, others `-`.
fn api_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push_str("api");
    }
    out
}

/// `<set-backend-service base-url>` of a policy, when it has one.
fn backend_url(doc: &Document) -> Option<String> {
    doc.descendants()
        .find(|n| n.has_tag_name("set-backend-service"))
        .and_then(|n| n.attribute("base-url"))
        .map(str::to_owned)
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

/// The API behind the gateway: the policy's `<set-backend-service base-url>` (which APIM
/// applies over the API's settings), else the API's service URL from an export, else a
/// placeholder with a comment naming the key to fill in.
fn backend(doc: &Document, service_url: Option<&str>, c: &mut Conversion) {
    let from_policy = doc
        .descendants()
        .find(|n| n.has_tag_name("set-backend-service"))
        .and_then(|n| n.attribute("base-url"));
    let u = &mut c.draft.upstream;
    let candidates = [
        (from_policy, "from <set-backend-service base-url>"),
        (service_url, "from the API's service URL (serviceUrl)"),
    ];
    for (url, why) in candidates {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            continue;
        };
        if is_literal_url(url) {
            u.set("url", &string(url), why);
            return;
        }
        u.note(&format!(
            "APIM's backend is {url} ({}), which cannot be evaluated here: set upstream.url to the API behind the gateway (http:// or https://).",
            why.trim_start_matches("from ")
        ));
        u.set("url", &string(PLACEHOLDER_URL), "");
        c.warnings.push(format!(
            "upstream.url: APIM's backend {url} is a named value or expression; replace the placeholder {PLACEHOLDER_URL}"
        ));
        return;
    }
    u.note("Not in the input: the API behind the gateway (no <set-backend-service base-url>, no serviceUrl). Fill in upstream.url (http:// or https://).");
    u.set(
        "url",
        &string(PLACEHOLDER_URL),
        "placeholder: fill in upstream.url",
    );
    c.warnings.push(format!(
        "upstream.url: not in the input; replace the placeholder {PLACEHOLDER_URL} with the API behind the gateway"
    ));
}

/// What `upstream.url` is when the input does not say.
const PLACEHOLDER_URL: &str = "http://127.0.0.1:8081";

/// An http(s) URL with no APIM named value (`{{name}}`), policy expression (`@(...)`), ARM
/// expression (`[parameters(...)]`) or credentials in it.
fn is_literal_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains(['{', '}', '@', '[', ']', ' '])
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
    let handled = |n: &str| HANDLED.contains(&n) || limits::POLICIES.contains(&n);
    let mut names: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_element())
        .filter(|n| {
            n.parent_element()
                .is_some_and(|p| SECTIONS.contains(&p.tag_name().name()))
        })
        .map(|n| n.tag_name().name())
        .filter(|n| !handled(n))
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
