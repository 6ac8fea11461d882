//! `entragate init`: the API's Entra app registration and a gateway config that agree, from
//! one URL.
//!
//! Three files: `entragate.toml` (a config `check` accepts), `entra-app.sh` (an `az` script
//! that creates or updates the registration and its service principal, and writes the
//! registration's client ID into the config) and `entra-app.json` (the same registration as a
//! Microsoft Graph `application` object, for `az rest`, Terraform or Bicep). The files are
//! rendered by [`render`]; this module checks the input and writes them, never over an
//! existing file without `--force`.

mod render;
mod script;

use std::path::{Path, PathBuf};

use super::BAD_CONFIG;
use crate::config::is_guid;

/// A client application `--clients` can name: its IDs (`appid` / `azp`) to pre-authorize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKind {
    pub name: &'static str,
    /// Microsoft's own client IDs (ENTRA-FACTS, Power Query connector authentication); empty
    /// when the client is an app registration of the customer's own.
    pub ids: &'static [(&'static str, &'static str)],
    pub about: &'static str,
}

const POWER_QUERY: (&str, &str) = (
    "a672d62c-fc7b-4e81-a576-e60dc46e951d",
    "Power Query for Excel / Power BI Desktop / on-premises data gateway",
);
const POWER_BI_REFRESH: (&str, &str) = (
    "b52893c8-bc2e-47fc-918b-77022b299bbc",
    "Power BI Data Refresh (the service's scheduled refresh)",
);
const POWER_PLATFORM: (&str, &str) = (
    "7ab7862c-4c57-491e-8a45-d52a7e023983",
    "Power Apps and Power Automate",
);

/// The names `--clients` takes.
pub const CLIENTS: [ClientKind; 4] = [
    ClientKind {
        name: "power-query",
        ids: &[POWER_QUERY],
        about: "Power Query in Excel and Power BI Desktop, and the on-premises data gateway",
    },
    ClientKind {
        name: "power-bi",
        // Power BI Desktop signs in as Power Query; the service refreshes as Data Refresh.
        ids: &[POWER_QUERY, POWER_BI_REFRESH],
        about: "Power BI Desktop and the Power BI service's scheduled refresh",
    },
    ClientKind {
        name: "power-platform",
        ids: &[POWER_PLATFORM],
        about: "Power Apps and Power Automate (custom connectors)",
    },
    ClientKind {
        // Posit Connect signs in with an OAuth application the Connect administrator
        // registers in the customer's own tenant (docs.posit.co/connect/admin/integrations/
        // oauth-integrations/azure): there is no fixed client ID to pre-authorize, so the
        // script prints the scopes to give that application instead.
        name: "posit-connect",
        ids: &[],
        about: "Posit Connect's OAuth integration (viewer and service-account)",
    },
];

pub use crate::cli::DEFAULT_CLIENTS;

/// The command line of `init`.
#[derive(Debug, Clone)]
pub struct Args {
    pub url: String,
    pub tenant: Option<String>,
    pub clients: String,
    pub out: PathBuf,
    pub force: bool,
}

/// `init`'s input, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The Application ID URI: the URL's origin (`https://host[:port]`) or `api://…`.
    pub app_id_uri: String,
    /// Whether Power BI can sign in to it (an `https` URL, not `api://`).
    pub https: bool,
    /// A tenant GUID (lower case), `organizations` or `common`; `None`: the script fills it.
    pub tenant: Option<String>,
    pub clients: Vec<ClientKind>,
    /// Scope and app-role IDs, fixed at `init` so that the three files agree.
    pub scope_id: String,
    pub role_ids: Vec<String>,
}

impl Plan {
    /// Checks the command line.
    ///
    /// # Errors
    /// A message naming the flag and what is wrong with it.
    pub fn new(url: &str, tenant: Option<&str>, clients: &str) -> Result<Self, String> {
        let (app_id_uri, https) = app_id_uri(url)?;
        let tenant = tenant.map(check_tenant).transpose()?;
        let clients = parse_clients(clients)?;
        Ok(Self {
            app_id_uri,
            https,
            tenant,
            clients,
            scope_id: uuid::Uuid::new_v4().to_string(),
            role_ids: render::ROLES
                .iter()
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect(),
        })
    }

