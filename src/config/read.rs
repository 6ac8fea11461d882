//! Reading keys one at a time from the layered sources, collecting every problem.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format as _, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider as _};
use serde::de::DeserializeOwned;

use super::{CONFIG_ENV, ENV_PREFIX, LOG_FORMAT_ENV, MAX_DURATION};

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `table.key`
    pub key: String,
    /// The environment variable the value came from, when it did.
    pub env_var: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env_var {
            Some(var) => write!(f, "{} (from {var}): {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// All the problems of one config, in the order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn single(key: &str, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.to_owned(),
                env_var: None,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The merged sources plus the problems found so far.
pub(super) struct Reader {
    figment: Figment,
    /// `table.key` -> variable name, for keys set from the environment.
    from_env: HashMap<String, String>,
    problems: Vec<Problem>,
}

impl Reader {
    pub(super) fn new(toml_text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(toml_text));
        // A TOML syntax error is reported up front: nothing else can be read reliably.
        if let Err(e) = figment.data() {
            return Err(ConfigError::single(
                "config",
                format!("not valid TOML: {e}"),
            ));
        }
        let mut from_env = HashMap::new();
        let mut problems = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_ENV || name == LOG_FORMAT_ENV {
                continue;
            }
            let Some((table, key)) = rest.split_once("__") else {
                problems.push(Problem {
                    // `ENTRAGATE_` alone names nothing after the prefix: the problem is then
                    // named by the variable, never by an empty key.
                    key: if rest.is_empty() {
                        name.clone()
                    } else {
                        rest.to_ascii_lowercase()
                    },
                    env_var: Some(name.clone()),
                    message: "not a config key; use ENTRAGATE_<TABLE>__<KEY>".into(),
                });
                continue;
            };
            let path = format!(
                "{}.{}",
                table.to_ascii_lowercase(),
                key.to_ascii_lowercase()
            );
            // `[a, b]` is a list (figment's syntax); anything else stays the exact string, so a
            // password of digits is not turned into a number. Booleans are read leniently.
            let value = if raw.trim_start().starts_with('[') {
                Value::from_str(raw).unwrap_or_else(|_| Value::from(raw.clone()))
            } else {
                Value::from(raw.clone())
            };
            figment = figment.merge(Serialized::default(&path, value));
            from_env.insert(path, name.clone());
        }
        Ok(Self {
            figment,
            from_env,
            problems,
        })
    }

    /// A reader of `value` alone, placed at `table` (so `table.key` reads its keys), with no
    /// environment: used for a table nested in an array entry (`apis[0].upstream`), read by
    /// the same functions as its top-level namesake.
    pub(super) fn nested(table: &str, value: Value) -> Self {
        Self {
            figment: Figment::from(Serialized::default(table, value)),
            from_env: HashMap::new(),
            problems: Vec::new(),
        }
    }

    /// The problems found so far, taken out.
    pub(super) fn take_problems(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.problems)
    }

    /// True when a problem has been recorded for `key` with `message`.
    pub(super) fn has_problem(&self, key: &str, message: &str) -> bool {
        self.problems
            .iter()
            .any(|p| p.key == key && p.message == message)
    }

    /// Records `problem` as found elsewhere (by a nested reader).
    pub(super) fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Records a problem with `key`.
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            env_var: self.from_env.get(key).cloned(),
            message: message.into(),
        });
    }

    pub(super) fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// Flags every key that is not in `known`, and the contract's keys this version lacks.
    pub(super) fn reject_unknown(
        &mut self,
        known: &[&str],
        arrays: &[&str],
        not_yet: &[(&str, &str)],
    ) {
        let Ok(data) = self.figment.data() else {
            return;
        };
        let Some(root) = data.get(&Profile::Default) else {
            return;
        };
        let mut found = Vec::new();
        for (table, value) in root {
            if arrays.contains(&table.as_str()) {
                continue;
            }
            if let Some((_, what)) = not_yet.iter().find(|(k, _)| k == table) {
                found.push((
                    key_name(table).into_owned(),
                    table.clone(),
                    format!("{what} are not available in this version"),
                ));
                continue;
            }
            let is_table = known.iter().any(|k| k.starts_with(&format!("{table}.")));
            match value {
                Value::Dict(_, dict) if is_table => {
                    collect_unknown(table, dict, known, not_yet, &mut found);
                }
                Value::Dict(..) => found.push((
                    key_name(table).into_owned(),
                    table.clone(),
                    "unknown table".to_owned(),
                )),
                _ => found.push((
                    key_name(table).into_owned(),
                    table.clone(),
                    if is_table {
                        format!("[{table}] must be a table")
                    } else {
                        "unknown key".to_owned()
                    },
                )),
            }
        }
        // A value from the environment is traced to its variable by the key's plain path.
        for (shown, path, message) in found {
            self.problems.push(Problem {
                env_var: self.from_env.get(&path).cloned(),
                key: shown,
                message,
            });
        }
    }

    /// The raw value at `key`, if set.
    pub(super) fn value(&self, key: &str) -> Option<Value> {
        self.figment.find_value(key).ok()
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.figment.contains(key)
    }

    fn extract<T: DeserializeOwned>(&mut self, key: &str, expected: &str) -> Option<T> {
        if !self.figment.contains(key) {
            return None;
        }
        match self.figment.extract_inner_lossy::<T>(key) {
            Ok(v) => Some(v),
            Err(e) => {
                let found = self
                    .figment
                    .find_value(key)
                    .map(|v| describe(&v))
                    .unwrap_or_else(|_| e.kind.to_string());
                self.problem(key, format!("expected {expected}, found {found}"));
                None
            }
        }
    }

    pub(super) fn opt_string(&mut self, key: &str) -> Option<String> {
        self.extract::<String>(key, "a string")
    }

    pub(super) fn string(&mut self, key: &str, default: &str) -> String {
        self.opt_string(key).unwrap_or_else(|| default.to_owned())
    }

    pub(super) fn required_string(&mut self, key: &str) -> String {
        match self.opt_string(key) {
            Some(s) if !s.trim().is_empty() => s,
            Some(_) => {
                self.problem(key, "must not be empty");
                String::new()
            }
            None => {
                if !self.figment.contains(key) {
                    self.problem(key, "is required");
                }
                String::new()
            }
        }
    }

    pub(super) fn strings(&mut self, key: &str) -> Vec<String> {
        self.extract::<Vec<String>>(key, "a list of strings")
            .unwrap_or_default()
    }

    pub(super) fn strings_or(&mut self, key: &str, default: &[&str]) -> Vec<String> {
        self.extract::<Vec<String>>(key, "a list of strings")
            .unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect())
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> bool {
        self.extract::<bool>(key, "true or false")
            .unwrap_or(default)
    }

    /// A number (an integer or a decimal), `None` when absent or not a number.
    pub(super) fn opt_f64(&mut self, key: &str) -> Option<f64> {
        self.extract::<f64>(key, "a number")
    }

    pub(super) fn u64(&mut self, key: &str, default: u64) -> u64 {
        self.extract::<u64>(key, "a whole number")
            .unwrap_or(default)
    }

    /// A byte size: a whole number of bytes or a string like `"10MiB"`; 0 = no limit (`None`).
    /// Absent = `None`.
    pub(super) fn size(&mut self, key: &str) -> Option<u64> {
        let value = self.value(key)?;
        match parse_size(&value) {
            Ok(n) => (n > 0).then_some(n),
            Err(msg) => {
                self.problem(key, msg);
                None
            }
        }
    }

    /// A string value parsed with `FromStr`; the default is parsed the same way.
    pub(super) fn parse<T>(&mut self, key: &str, default: &'static str) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let text = self.string(key, default);
        match text.parse() {
            Ok(v) => v,
            Err(e) => {
                self.problem(key, format!("{text:?}: {e}"));
                #[allow(clippy::expect_used)]
                default.parse().ok().expect("built-in defaults parse")
            }
        }
    }

    /// A duration written like `"30s"`, `"5m"`, `"1h"`, at most [`MAX_DURATION`].
    pub(super) fn duration(&mut self, key: &str, default: &'static str) -> Duration {
        let text = self.string(key, default);
        match parse_duration(&text) {
            Ok(d) => d,
            Err(msg) => {
                self.problem(key, msg);
                parse_duration(default).unwrap_or_default()
            }
        }
    }
}

