//! Writes what the benchmark harness (`bench/run.sh`) needs to play an Entra tenant with static
//! files: a fresh RS256-2048 signing key's JWKS, the tenant's v1 and v2 OpenID metadata
//! naming it, and pools of distinct, valid v2 access tokens signed with it.
//!
//! ```text
//! cargo run --release --example bench_tokens -- DIR AUTHORITY TENANT AUDIENCE HOT COLD
//! ```
//!
//! - `DIR/{TENANT}/.well-known/openid-configuration` and
//!   `DIR/{TENANT}/v2.0/.well-known/openid-configuration`: serve `DIR` at `AUTHORITY`;
//! - `DIR/jwks.json`: the key set (also given to Envoy as a local JWKS);
//! - `DIR/signing-cert.pem` and `DIR/kid.txt`: the key's certificate and `kid` (for Apache's
//!   mod_auth_openidc, which fetches keys only over https, so it is given them as files);
//! - `DIR/tokens.txt`: `HOT` tokens, one per line (the keep-alive runs rotate through them);
//! - `DIR/cold-tokens.txt`: `COLD` further tokens (the cold-path run uses each once).
//!
//! The key is generated at run time and the tokens live two hours: nothing here is ever
//! committed, and the files are only as secret as the benchmark.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use entragate::dev::{POWER_QUERY_CLIENT_ID, SigningKey, sign_jwt};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, authority, tenant, audience, hot, cold] = args.as_slice() else {
        eprintln!("usage: bench_tokens DIR AUTHORITY TENANT AUDIENCE HOT_COUNT COLD_COUNT");
        return ExitCode::from(2);
    };
    let (Ok(hot), Ok(cold)) = (hot.parse::<usize>(), cold.parse::<usize>()) else {
        eprintln!("bench_tokens: HOT_COUNT and COLD_COUNT are numbers");
        return ExitCode::from(2);
    };
    match write_all(
        Path::new(dir),
        authority.trim_end_matches('/'),
        tenant,
        audience,
        hot,
        cold,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_tokens: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(
    dir: &Path,
    authority: &str,
    tenant: &str,
    audience: &str,
    hot: usize,
    cold: usize,
) -> std::io::Result<()> {
    let key = SigningKey::generate();
    let issuer_v2 = format!("{authority}/{tenant}/v2.0");
    let jwks_uri = format!("{authority}/jwks.json");
    write(
        &dir.join("jwks.json"),
        &json!({ "keys": [key.jwk(Some(&issuer_v2))] }).to_string(),
    )?;
    let x5c = key.jwk(None)["x5c"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in x5c.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    write(&dir.join("signing-cert.pem"), &pem)?;
    write(&dir.join("kid.txt"), &key.kid)?;
    for (sub, issuer) in [
        (
            PathBuf::from(tenant),
            format!("https://sts.windows.net/{tenant}/"),
        ),
        (Path::new(tenant).join("v2.0"), issuer_v2.clone()),
    ] {
        let doc = json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        write(
            &dir.join(sub).join(".well-known/openid-configuration"),
            &doc.to_string(),
        )?;
    }
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": key.kid});
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mint = |n: usize| sign_jwt(&key, &header, &claims(&issuer_v2, tenant, audience, now, n));
    let all = mint_parallel(hot + cold, &mint);
    write(&dir.join("tokens.txt"), &lines(&all[..hot]))?;
    write(&dir.join("cold-tokens.txt"), &lines(&all[hot..]))?;
    eprintln!(
        "bench_tokens: {hot} + {cold} tokens, kid {}, in {}",
        key.kid,
        dir.display()
    );
    Ok(())
}

/// The claims Entra puts in a v2 delegated token from Power Query (about 1.3 KB signed),
/// made distinct by the user.
fn claims(issuer: &str, tenant: &str, audience: &str, now: u64, n: usize) -> Value {
    json!({
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 7200,
        "aio": "AWQAm/8YAAAAbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmarkbenchmark==",
        "azp": POWER_QUERY_CLIENT_ID,
        "azpacr": "0",
        "name": format!("Benchmark User {n}"),
        "oid": format!("00000000-0000-4000-8000-{n:012}"),
        "preferred_username": format!("user{n}@contoso.example"),
        "rh": "1.AQkAbenchmarkbenchmarkbenchmarkbenchmarkAAA.",
        "scp": "user_impersonation",
        "sid": format!("00000000-0000-4000-9000-{n:012}"),
        "sub": format!("benchmark-subject-{n:08}"),
        "tid": tenant,
        "uti": format!("bench{n:010}"),
        "ver": "2.0",
    })
}

/// Signs `count` tokens on every core (RSA signing is the slow part of a run's setup).
fn mint_parallel(count: usize, mint: &(dyn Fn(usize) -> String + Sync)) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| s.spawn(move || (start..(start + chunk).min(count)).map(mint).collect()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| Vec::<String>::new()))
            .collect()
    })
}

fn lines(tokens: &[String]) -> String {
    let mut out = tokens.join("\n");
    out.push('\n');
    out
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(path)?.write_all(text.as_bytes())
}
