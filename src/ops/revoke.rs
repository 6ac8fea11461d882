//! `entragate revoke`, `unrevoke` and `revoked`: write, remove and list revocation entries
//! in the configured store (the Redis set when `limits_store.url` is set, else
//! `revocation.file`). Every replica picks a change up within a second; nothing is
//! written over HTTP (the admin listener has no authentication).

use std::path::Path;

use super::{BAD_CONFIG, FAILED};
use crate::cli::Subject;
use crate::config::Config;
use crate::revocation::entry::{self, Entry, Kind, check_value};
use crate::revocation::store::Store;
use crate::revocation::unix_now;

/// The kind and value named on the command line.
fn subject(s: &Subject) -> (Kind, &str) {
    match (&s.oid, &s.client, &s.tenant, &s.jti) {
        (Some(v), ..) => (Kind::Oid, v),
        (_, Some(v), ..) => (Kind::Client, v),
        (_, _, Some(v), _) => (Kind::Tenant, v),
        (_, _, _, Some(v)) => (Kind::Jti, v),
        // clap requires exactly one.
        _ => (Kind::Oid, ""),
    }
}

fn store(config_path: &Path) -> Result<(Config, Store), u8> {
    let config = Config::load_file(config_path).map_err(|e| {
        eprintln!("{e}");
        BAD_CONFIG
    })?;
    let store = Store::of(&config).map_err(|e| {
        eprintln!("entragate: {e}");
        BAD_CONFIG
    })?;
    Ok((config, store))
}

/// A time: `now`, RFC 3339, Unix seconds, or (when `durations`) a duration from now.
fn time(text: &str, durations: bool) -> Result<u64, String> {
    if text == "now" {
        return Ok(unix_now());
    }
    if durations && let Ok(d) = humantime::parse_duration(text) {
        return Ok(unix_now().saturating_add(d.as_secs()));
    }
    entry::parse_time(text)
}

/// `entragate revoke`.
pub async fn revoke(
    config_path: &Path,
    who: &Subject,
    issued_before: Option<&str>,
    until: Option<&str>,
) -> u8 {
    let (config, store) = match store(config_path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (kind, value) = subject(who);
    if let Err(e) = check_value(value) {
        eprintln!("entragate: --{}: {e}", kind.as_str());
        return BAD_CONFIG;
    }
    let issued_before = match issued_before.map(|t| time(t, false)).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("entragate: --issued-before: {e}");
            return BAD_CONFIG;
        }
    };
    let until = match until.map(|t| time(t, true)).transpose() {
        Ok(Some(t)) => t,
        Ok(None) => unix_now().saturating_add(config.entra.max_token_lifetime.as_secs()),
        Err(e) => {
            eprintln!("entragate: --until: {e}");
            return BAD_CONFIG;
        }
    };
    if until <= unix_now() {
        eprintln!("entragate: --until is in the past: the entry would never be in force");
        return BAD_CONFIG;
    }
    let e = Entry {
        kind,
        value: kind.normalize(value).into_owned(),
        issued_before,
        until,
    };
    match store.add(&e).await {
        Ok(()) => {
            println!("revoked: {} (in {})", e.to_line(), store.describe());
            println!(
                "every replica refuses these tokens within {} ms",
                crate::revocation::REFRESH.as_millis() * 2
            );
            0
        }
        Err(err) => {
            eprintln!("entragate: cannot write {}: {err}", store.describe());
            FAILED
        }
    }
}

/// `entragate unrevoke`.
pub async fn unrevoke(config_path: &Path, who: &Subject) -> u8 {
    let (_, store) = match store(config_path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (kind, value) = subject(who);
    match store.remove(kind, value).await {
        Ok(0) => {
            println!(
                "no entry for {}={value} in {}",
                kind.as_str(),
                store.describe()
            );
            0
        }
        Ok(n) => {
            println!(
                "removed {n} entr{} for {}={value} from {}",
                if n == 1 { "y" } else { "ies" },
                kind.as_str(),
                store.describe()
            );
            0
        }
        Err(err) => {
            eprintln!("entragate: {err}");
            FAILED
        }
    }
}

/// `entragate revoked`.
pub async fn list(config_path: &Path) -> u8 {
    let (config, store) = match store(config_path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let entries = match store.list().await {
        Ok(e) => e,
        Err(err) => {
            eprintln!("entragate: {err}");
            return FAILED;
        }
    };
    println!(
        "# {} entr{} in force in {}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        store.describe()
    );
    for e in &entries {
        println!("{}", e.to_line());
    }
    // With Redis as the store, the file (if any) is a second source every replica reads.
    if matches!(store, Store::Redis(_))
        && let Some(file) = &config.revocation.file
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let (file_entries, _) = entry::parse_file(&text);
        let now = unix_now();
        let in_force: Vec<&Entry> = file_entries.iter().filter(|e| e.until > now).collect();
        println!("# {} more in force in file {file}", in_force.len());
        for e in in_force {
            println!("{}", e.to_line());
        }
    }
    0
}