/// `"30s"`, `"1h 30m"`, `"250ms"`, ... (humantime's syntax), at most [`MAX_DURATION`].
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let too_long = || format!("{text:?} is longer than the 100 years a duration may be");
    // humantime adds up the parts in u64 seconds and panics when they reach exactly
    // u64::MAX with a carry from the sub-second part ("18446744073709551615s 1000ms").
    // Bounding every number by the longest unit (a year of 365.25 days) keeps any text that
    // could get there away from it.
    if !below_u64_seconds(text) {
        return Err(too_long());
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like \"30s\" or \"5m\": {e}"))?;
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// True when every run of digits in `text`, each read as a number of years, adds up to less
/// than `u64::MAX` seconds: then no reading of `text` as a duration comes near it.
fn below_u64_seconds(text: &str) -> bool {
    const YEAR_SECS: u128 = 31_557_600;
    let mut total: u128 = 0;
    for run in text.split(|c: char| !c.is_ascii_digit()) {
        if run.is_empty() {
            continue;
        }
        let digits = run.trim_start_matches('0');
        // 20 digits and more: at least 10^19, past u64::MAX seconds as years or not.
        if digits.len() >= 20 {
            return false;
        }
        let n: u128 = digits.parse().unwrap_or(0);
        total = total.saturating_add((n + 1) * YEAR_SECS);
    }
    total < u128::from(u64::MAX)
}

