use super::*;

const MINIMAL: &str = r#"
[entra]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
audiences = ["https://api.contoso.com"]
"#;

fn no_files(_: &str) -> std::io::Result<String> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no such file",
    ))
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load(text, &env, &no_files)
}

fn keys(e: &ConfigError) -> Vec<&str> {
    e.problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn defaults_are_written_out() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(
        c.server.admin_listen,
        "127.0.0.1:9090".parse().expect("addr")
    );
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.server.token_cache_entries, 10_000);
    assert!(c.server.cors_preflight);
    assert_eq!(c.upstream.origin.as_str(), "127.0.0.1:8081");
    assert_eq!(c.upstream.timeout, Duration::from_secs(60));
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstream.max_idle_connections, 1024);
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(15));
    assert_eq!(c.upstream.max_connections, 1024);
    assert_eq!(c.server.limits.listen_backlog, 1024);
    assert_eq!(c.upstream.authorization, UpstreamAuthorization::Forward);
    assert_eq!(c.entra.authority, DEFAULT_AUTHORITY);
    assert_eq!(c.entra.clock_skew, Duration::from_secs(60));
    assert_eq!(c.entra.max_token_lifetime, Duration::from_secs(28 * 3600));
    assert_eq!(c.entra.jwks_refresh, Duration::from_secs(3600));
    assert_eq!(c.entra.jwks_min_refetch, Duration::from_secs(300));
    assert_eq!(c.entra.jwks_max_stale, Duration::from_secs(24 * 3600));
    assert_eq!(c.entra.algorithms, vec![Algorithm::RS256]);
    assert_eq!(
        c.challenge.authorization_uri,
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/authorize"
    );
    assert_eq!(
        c.challenge.realm,
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47"
    );
}

#[test]
fn env_overrides_file() {
    let c = load(
        MINIMAL,
        &[
            ("ENTRAGATE_UPSTREAM__URL", "http://ehrbase:8080/ehrbase"),
            ("ENTRAGATE_ENTRA__AUDIENCES", "[api://x, https://api.x.com]"),
            ("ENTRAGATE_CHALLENGE__RESOURCE_METADATA", "true"),
            ("ENTRAGATE_SERVER__TOKEN_CACHE_ENTRIES", "500"),
            ("ENTRAGATE_CONFIG", "/etc/entragate/entragate.toml"),
            ("PATH", "/usr/bin"),
        ],
    )
    .expect("valid");
    assert_eq!(c.upstream.origin.as_str(), "ehrbase:8080");
    assert_eq!(c.upstream.base_path, "/ehrbase");
    assert_eq!(c.entra.audiences, ["api://x", "https://api.x.com"]);
    assert!(c.challenge.resource_metadata);
    assert_eq!(c.server.token_cache_entries, 500);
}

#[test]
fn zero_listen_backlog_idle_timeout_and_upstream_connections_are_refused_by_key() {
    let e = load(
        MINIMAL,
        &[
            ("ENTRAGATE_SERVER__LISTEN_BACKLOG", "0"),
            ("ENTRAGATE_UPSTREAM__IDLE_TIMEOUT", "0s"),
            ("ENTRAGATE_UPSTREAM__MAX_CONNECTIONS", "0"),
        ],
    )
    .expect_err("invalid");
    assert_eq!(
        keys(&e),
        [
            "server.listen_backlog",
            "upstream.max_connections",
            "upstream.idle_timeout",
        ],
        "{e}"
    );
}