    /// True when the tenant is `organizations` or `common`.
    #[must_use]
    pub fn multi_tenant(&self) -> bool {
        self.tenant
            .as_deref()
            .is_some_and(|t| t == "organizations" || t == "common")
    }

    /// The client IDs to pre-authorize, each once, with their names.
    #[must_use]
    pub fn pre_authorized(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for c in &self.clients {
            for id in c.ids {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
        }
        out
    }

    fn has(&self, name: &str) -> bool {
        self.clients.iter().any(|c| c.name == name)
    }
}

/// `--url` -> the Application ID URI.
fn app_id_uri(url: &str) -> Result<(String, bool), String> {
    let url = url.trim();
    let bad = |why: &str| format!("--url {url:?}: {why}");
    if url.contains('#') {
        return Err(bad(
            "has a fragment; give the scheme and host only, e.g. https://cdr.example.org",
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("is not a URL like https://cdr.example.org"))?;
    let scheme = uri
        .scheme_str()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| bad("is not an absolute URL like https://cdr.example.org"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?;
    if uri.query().is_some() {
        return Err(bad(
            "has a query: the Application ID URI is the scheme and host only (Power Query asks Entra for a token for the URL's scheme and host, whatever the path and query)",
        ));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(bad(&format!(
            "has a path ({}): the Application ID URI is the scheme and host only, {scheme}://{host} (Power Query asks Entra for a token for the URL's scheme and host, whatever the path)",
            uri.path()
        )));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("has user information; give the scheme and host only"));
    }
    match scheme.as_str() {
        "https" => {
            let origin = super::origin_of(url).ok_or_else(|| bad("is not a URL"))?;
            Ok((origin, true))
        }
        "api" => Ok((
            format!("api://{}", uri.authority().map_or(host, |a| a.as_str())),
            false,
        )),
        "http" => Err(bad(
            "is plain http: Entra requires https for a custom Application ID URI (or api://…), and Power BI signs in to https URLs only",
        )),
        other => Err(bad(&format!(
            "has the scheme {other}: use https://<public host> (or api://… for an API Power BI does not call)"
        ))),
    }
}

/// `--tenant` -> a lower-case GUID, `organizations` or `common`.
fn check_tenant(t: &str) -> Result<String, String> {
    let t = t.trim();
    if is_guid(t) {
        return Ok(t.to_ascii_lowercase());
    }
    let lower = t.to_ascii_lowercase();
    if lower == "organizations" || lower == "common" {
        return Ok(lower);
    }
    Err(format!(
        "--tenant {t:?} is neither a tenant ID (a GUID: Entra admin center -> Overview -> Tenant ID) nor \"organizations\" or \"common\""
    ))
}

/// `--clients` -> the client kinds, in the order given, each once.
fn parse_clients(list: &str) -> Result<Vec<ClientKind>, String> {
    let mut out: Vec<ClientKind> = Vec::new();
    let mut unknown = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match CLIENTS.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
            Some(c) if !out.contains(c) => out.push(*c),
            Some(_) => {}
            None => unknown.push(name.to_owned()),
        }
    }
    let known: Vec<&str> = CLIENTS.iter().map(|c| c.name).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "--clients: unknown client {}; known: {}",
            unknown.join(", "),
            known.join(", ")
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "--clients is empty; name one or more of: {}",
            known.join(", ")
        ));
    }
    Ok(out)
}

/// The three files, by name.
pub const FILES: [&str; 3] = ["entragate.toml", "entra-app.sh", "entra-app.json"];

/// The three files' contents, in [`FILES`]' order.
#[must_use]
pub fn render(plan: &Plan) -> [String; 3] {
    [
        render::config(plan),
        script::script(plan),
        render::manifest(plan),
    ]
}

/// Writes the files into `out`; refuses (naming them) when any exists and `force` is off.
///
/// # Errors
/// A message for the operator.
pub fn write(plan: &Plan, out: &Path, force: bool) -> Result<Vec<PathBuf>, String> {
    let paths: Vec<PathBuf> = FILES.iter().map(|f| out.join(f)).collect();
    if !force {
        let existing: Vec<String> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(format!(
                "{} already exist(s); nothing was written. Pass --force to overwrite, or --out another directory",
                existing.join(", ")
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for (path, text) in paths.iter().zip(render(plan)) {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    make_executable(&paths[1]);
    Ok(paths)
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o111);
        let _ = std::fs::set_permissions(path, perms);
    }
}

#[cfg(not(unix))]
fn make_executable(_: &Path) {}

/// `entragate init`: returns the exit code (0 written, 2 bad input or an existing file).
#[must_use]
pub fn command(args: &Args) -> u8 {
    let plan = match Plan::new(&args.url, args.tenant.as_deref(), &args.clients) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("entragate init: {e}");
            return BAD_CONFIG;
        }
    };
    match write(&plan, &args.out, args.force) {
        Ok(paths) => {
            for p in &paths {
                println!("wrote {}", p.display());
            }
            print!("{}", next_steps(&plan, &args.out));
            0
        }
        Err(e) => {
            eprintln!("entragate init: {e}");
            BAD_CONFIG
        }
    }
}

