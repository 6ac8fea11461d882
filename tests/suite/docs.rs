//! `docs/configuration.md` stays in step with the config reader: it names every key the
//! reader knows (`server.listen`, and `routes[].path` / `oidc[].issuer` for the arrays of
//! tables), and no key the reader does not know.

use std::collections::BTreeSet;
use std::path::Path;

use entragate::config::{
    API_KEYS, ARRAY_TABLES, DEV_CLIENT_KEYS, DEV_USER_KEYS, KNOWN_KEYS, LIMIT_KEYS, OIDC_KEYS,
    ROUTE_KEYS,
};

const DOC: &str = "docs/configuration.md";

/// The keys of one array of tables, as the reader knows them.
fn array_table_keys(table: &str) -> &'static [&'static str] {
    match table {
        "routes" => ROUTE_KEYS,
        "oidc" => OIDC_KEYS,
        "limits" => LIMIT_KEYS,
        "apis" => API_KEYS,
        other => panic!(
            "[[{other}]] is an array of tables this test does not know: list its keys here so {DOC} is checked for them"
        ),
    }
}

/// Arrays of tables inside a table (`[[dev.users]]`), each a key of `KNOWN_KEYS`, with
/// their entries' keys.
const NESTED_ARRAYS: &[(&str, &[&str])] = &[
    ("dev.users", DEV_USER_KEYS),
    ("dev.clients", DEV_CLIENT_KEYS),
];

/// Every key the config reader knows, spelled as the documentation writes it.
fn known_keys() -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = KNOWN_KEYS.iter().map(|k| (*k).to_owned()).collect();
    for table in ARRAY_TABLES {
        for key in array_table_keys(table) {
            keys.insert(format!("{table}[].{key}"));
        }
    }
    for (array, entry_keys) in NESTED_ARRAYS {
        assert!(KNOWN_KEYS.contains(array), "{array} is a known key");
        for key in *entry_keys {
            keys.insert(format!("{array}[].{key}"));
        }
    }
    keys
}

/// The tables a key may name: the single tables of `KNOWN_KEYS` and the arrays of tables.
fn tables() -> BTreeSet<String> {
    let mut tables: BTreeSet<String> = KNOWN_KEYS
        .iter()
        .filter_map(|k| k.split_once('.'))
        .map(|(table, _)| table.to_owned())
        .collect();
    tables.extend(ARRAY_TABLES.iter().map(|t| format!("{t}[]")));
    tables.extend(NESTED_ARRAYS.iter().map(|(t, _)| format!("{t}[]")));
    tables
}

/// The inline code spans of `text` outside fenced code blocks that look like a key of one of
/// `tables`: `table.key`, `table[].key`.
fn key_spans(text: &str, tables: &BTreeSet<String>) -> BTreeSet<String> {
    let mut spans = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for span in line.split('`').skip(1).step_by(2) {
            let Some((table, key)) = span.rsplit_once('.') else {
                continue;
            };
            let is_key = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if is_key && tables.contains(table) {
                spans.insert(span.to_owned());
            }
        }
    }
    spans
}

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn configuration_md_names_every_key() {
    let documented = key_spans(&doc(), &tables());
    let missing: Vec<String> = known_keys()
        .into_iter()
        .filter(|k| !documented.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{DOC} does not name {} key(s) the config reader knows; write each in backticks, as `table.key` (`routes[].key`, `oidc[].key` for arrays of tables), outside code blocks:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

#[test]
fn configuration_md_names_no_unknown_key() {
    let known = known_keys();
    let unknown: Vec<String> = key_spans(&doc(), &tables())
        .into_iter()
        .filter(|k| !known.contains(k))
        .collect();
    assert!(
        unknown.is_empty(),
        "{DOC} names {} key(s) the config reader does not know (a typo, or a key that was renamed or removed):\n  {}",
        unknown.len(),
        unknown.join("\n  ")
    );
}

#[test]
fn key_spans_reads_inline_code_only() {
    let tables: BTreeSet<String> = ["server", "routes[]"].map(String::from).into();
    let text = "`server.listen` and `routes[].path`, not `jwt.kid` or `server.tls_*`\n\
                ```toml\n`server.in_a_fence`\n```\n\
                `server.max_body` | `10MiB`";
    let spans: Vec<String> = key_spans(text, &tables).into_iter().collect();
    assert_eq!(spans, ["routes[].path", "server.listen", "server.max_body"]);
}
