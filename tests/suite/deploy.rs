//! The configurations shipped in `deploy/` load as the gateway reads them, with the values an
//! operator sets (and refuse to start without them), and the manifests agree with them:
//! the ports the config listens on are the ports the manifests name, and Kubernetes waits
//! longer than the gateway's drain before it kills a pod.
//!
//! The manifests' schemas are checked by `.ci/packaging.sh` (kubernetes-validate, yamllint,
//! docker-compose); this file checks what only the gateway knows.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::pki::Ca;
use entragate::config::{Config, UpstreamAuthorization};

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `ENTRAGATE_*=value` lines of a kustomization's `literals:` or of an env file.
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.trim().trim_start_matches("- ").trim())
        .filter(|l| l.starts_with("ENTRAGATE_") || l.starts_with("ENTRA_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Files the configs name, answered without touching the real `/etc`.
fn files(extra: HashMap<&'static str, String>) -> impl Fn(&str) -> std::io::Result<String> {
    move |p: &str| {
        extra
            .get(p)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, p.to_owned()))
    }
}

fn load(
    toml: &str,
    env: &[(String, String)],
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Config {
    Config::load(toml, env, read).unwrap_or_else(|e| panic!("{e}"))
}

fn missing_keys(
    toml: &str,
    env: &[(String, String)],
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Vec<String> {
    Config::load(toml, env, read)
        .expect_err("must not start without the site's values")
        .problems
        .into_iter()
        .map(|p| p.key)
        .collect()
}

/// The first integer after `key:` in a manifest.
fn yaml_number(manifest: &str, key: &str) -> u64 {
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in manifest"))
}

fn container_ports(manifest: &str) -> Vec<u16> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("containerPort:")?.trim().parse().ok())
        .collect()
}

#[test]
fn kubernetes_sidecar_config_with_overlay_values() {
    let toml = read("deploy/kubernetes/sidecar/entragate.toml");
    let base = env_lines(&read("deploy/kubernetes/sidecar/kustomization.yaml"));
    let overlay = env_lines(&read(
        "deploy/kubernetes/overlays/sidecar-example/kustomization.yaml",
    ));
    let mut env = overlay.clone();
    env.push((
        "ENTRAGATE_UPSTREAM__BASIC_PASSWORD".into(),
        "from-the-secret".into(),
    ));
    let none = files(HashMap::new());

    let c = load(&toml, &env, &none);
    assert_eq!(c.upstream.origin.as_str(), "127.0.0.1:8080");
    assert!(matches!(
        c.upstream.authorization,
        UpstreamAuthorization::Basic(_)
    ));
    assert_eq!(c.entra.audiences.len(), 2);

    // The base alone (empty values) does not start, naming what is missing.
    let mut base_env = base;
    base_env.push(("ENTRAGATE_UPSTREAM__BASIC_PASSWORD".into(), "x".into()));
    let keys = missing_keys(&toml, &base_env, &none);
    assert!(keys.contains(&"entra.tenant_id".to_owned()), "{keys:?}");
    assert!(keys.contains(&"entra.audiences".to_owned()), "{keys:?}");

    let manifest = read("deploy/kubernetes/sidecar/deployment.yaml");
    let ports = container_ports(&manifest);
    assert!(ports.contains(&c.server.listen.port()), "{ports:?}");
    assert!(ports.contains(&c.server.admin_listen.port()), "{ports:?}");
    assert!(manifest.contains("restartPolicy: Always"), "native sidecar");
    let grace = yaml_number(&manifest, "terminationGracePeriodSeconds:");
    let pre_stop = yaml_number(&manifest, "seconds:");
    assert!(
        Duration::from_secs(grace) > c.server.shutdown_grace + Duration::from_secs(pre_stop),
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace + preStop"
    );
}