fn collect_unknown(
    table: &str,
    dict: &Dict,
    known: &[&str],
    not_yet: &[(&str, &str)],
    found: &mut Vec<(String, String, String)>,
) {
    for key in dict.keys() {
        let path = format!("{table}.{key}");
        if known.contains(&path.as_str()) {
            continue;
        }
        // Named as TOML would write the key (quoted when not bare).
        let shown = format!("{table}.{}", key_name(key));
        if let Some((_, what)) = not_yet.iter().find(|(k, _)| *k == path) {
            found.push((
                shown,
                path,
                format!("not available in this version ({what})"),
            ));
        } else {
            found.push((shown, path, "unknown key".to_owned()));
        }
    }
}

/// A key of the config as a problem names it: bare when TOML would write it bare
/// (`A-Za-z0-9_-`), else quoted (`""`, `"a.b"`), so an empty or dotted key is still seen.
pub(super) fn key_name(key: &str) -> Cow<'_, str> {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(_, s) => format!("string {s:?}"),
        Value::Char(_, c) => format!("character {c:?}"),
        Value::Bool(_, b) => format!("boolean {b}"),
        Value::Num(_, n) => format!("number {n:?}"),
        Value::Empty(..) => "nothing".to_owned(),
        Value::Dict(..) => "a table".to_owned(),
        Value::Array(..) => "an array".to_owned(),
    }
}

/// `1048576`, `"1048576"`, `"512KiB"`, `"10MiB"`, `"1GiB"`, `"10MB"` (SI), `"0"`.
pub(super) fn parse_size(v: &Value) -> Result<u64, String> {
    let text = match v {
        Value::Num(_, n) => {
            // TOML integers are signed: `max_body = 1048576` is an i64.
            return n
                .to_u128_lossy()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| "must be a whole number of bytes".to_owned());
        }
        Value::String(_, s) => s.trim().to_owned(),
        other => {
            return Err(format!(
                "expected a size like \"10MiB\", found {}",
                describe(other)
            ));
        }
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"10MiB\""))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unit must be B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}