#[test]
fn every_problem_at_once_named_by_key() {
    let text = r#"
[server]
listen = "nope"
colour = "blue"
log_format = "xml"
[upstream]
timeout = "soon"
[entra]
tenant_id = "not a tenant"
audiences = []
allowed_client_ids = ["a672d62c"]
algorithms = ["HS256"]
[extra]
x = 1
"#;
    let e = load(text, &[("ENTRAGATE_UPSTREAM__URL", "ftp://x")]).expect_err("invalid");
    let k = keys(&e);
    for expected in [
        "server.listen",
        "server.colour",
        "server.log_format",
        "upstream.timeout",
        "upstream.url",
        "entra.tenant_id",
        "entra.audiences",
        "entra.allowed_client_ids",
        "entra.algorithms",
        "extra",
    ] {
        assert!(k.contains(&expected), "{expected} missing from {k:?}");
    }
    let url = e
        .problems
        .iter()
        .find(|p| p.key == "upstream.url")
        .expect("url problem");
    assert_eq!(url.env_var.as_deref(), Some("ENTRAGATE_UPSTREAM__URL"));
    assert!(
        e.to_string()
            .contains("upstream.url (from ENTRAGATE_UPSTREAM__URL)")
    );
}

#[test]
fn required_keys() {
    let e = load("", &[]).expect_err("invalid");
    assert_eq!(keys(&e), ["entra.tenant_id", "entra.audiences"]);
}

#[test]
fn wrong_types_and_syntax() {
    let e = load(
        "[server]\nlisten = 8080\n[entra]\ntenant_id = \"common\"\naudiences = \"x\"\n",
        &[],
    )
    .expect_err("invalid");
    let k = keys(&e);
    assert!(k.contains(&"server.listen"), "{k:?}");
    assert!(k.contains(&"entra.audiences"), "{k:?}");
    // Multi-tenant without an allow-list would accept every Entra tenant.
    assert!(k.contains(&"entra.allowed_tenants"), "{k:?}");
    let e = load("[server\n", &[]).expect_err("invalid");
    assert_eq!(keys(&e), ["config"]);
}

#[test]
fn unknown_env_keys_are_errors() {
    let e = load(
        MINIMAL,
        &[("ENTRAGATE_SERVER__COLOR", "red"), ("ENTRAGATE_LOG", "x")],
    )
    .expect_err("invalid");
    let k = keys(&e);
    assert!(k.contains(&"server.color"), "{k:?}");
    assert!(k.contains(&"log"), "{k:?}");
}

/// Regression (fuzzing, `config_load`): a variable named just `ENTRAGATE_` was reported with an
/// empty key (" (from ENTRAGATE_): not a config key"); it is named by the variable now.
#[test]
fn the_bare_prefix_is_a_problem_with_a_name() {
    let e = load(MINIMAL, &[("ENTRAGATE_", "z")]).expect_err("not a key");
    assert_eq!(keys(&e), ["ENTRAGATE_"]);
    assert_eq!(e.problems[0].env_var.as_deref(), Some("ENTRAGATE_"));
    assert!(
        e.to_string()
            .contains("ENTRAGATE_ (from ENTRAGATE_): not a config key"),
        "{e}"
    );
}

#[test]
fn forward_auth_mode_and_ext_authz_listener() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.server.mode, Mode::Proxy);
    assert_eq!(c.server.ext_authz_listen, None);
    let text = format!(
        "{MINIMAL}\n[server]\nmode = \"forward-auth\"\next_authz_listen = \"127.0.0.1:9191\"\n"
    );
    let c = load(&text, &[]).expect("valid");
    assert_eq!(c.server.mode, Mode::ForwardAuth);
    assert_eq!(
        c.server.ext_authz_listen,
        Some("127.0.0.1:9191".parse().expect("addr"))
    );
    let e = load(
        MINIMAL,
        &[
            ("ENTRAGATE_SERVER__MODE", "forward_auth"),
            ("ENTRAGATE_SERVER__EXT_AUTHZ_LISTEN", "9191"),
        ],
    )
    .expect_err("invalid");
    assert_eq!(keys(&e), ["server.mode", "server.ext_authz_listen"]);
    assert!(
        e.problems.iter().all(|p| p
            .env_var
            .as_deref()
            .is_some_and(|v| v.starts_with("ENTRAGATE_SERVER__"))),
        "{e}"
    );
}