fn next_steps(plan: &Plan, out: &Path) -> String {
    let dir = out.display();
    let mut s = format!(
        "\nNext:\n  1. az login{tenant}   (an account that may create app registrations)\n  2. bash {dir}/entra-app.sh   creates or updates the app registration for {uri} and writes its client ID into {dir}/entragate.toml\n  3. entragate check --config {dir}/entragate.toml --app <(az ad app show --id <client ID>)\n  4. entragate serve --config {dir}/entragate.toml\n",
        tenant = match plan.tenant.as_deref() {
            Some(t) if is_guid(t) => format!(" --tenant {t}"),
            _ => String::new(),
        },
        uri = plan.app_id_uri,
    );
    if !plan.https {
        s.push_str("\nNote: Power BI signs in only to https URLs whose scheme and host are the Application ID URI; an api:// URI serves other clients (MSAL, Posit Connect, scripts).\n");
    }
    if plan.multi_tenant() {
        s.push_str("\nMulti-tenant: list the tenants that may call in entra.allowed_tenants (entra-app.sh adds your own tenant).\n");
    }
    if plan.has("posit-connect") {
        s.push_str("\nPosit Connect: entra-app.sh prints the scopes to give Connect's own OAuth application.\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_becomes_its_origin() {
        let p = Plan::new("https://CDR.example.org/", None, DEFAULT_CLIENTS).expect("plan");
        assert_eq!(p.app_id_uri, "https://cdr.example.org");
        assert!(p.https);
        let p = Plan::new("https://cdr.example.org:8443", None, "power-bi").expect("plan");
        assert_eq!(p.app_id_uri, "https://cdr.example.org:8443");
        let p = Plan::new("api://cdr-api", None, "power-bi").expect("plan");
        assert_eq!(p.app_id_uri, "api://cdr-api");
        assert!(!p.https);
    }

    #[test]
    fn bad_urls_are_named() {
        for (url, why) in [
            ("https://cdr.example.org/ehrbase", "has a path"),
            ("https://cdr.example.org?x=1", "has a query"),
            ("https://cdr.example.org/#top", "fragment"),
            ("http://cdr.example.org", "plain http"),
            ("ftp://cdr.example.org", "scheme ftp"),
            ("cdr.example.org", "not an absolute URL"),
            ("https://user@cdr.example.org", "user information"),
        ] {
            let e = Plan::new(url, None, DEFAULT_CLIENTS).expect_err(url);
            assert!(e.contains(why) && e.starts_with("--url"), "{url}: {e}");
        }
    }

    #[test]
    fn tenants_and_clients() {
        let t = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
        let p = Plan::new(
            "https://a.example",
            Some(t),
            "power-bi,power-query,power-bi",
        )
        .expect("plan");
        assert_eq!(p.tenant.as_deref(), Some(t.to_ascii_lowercase().as_str()));
        // Power BI and Power Query share a client: pre-authorized once.
        assert_eq!(
            p.pre_authorized()
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            [POWER_QUERY.0, POWER_BI_REFRESH.0]
        );
        assert!(
            Plan::new("https://a.example", Some("Organizations"), "power-bi")
                .expect("plan")
                .multi_tenant()
        );
        let e = Plan::new("https://a.example", Some("contoso.com"), "power-bi").expect_err("t");
        assert!(e.contains("--tenant \"contoso.com\" is neither"), "{e}");
        let e = Plan::new("https://a.example", None, "power-bi,excel").expect_err("c");
        assert!(
            e.contains("unknown client excel") && e.contains("posit-connect"),
            "{e}"
        );
        assert!(Plan::new("https://a.example", None, " , ").is_err());
    }
}
