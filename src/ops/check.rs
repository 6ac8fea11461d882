//! `entragate check`: is this config, and the identity provider behind it, ready for Power BI?
//!
//! Three parts: the config itself (every problem at once, by key: [`Config::load_file`]), the
//! identity provider (each issuer's metadata and keys fetched now, with timing, by the
//! gateway's own fetch code), and the Entra app-registration checklist for this config
//! ([`checklist`]). Items the gateway cannot see from outside (what the app registration
//! exposes and pre-authorizes) are listed as steps to confirm by hand, unless `--app` hands
//! `check` the application object: then [`app`] compares it with the config, offline.

pub mod app;
mod checklist;
mod limits;
mod upstream;

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use super::{BAD_CONFIG, FAILED, ms};
use crate::cli::Format;
use crate::config::{Config, ConfigError};
use crate::keys::{KeyStore, fetch_keys, fetch_metadata};
use crate::metrics::Metrics;

/// How an item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works for now, but something named will break or is left out.
    Warn,
    /// Will refuse tokens or fail sign-in.
    Fail,
    /// Cannot be seen from here: confirm it in the Entra admin center.
    Todo,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Stable identifier for scripts (e.g. `app_id_uri`, `keys.entra-v1`).
    pub id: String,
    pub status: Status,
    pub message: String,
    /// What to do, in Entra terms; empty when nothing is to be done.
    pub fix: String,
}

impl Item {
    fn new(id: impl Into<String>, status: Status, message: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            status,
            message: message.into(),
            fix: String::new(),
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

/// A key source's fetch, with timing.
#[derive(Debug, Clone, Serialize)]
pub struct Fetch {
    pub source: String,
    pub metadata_url: String,
    pub metadata_ms: Option<u64>,
    pub jwks_uri: Option<String>,
    pub jwks_ms: Option<u64>,
    /// The issuer the metadata names.
    pub issuer: Option<String>,
    /// Usable signing keys.
    pub keys: usize,
    pub error: Option<String>,
    /// The JWKS file the keys were read from (`entra.jwks_file`); no metadata then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when nothing failed (warnings and manual steps do not count).
    pub ok: bool,
    pub config_path: String,
    /// With `--app`: the application object compared with the config (and nothing fetched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Config problems; when there are any, nothing else was checked.
    pub config: Vec<Item>,
    pub fetches: Vec<Fetch>,
    pub checklist: Vec<Item>,
}

impl Report {
    /// The report of a config that does not load.
    #[must_use]
    pub fn bad_config(path: &str, e: &ConfigError) -> Self {
        let config = e
            .problems
            .iter()
            .map(|p| {
                let item = Item::new(p.key.clone(), Status::Fail, p.to_string());
                match checklist::config_fix(&p.key) {
                    Some(fix) => item.fix(fix),
                    None => item,
                }
            })
            .collect();
        Self {
            ok: false,
            config_path: path.to_owned(),
            app: None,
            config,
            fetches: Vec::new(),
            checklist: Vec::new(),
        }
    }

    /// Items that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Item> {
        self.config
            .iter()
            .chain(&self.checklist)
            .filter(|i| i.status == Status::Fail)
    }
}

/// `entragate check`: loads the config at `path`, checks it (against the application object
/// in `app`, offline, when given), prints the report; returns the exit code (0 all well, 1 a
/// check failed, 2 bad config or an unreadable application object).
pub async fn command(path: &std::path::Path, app: Option<&std::path::Path>, format: Format) -> u8 {
    let shown = path.display().to_string();
    let (report, code) = match Config::load_file(path) {
        Err(e) => (Report::bad_config(&shown, &e), BAD_CONFIG),
        Ok(config) if app.is_some() => {
            let file = app.map(|p| p.display().to_string()).unwrap_or_default();
            let parsed = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {file}: {e}"))
                .and_then(|text| app::App::parse(&text).map_err(|e| format!("{file}: {e}")));
            match parsed {
                Err(e) => {
                    eprintln!("entragate check --app: {e}");
                    return BAD_CONFIG;
                }
                Ok(application) => {
                    let report = Report::of_app(&config, &application, &shown, &file);
                    let code = if report.ok { 0 } else { FAILED };
                    (report, code)
                }
            }
        }
        Ok(config) => match run(&config, &shown, &mut std::io::stderr()).await {
            Ok(report) => {
                let code = if report.ok { 0 } else { FAILED };
                (report, code)
            }
            Err(e) => {
                eprintln!("entragate check: {e}");
                return FAILED;
            }
        },
    };
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    code
}

/// Checks a loaded config: fetches every issuer's metadata and keys (saying so on
/// `progress`), then runs the checklist.
///
/// # Errors
/// When the HTTP client cannot be built.
pub async fn run(
    config: &Config,
    path: &str,
    progress: &mut dyn std::io::Write,
) -> Result<Report, String> {
    let client =
        crate::app::idp_client(config.entra.metadata_timeout).map_err(|e| e.to_string())?;
    // The same sources, names and URLs as `serve` uses.
    let store = KeyStore::new(&config.key_entra(), &config.oidc, &client, &Metrics::new());
    let mut fetches = Vec::new();
    for issuer in &store.issuers {
        let s = &issuer.source;
        let mut f = Fetch {
            source: s.name.clone(),
            metadata_url: s.metadata_url.clone(),
            metadata_ms: None,
            jwks_uri: None,
            jwks_ms: None,
            issuer: None,
            keys: 0,
            error: None,
            file: None,
        };
        if let Some(path) = s.file_path() {
            let path = path.display().to_string();
            let _ = write!(progress, "reading {} keys file {path} ... ", s.name);
            let _ = progress.flush();
            let started = Instant::now();
            let result = s.refresh().await;
            f.jwks_ms = Some(ms(started.elapsed()));
            f.keys = s.key_count();
            f.issuer = s.snapshot().map(|set| set.issuer.to_string());
            f.file = Some(path);
            match result {
                Ok(()) => {
                    let _ = writeln!(progress, "ok ({} keys)", f.keys);
                }
                Err(e) => {
                    let _ = writeln!(progress, "failed");
                    f.error = Some(e.to_string());
                }
            }
            fetches.push(f);
            continue;
        }
        let _ = write!(
            progress,
            "fetching {} metadata {} ... ",
            s.name, s.metadata_url
        );
        let _ = progress.flush();
        let started = Instant::now();
        let metadata = fetch_metadata(&client, &s.metadata_url, s.expected_issuer()).await;
        f.metadata_ms = Some(ms(started.elapsed()));
        match metadata {
            Err(e) => {
                let _ = writeln!(progress, "failed ({} ms)", ms(started.elapsed()));
                f.error = Some(e.to_string());
            }
            Ok(metadata) => {
                let _ = writeln!(progress, "ok ({} ms)", ms(started.elapsed()));
                let _ = write!(
                    progress,
                    "fetching {} keys {} ... ",
                    s.name, metadata.jwks_uri
                );
                let _ = progress.flush();
                f.issuer = Some(metadata.issuer.clone());
                f.jwks_uri = Some(metadata.jwks_uri.clone());
                let started = Instant::now();
                let keys = fetch_keys(&client, &metadata).await;
                f.jwks_ms = Some(ms(started.elapsed()));
                match keys {
                    Ok(fetched) => {
                        let _ = writeln!(
                            progress,
                            "ok ({} ms, {} keys)",
                            ms(started.elapsed()),
                            fetched.keys.len()
                        );
                        f.keys = fetched.keys.len();
                    }
                    Err(e) => {
                        let _ = writeln!(progress, "failed ({} ms)", ms(started.elapsed()));
                        f.error = Some(e.to_string());
                    }
                }
            }
        }
        fetches.push(f);
    }
    let mut items: Vec<Item> = fetches.iter().map(checklist::fetch_item).collect();
    items.extend(checklist::items(config, &fetches));
    items.extend(limits::items(config).await);
    items.extend(upstream::items(config));
    Ok(Report {
        ok: !items.iter().any(|i| i.status == Status::Fail),
        config_path: path.to_owned(),
        app: None,
        config: Vec::new(),
        fetches,
        checklist: items,
    })
}

impl Report {
    /// The comparison of the application object in `file` with a loaded config.
    #[must_use]
    pub fn of_app(config: &Config, application: &app::App, path: &str, file: &str) -> Self {
        let checklist = app::items(config, application, file);
        Self {
            ok: !checklist.iter().any(|i| i.status == Status::Fail),
            config_path: path.to_owned(),
            app: Some(file.to_owned()),
            config: Vec::new(),
            fetches: Vec::new(),
            checklist,
        }
    }

