//! The TOML being written: keys and comments per table, rendered in a fixed order so the
//! output reads like `config/entragate.example.toml`.

use std::fmt::Write as _;

/// One table's lines.
#[derive(Debug, Default)]
pub(super) struct Table {
    lines: Vec<String>,
}

impl Table {
    /// `key = value  # why`. `value` is already TOML.
    pub(super) fn set(&mut self, key: &str, value: &str, why: &str) {
        if why.is_empty() {
            self.lines.push(format!("{key} = {value}"));
        } else {
            self.lines.push(format!("{key} = {value}   # {why}"));
        }
    }

    /// A comment line (or several, split at newlines).
    pub(super) fn note(&mut self, text: &str) {
        for line in text.lines() {
            self.lines.push(format!("# {line}"));
        }
    }

    /// Moves `other`'s lines to the end of this table.
    pub(super) fn append(&mut self, other: &mut Table) {
        self.lines.append(&mut other.lines);
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Replaces the value of `key` (a line `key = …` written by [`Table::set`]).
    pub(super) fn replace(&mut self, key: &str, value: &str, why: &str) {
        let start = format!("{key} = ");
        self.lines.retain(|l| !l.starts_with(&start));
        self.set(key, value, why);
    }
}

/// The whole output.
#[derive(Debug, Default)]
pub(super) struct Draft {
    pub header: Vec<String>,
    pub server: Table,
    pub upstream: Table,
    pub entra: Table,
    /// `[[routes]]` entries.
    pub routes: Vec<Table>,
    /// `[[oidc]]` entries.
    pub oidc: Vec<Table>,
    /// `[[limits]]` entries.
    pub limits: Vec<Table>,
    /// `[[apis]]` entries, each with its `[[apis.routes]]`.
    pub apis: Vec<(Table, Vec<Table>)>,
    /// Attributes and elements with no equivalent, as comments at the end.
    pub unconverted: Vec<String>,
}

impl Draft {
    pub(super) fn render(&self) -> String {
        let mut o = String::new();
        for h in &self.header {
            let _ = writeln!(o, "# {h}");
        }
        for (name, table) in [
            ("[server]", &self.server),
            ("[upstream]", &self.upstream),
            ("[entra]", &self.entra),
        ] {
            if !table.is_empty() {
                let _ = writeln!(o, "\n{name}");
                for l in &table.lines {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
        for (api, routes) in &self.apis {
            let _ = writeln!(o, "\n[[apis]]");
            for l in &api.lines {
                let _ = writeln!(o, "{l}");
            }
            for r in routes {
                let _ = writeln!(o, "\n[[apis.routes]]");
                for l in &r.lines {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
        for (name, tables) in [
            ("[[routes]]", &self.routes),
            ("[[oidc]]", &self.oidc),
            ("[[limits]]", &self.limits),
        ] {
            for t in tables {
                let _ = writeln!(o, "\n{name}");
                for l in &t.lines {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
        if !self.unconverted.is_empty() {
            let _ = writeln!(o, "\n# Parts of the policy with no entragate equivalent:");
            for u in &self.unconverted {
                let _ = writeln!(o, "#   - {u}");
            }
        }
        o
    }
}

/// A TOML basic string. JSON string escapes are a subset of TOML's, so serde_json's quoting is
/// valid TOML.
pub(super) fn string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A TOML array of basic strings.
pub(super) fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_toml() {
        let s = string("a \"b\" \\ c\n\u{1}");
        let parsed: toml_check::Value = toml_check::parse(&format!("k = {s}"));
        assert_eq!(parsed.0, "a \"b\" \\ c\n\u{1}");
    }

    /// Reads the value back through figment's TOML parser, as the config loader does.
    mod toml_check {
        use figment::Figment;
        use figment::providers::{Format as _, Toml};

        pub struct Value(pub String);

        pub fn parse(text: &str) -> Value {
            let v: String = Figment::from(Toml::string(text))
                .extract_inner("k")
                .expect("valid TOML string");
            Value(v)
        }
    }
}