#[test]
fn upstream_basic_credentials() {
    let text = format!(
        "{MINIMAL}\n[upstream]\nauthorization = \"basic\"\nbasic_user = \"ehrbase\"\nbasic_password_file = \"/run/secrets/pw\"\n"
    );
    let env: Vec<(String, String)> = Vec::new();
    let c = Config::load(&text, &env, &|p| {
        assert_eq!(p, "/run/secrets/pw");
        Ok("s3cret\n".to_owned())
    })
    .expect("valid");
    // base64("ehrbase:s3cret")
    assert_eq!(
        c.upstream.authorization,
        UpstreamAuthorization::Basic(http::HeaderValue::from_static("Basic ZWhyYmFzZTpzM2NyZXQ="))
    );
    let e = load(
        &format!("{MINIMAL}\n[upstream]\nauthorization = \"basic\"\n"),
        &[],
    )
    .expect_err("invalid");
    assert_eq!(keys(&e), ["upstream.basic_user"]);
    // A password of digits from the environment stays a string.
    let c = load(
        &format!("{MINIMAL}\n[upstream]\nauthorization = \"basic\"\nbasic_user = \"u\"\n"),
        &[("ENTRAGATE_UPSTREAM__BASIC_PASSWORD", "12345")],
    )
    .expect("valid");
    assert_eq!(
        c.upstream.authorization,
        UpstreamAuthorization::Basic(http::HeaderValue::from_static("Basic dToxMjM0NQ=="))
    );
}

#[test]
fn multi_tenant_needs_allowed_tenants() {
    let ok = load(
        "[entra]\ntenant_id = \"organizations\"\naudiences = [\"api://x\"]\nallowed_tenants = [\"72F988BF-86F1-41AF-91AB-2D7CD011DB47\"]\n",
        &[],
    )
    .expect("valid");
    assert!(ok.entra.is_multi_tenant());
    assert_eq!(
        ok.entra.allowed_tenants,
        ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
    );
}

#[test]
fn domain_tenants_and_guids() {
    assert!(
        load(
            "[entra]\ntenant_id = \"contoso.onmicrosoft.com\"\naudiences = [\"api://x\"]\n",
            &[]
        )
        .is_ok()
    );
    assert!(is_guid("a672d62c-fc7b-4e81-a576-e60dc46e951d"));
    assert!(!is_guid("a672d62c-fc7b-4e81-a576-e60dc46e951"));
    assert!(!is_guid("a672d62cxfc7b-4e81-a576-e60dc46e951d"));
}

#[test]
fn config_path_precedence() {
    assert_eq!(
        config_path(Some("/a.toml".into()), Some("/b.toml".into())),
        PathBuf::from("/a.toml")
    );
    assert_eq!(
        config_path(None, Some("/b.toml".into())),
        PathBuf::from("/b.toml")
    );
    assert_eq!(
        config_path(None, Some(String::new())),
        PathBuf::from("entragate.toml")
    );
    assert_eq!(config_path(None, None), PathBuf::from("entragate.toml"));
}

