//! `entragate::config::Config::load` on any TOML text, layered with any `ENTRAGATE_*`
//! variables. The input is `TOML \0 TABLE__KEY=value \n TABLE__KEY=value ...` (the target adds
//! the `ENTRAGATE_` prefix; no `\0` = TOML only). Never panics; a refusal names a key for each
//! problem (`config`, alone, for a TOML syntax error) and blames a variable only when one was
//! given; an accepted config holds the values the rest of the gateway relies on.
#![no_main]

use std::time::Instant;

use entragate::path::normalize;
use entragate::config::Config;
use libfuzzer_sys::fuzz_target;

/// Half of the `*_file` keys "exist" (their path has an even length), so both the read and
/// the cannot-read branches run.
fn read_file(path: &str) -> std::io::Result<String> {
    if path.len() % 2 == 0 {
        Ok("secret\n".to_owned())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env_text
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (format!("ENTRAGATE_{k}"), v.to_owned())
        })
        .collect();

    let config = match Config::load(toml, &env, &read_file) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(!p.key.is_empty(), "{p}");
                assert!(!p.message.is_empty(), "{p}");
                if p.message.starts_with("not valid TOML") {
                    assert_eq!(p.key, "config", "{p}");
                    assert_eq!(e.problems.len(), 1, "{e}");
                }
                if let Some(var) = &p.env_var {
                    assert!(env.iter().any(|(k, _)| k == var), "{p}");
                }
            }
            // The message lists every problem.
            assert!(e.to_string().lines().count() > e.problems.len());
            return;
        }
    };

    // What the rest of the gateway relies on.
    let entra = &config.entra;
    assert!(!entra.tenant_id.trim().is_empty());
    assert!(!entra.audiences.is_empty());
    assert!(entra.audiences.iter().all(|a| !a.trim().is_empty()));
    assert!(!entra.algorithms.is_empty());
    assert!(!entra.authority.ends_with('/'));
    assert!(
        entra
            .allowed_tenants
            .iter()
            .all(|t| t.len() == 36 && *t == t.to_ascii_lowercase())
    );
    assert!(!entra.is_multi_tenant() || !entra.allowed_tenants.is_empty());
    assert!(!entra.jwks_refresh.is_zero() && entra.jwks_max_stale > entra.jwks_refresh);
    assert!(!entra.metadata_timeout.is_zero());
    let server = &config.server;
    assert!(server.max_in_flight >= 1);
    assert!(server.limits.max_connections >= 1);
    assert!(server.limits.max_header_bytes >= 8192);
    assert!(!server.limits.header_read_timeout.is_zero());
    assert!(server.max_body.is_none_or(|n| n > 0));
    assert!(!config.upstream.base_path.ends_with('/'));
    // Every duration can be added to a clock reading and to any other of them: timers,
    // deadlines and key ages are computed that way at run time.
    let durations = [
        server.shutdown_grace,
        server.limits.header_read_timeout,
        server.reload_poll,
        config.upstream.connect_timeout,
        config.upstream.timeout,
        config.upstream.idle_timeout,
        entra.clock_skew,
        entra.jwks_refresh,
        entra.jwks_min_refetch,
        entra.jwks_max_stale,
        entra.metadata_timeout,
    ];
    let now = Instant::now();
    for a in durations {
        assert!(now.checked_add(a).is_some(), "{a:?}");
        for b in durations {
            assert!(a.checked_add(b).is_some(), "{a:?} + {b:?}");
        }
    }
    for route in &config.routes {
        assert!(route.path.starts_with('/'), "{:?}", route.path);
        assert_eq!(normalize(&route.path).as_deref(), Ok(route.path.as_str()));
        assert!(!(route.anonymous && !route.scopes.is_empty()));
        assert!(route.max_body.is_none_or(|m| m.is_none_or(|n| n > 0)));
    }
    for o in &config.oidc {
        assert!(o.issuer.starts_with("https://") || o.issuer.starts_with("http://"));
        assert!(!o.audiences.is_empty());
    }
});