    /// The report for people.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "entragate check: {}\n", self.config_path);
        if !self.config.is_empty() {
            let _ = writeln!(
                o,
                "Configuration: {} problem(s); nothing else was checked",
                self.config.len()
            );
            for i in &self.config {
                write_item(&mut o, i);
            }
        } else {
            let _ = writeln!(o, "Configuration\n  ok    every key is valid\n");
            match &self.app {
                Some(file) => {
                    let _ = writeln!(o, "App registration {file} against the config");
                }
                None => {
                    let _ = writeln!(o, "Identity provider and checklist");
                }
            }
            for i in &self.checklist {
                write_item(&mut o, i);
            }
        }
        let fails = self.failures().count();
        let warns = self
            .checklist
            .iter()
            .filter(|i| i.status == Status::Warn)
            .count();
        let todo = self
            .checklist
            .iter()
            .filter(|i| i.status == Status::Todo)
            .count();
        let _ = writeln!(o);
        if fails == 0 && todo == 0 {
            let _ = writeln!(o, "All is well: {warns} warning(s).");
        } else if fails == 0 {
            let _ = writeln!(
                o,
                "All is well: {warns} warning(s); confirm the {todo} [ ] step(s) in the Entra admin center."
            );
        } else {
            let _ = writeln!(
                o,
                "{fails} problem(s) to fix (FAIL above), {warns} warning(s). Fix them, then run `entragate check` again."
            );
        }
        o
    }
}

fn write_item(o: &mut String, i: &Item) {
    let mark = match i.status {
        Status::Ok => "ok  ",
        Status::Warn => "warn",
        Status::Fail => "FAIL",
        Status::Todo => "[ ] ",
    };
    let _ = writeln!(o, "  {mark}  {}", i.message);
    if !i.fix.is_empty() {
        let label = if i.status == Status::Ok {
            "note"
        } else {
            "fix"
        };
        let _ = writeln!(o, "        {label}: {}", i.fix);
    }
}