#[test]
fn routes_are_read_in_order_and_checked_by_index() {
    let text = format!(
        r#"{MINIMAL}
[[routes]]
path = "/ehrbase/rest/status"
anonymous = true

[[routes]]
path = "/ehrbase/rest/openehr/v1/%71uery/"
methods = ["get", "POST"]
scopes = ["aql.read"]
roles = ["AQL.Read.All"]
clients = ["A672D62C-FC7B-4E81-A576-E60DC46E951D"]
claims = {{ groups = ["g1", "g2"], wids = "w" }}
"#
    );
    let c = load(&text, &[]).expect("valid");
    assert_eq!(c.routes.len(), 2);
    assert!(c.routes[0].anonymous);
    let r = &c.routes[1];
    assert_eq!(r.path, "/ehrbase/rest/openehr/v1/query");
    assert_eq!(
        r.methods,
        [http::Method::GET, http::Method::POST, http::Method::HEAD]
    );
    assert_eq!(r.clients, ["a672d62c-fc7b-4e81-a576-e60dc46e951d"]);
    assert_eq!(
        r.claims,
        [
            ("groups".to_owned(), vec!["g1".to_owned(), "g2".to_owned()]),
            ("wids".to_owned(), vec!["w".to_owned()])
        ]
    );

    let bad = format!(
        r#"{MINIMAL}
[[routes]]
path = "relative"
[[routes]]
path = "/a"
scopes = ["has space"]
methods = ["G E T"]
anonymous = true
colour = 1
[[routes]]
scopes = ["x"]
"#
    );
    let e = load(&bad, &[]).expect_err("invalid");
    let k = keys(&e);
    for expected in [
        "routes[0].path",
        "routes[1].scopes",
        "routes[1].methods",
        "routes[1].anonymous",
        "routes[1].colour",
        "routes[2].path",
    ] {
        assert!(k.contains(&expected), "{expected} missing from {k:?}");
    }
}

#[test]
fn oidc_issuers() {
    let text = format!(
        "{MINIMAL}\n[[oidc]]\nissuer = \"https://keycloak.example/realms/cdr\"\naudiences = [\"cdr-api\"]\n[[oidc]]\nissuer = \"not a url\"\n"
    );
    let e = load(&text, &[]).expect_err("invalid");
    assert_eq!(keys(&e), ["oidc[1].issuer", "oidc[1].audiences"]);
    let ok = format!(
        "{MINIMAL}\n[[oidc]]\nissuer = \"https://keycloak.example/realms/cdr/\"\naudiences = [\"cdr-api\"]\n"
    );
    let c = load(&ok, &[]).expect("valid");
    assert_eq!(
        c.oidc[0].discovery_url,
        "https://keycloak.example/realms/cdr/.well-known/openid-configuration"
    );
}

#[test]
fn identity_header_names() {
    let c = load(
        &format!("{MINIMAL}\n[identity]\nname_header = \"\"\nclaims_header = \"X-Auth-Claims\"\nstrip_headers = [\"X-User\"]\n"),
        &[],
    )
    .expect("valid");
    assert!(c.identity.name_header.is_none());
    assert_eq!(
        c.identity
            .claims_header
            .as_ref()
            .map(http::HeaderName::as_str),
        Some("x-auth-claims")
    );
    assert_eq!(
        c.identity
            .subject_header
            .as_ref()
            .map(http::HeaderName::as_str),
        Some("x-auth-subject")
    );
    let e = load(
        &format!("{MINIMAL}\n[identity]\nsubject_header = \"Authorization\"\nroles_header = \"bad header\"\n"),
        &[],
    )
    .expect_err("invalid");
    assert_eq!(
        keys(&e),
        ["identity.roles_header", "identity.subject_header"]
    );
}

#[test]
fn the_documented_example_config_loads() {
    let text = include_str!("../../config/entragate.example.toml");
    let c = load(text, &[]).expect("config/entragate.example.toml loads as shipped");
    assert!(c.server.tls.is_none());
    assert!(!c.upstream.tls.insecure_skip_verify);
}

#[test]
fn sizes_may_be_plain_toml_integers() {
    let c = load(&format!("{MINIMAL}\n[server]\nmax_body = 1048576\n"), &[]).expect("valid");
    assert_eq!(c.server.max_body, Some(1_048_576));
    let c = load(&format!("{MINIMAL}\n[server]\nmax_body = 0\n"), &[]).expect("valid");
    assert_eq!(c.server.max_body, None);
    let e = load(&format!("{MINIMAL}\n[server]\nmax_body = -1\n"), &[]).expect_err("negative");
    assert_eq!(keys(&e), ["server.max_body"]);
}