#[test]
fn kubernetes_standalone_config_with_overlay_values() {
    let toml = read("deploy/kubernetes/standalone/entragate.toml");
    let overlay = env_lines(&read(
        "deploy/kubernetes/overlays/standalone-example/kustomization.yaml",
    ));
    let ca = Ca::new("cluster issuer");
    let pair = ca.server("entragate");
    let tls = files(HashMap::from([
        ("/etc/entragate/tls/tls.crt", pair.cert.clone()),
        ("/etc/entragate/tls/tls.key", pair.key.clone()),
    ]));

    let c = load(&toml, &overlay, &tls);
    let server_tls = c.server.tls.as_ref().expect("HTTPS");
    assert_eq!(server_tls.reload, Duration::from_secs(10));
    assert_eq!(
        c.upstream.origin.as_str(),
        "ehrbase.ehr.svc.cluster.local:8080"
    );
    assert_eq!(
        c.server.public_url.as_deref(),
        Some("https://api.contoso.com")
    );

    // Without the Secret's files the gateway does not start, naming the keys.
    let keys = missing_keys(&toml, &overlay, &files(HashMap::new()));
    assert_eq!(keys, ["server.tls_cert", "server.tls_key"]);
    // Without the overlay's values neither.
    let base = env_lines(&read("deploy/kubernetes/standalone/kustomization.yaml"));
    let keys = missing_keys(&toml, &base, &tls);
    for key in ["entra.tenant_id", "entra.audiences", "upstream.url"] {
        assert!(keys.contains(&key.to_owned()), "{key} not in {keys:?}");
    }

    let manifest = read("deploy/kubernetes/standalone/deployment.yaml");
    let ports = container_ports(&manifest);
    assert!(ports.contains(&c.server.listen.port()), "{ports:?}");
    assert!(ports.contains(&c.server.admin_listen.port()), "{ports:?}");
    let grace = yaml_number(&manifest, "terminationGracePeriodSeconds:");
    let pre_stop = yaml_number(&manifest, "seconds:");
    assert!(
        Duration::from_secs(grace) > c.server.shutdown_grace + Duration::from_secs(pre_stop),
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace + preStop"
    );
}

#[test]
fn compose_config_with_the_example_env() {
    let toml = read("deploy/compose/entragate.toml");
    let example = env_lines(&read("deploy/compose/example.env"));
    let value = |name: &str| {
        example
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} not in example.env"))
    };
    // As compose.yaml maps them.
    let env = vec![
        (
            "ENTRAGATE_ENTRA__TENANT_ID".to_owned(),
            value("ENTRA_TENANT_ID"),
        ),
        (
            "ENTRAGATE_ENTRA__AUDIENCES".to_owned(),
            value("ENTRA_AUDIENCES"),
        ),
        (
            "ENTRAGATE_UPSTREAM__BASIC_PASSWORD".to_owned(),
            "from-env".to_owned(),
        ),
    ];
    let c = load(&toml, &env, &files(HashMap::new()));
    assert_eq!(c.upstream.origin.as_str(), "ehrbase:8080");
    assert_eq!(
        c.entra.audiences,
        [
            "https://api.contoso.com",
            "11111111-1111-1111-1111-111111111111"
        ]
    );
    assert!(matches!(
        c.upstream.authorization,
        UpstreamAuthorization::Basic(_)
    ));
    let compose = read("deploy/compose/compose.yaml");
    assert!(compose.contains(&format!(":{}\"", c.server.listen.port())));
    assert!(compose.contains(&format!(
        "127.0.0.1:${{ADMIN_PORT:-9090}}:{}",
        c.server.admin_listen.port()
    )));
}

#[test]
fn the_image_defaults_need_only_the_site_values() {
    let toml = read("deploy/image/entragate.toml");
    let keys = missing_keys(&toml, &[], &files(HashMap::new()));
    assert_eq!(keys, ["entra.tenant_id", "entra.audiences"]);
    let env = vec![
        (
            "ENTRAGATE_ENTRA__TENANT_ID".to_owned(),
            common::TENANT.to_owned(),
        ),
        (
            "ENTRAGATE_ENTRA__AUDIENCES".to_owned(),
            format!("[\"{}\"]", common::AUDIENCE),
        ),
    ];
    let c = load(&toml, &env, &files(HashMap::new()));
    // Probes and scrapers reach the admin port from outside the container.
    assert!(c.server.admin_listen.ip().is_unspecified());
    let dockerfile = read("Dockerfile");
    let expose: Vec<u16> = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE in Dockerfile")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(
        expose,
        [c.server.listen.port(), c.server.admin_listen.port()]
    );
    assert!(dockerfile.contains("ENV ENTRAGATE_CONFIG=/etc/entragate/entragate.toml"));
    assert!(dockerfile.contains("COPY deploy/image/entragate.toml /etc/entragate/entragate.toml"));
}