/// Regression (found while writing the `config_load` fuzz target): humantime panics ("overflow in
/// Duration::new") when a duration's parts add up to exactly u64::MAX seconds with a carry
/// from the sub-second part, and durations near that limit loaded fine and overflowed later
/// (`jwks_refresh + jwks_min_refetch` when keys are refetched). Both are now problems of
/// their key, and no duration is longer than `MAX_DURATION`.
#[test]
fn durations_beyond_the_limit_are_problems_of_their_key() {
    let huge = "18446744073709551615s 1000ms";
    for (table, key) in [
        ("server", "shutdown_grace"),
        ("server", "header_read_timeout"),
        ("server", "reload_poll"),
        ("upstream", "timeout"),
        ("upstream", "connect_timeout"),
        ("upstream", "idle_timeout"),
        ("entra", "clock_skew"),
        ("entra", "max_token_lifetime"),
        ("entra", "jwks_min_refetch"),
        ("entra", "metadata_timeout"),
    ] {
        let text = if table == "entra" {
            format!("{MINIMAL}{key} = {huge:?}\n")
        } else {
            format!("{MINIMAL}\n[{table}]\n{key} = {huge:?}\n")
        };
        let e = load(&text, &[]).expect_err(key);
        assert_eq!(keys(&e), [format!("{table}.{key}")], "{e}");
        assert!(e.problems[0].message.contains("100 years"), "{e}");
    }
    // From the environment too, blamed on the variable.
    let e = load(MINIMAL, &[("ENTRAGATE_ENTRA__JWKS_REFRESH", huge)]).expect_err("env");
    assert_eq!(e.problems[0].key, "entra.jwks_refresh");
    assert_eq!(
        e.problems[0].env_var.as_deref(),
        Some("ENTRAGATE_ENTRA__JWKS_REFRESH")
    );
    // Loaded before, overflowing when keys were refetched.
    let text = format!(
        "{MINIMAL}jwks_refresh = \"18446744073709551000s\"\njwks_max_stale = \"18446744073709551615s\"\n"
    );
    let e = load(&text, &[]).expect_err("refresh + min_refetch overflowed");
    assert!(keys(&e).contains(&"entra.jwks_refresh"), "{e}");
    // The limit itself is fine; a second more is not.
    let c = load(&format!("{MINIMAL}jwks_max_stale = \"100y\"\n"), &[]).expect("100y");
    assert_eq!(c.entra.jwks_max_stale, MAX_DURATION);
    let e = load(&format!("{MINIMAL}jwks_max_stale = \"100y 1s\"\n"), &[]).expect_err(">100y");
    assert_eq!(keys(&e), ["entra.jwks_max_stale"]);
    for (text, ok) in [
        ("99999999999y", false),
        ("1.5s", true),
        ("0s", true),
        ("1000ms 1000ms", true),
        ("584942417355y", false),
        ("00000000000000000000000000001s", true),
        ("100000000000000000000s", false),
    ] {
        assert_eq!(read::parse_duration(text).is_ok(), ok, "{text}");
    }
}

/// Regression (fuzzing, `config_load`): TOML allows an empty quoted key (`'' = 1`), which was
/// reported as ": unknown key"; keys TOML would not write bare are shown quoted now.
#[test]
fn keys_that_are_not_bare_are_quoted_in_problems() {
    let e = load(&format!("'' = \"a\"\n{MINIMAL}"), &[]).expect_err("empty key");
    assert_eq!(keys(&e), ["\"\""]);
    let e = load(&format!("\"a.b\" = 1\n{MINIMAL}"), &[]).expect_err("dotted key");
    assert_eq!(keys(&e), ["\"a.b\""]);
    let e = load(&format!("{MINIMAL}\"\" = 1\n"), &[]).expect_err("empty key in a table");
    assert_eq!(keys(&e), ["entra.\"\""]);
    let e = load(
        &format!("{MINIMAL}\n[[routes]]\npath = \"/q\"\n'' = 1\nclaims = {{ '' = [] }}\n"),
        &[],
    )
    .expect_err("empty keys in a route");
    assert_eq!(keys(&e), ["routes[0].\"\"", "routes[0].claims.\"\""], "{e}");
    for p in &e.problems {
        assert!(!p.to_string().starts_with(':'), "{p}");
    }
}

#[test]
fn max_token_lifetime_is_a_positive_duration() {
    let c = load(&format!("{MINIMAL}max_token_lifetime = \"90m\"\n"), &[]).expect("90m");
    assert_eq!(c.entra.max_token_lifetime, Duration::from_secs(90 * 60));
    for bad in ["\"0s\"", "\"soon\"", "5"] {
        let e = load(&format!("{MINIMAL}max_token_lifetime = {bad}\n"), &[]).expect_err(bad);
        assert_eq!(keys(&e), ["entra.max_token_lifetime"], "{bad}: {e}");
    }
}

#[test]
fn a_jwks_file_must_be_readable_a_jwks_and_need_a_tenant_id() {
    let with = |file: &str, tenant: &str, contents: Option<&'static str>| {
        let text = format!(
            "[entra]\ntenant_id = {tenant:?}\naudiences = [\"https://api.contoso.com\"]\njwks_file = {file:?}\n"
        );
        let read = move |_: &str| {
            contents
                .map(str::to_owned)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        };
        Config::load(&text, &[], &read)
    };
    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let c = with("/k.json", TID, Some(r#"{"keys":[{"kty":"RSA"}]}"#)).expect("valid");
    assert_eq!(c.entra.jwks_file.as_deref(), Some("/k.json"));
    assert_eq!(c.entra.jwks_file_reload, Duration::from_secs(10));
    assert_eq!(
        c.entra.derived_issuers(),
        Some((
            format!("https://sts.windows.net/{TID}/"),
            format!("https://login.microsoftonline.com/{TID}/v2.0")
        ))
    );
    for (contents, says) in [
        (None, "cannot read /k.json"),
        (Some("not json"), "is not a JWKS"),
        (Some(r#"{"keys": {}}"#), "is not a JWKS"),
        (Some(r#"{"keys": []}"#), "has no keys"),
    ] {
        let e = with("/k.json", TID, contents).expect_err(says);
        assert_eq!(keys(&e), ["entra.jwks_file"], "{e}");
        assert!(e.problems[0].message.contains(says), "{e}");
    }
    let e = with(
        "/k.json",
        "contoso.onmicrosoft.com",
        Some(r#"{"keys":[{}]}"#),
    )
    .expect_err("a domain tenant");
    assert_eq!(keys(&e), ["entra.tenant_id"], "{e}");
}

#[test]
fn derived_issuers_follow_the_cloud_and_multi_tenancy() {
    let c = load(
        "[entra]\ntenant_id = \"organizations\"\naudiences = [\"a\"]\nallowed_tenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]\ncloud = \"china\"\n",
        &[],
    )
    .expect("valid");
    assert_eq!(
        c.entra.derived_issuers(),
        Some((
            "https://sts.chinacloudapi.cn/{tenantid}/".to_owned(),
            "https://login.partner.microsoftonline.cn/{tenantid}/v2.0".to_owned()
        ))
    );
}

#[test]
fn workers_default_to_one_per_cpu_and_are_bounded() {
    let c = load(MINIMAL, &[]).expect("valid");
    assert_eq!(c.server.limits.workers, 0, "0: one per CPU");
    let c = load(MINIMAL, &[("ENTRAGATE_SERVER__WORKERS", "3")]).expect("valid");
    assert_eq!(c.server.limits.workers, 3);
    let e = load(&format!("{MINIMAL}\n[server]\nworkers = 5000\n"), &[]).expect_err("too many");
    assert_eq!(keys(&e), ["server.workers"]);
    let e = load(&format!("{MINIMAL}\n[server]\nworkers = -1\n"), &[]).expect_err("negative");
    assert_eq!(keys(&e), ["server.workers"]);
}
