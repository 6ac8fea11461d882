//! The layering rule of `docs/architecture.md`, checked on the source: top-level modules of
//! `src/` import one another without a cycle, `config` imports only the leaves it parses
//! with, and `metrics`, `telemetry`, `reason`, `path`, `pem` and `redis` import no module of the crate
//! (but `reason`, the vocabulary of refusals, which `metrics` counts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::<module>` names used by each top-level module's files (tests left out).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("name")
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let used = out.entry(top.clone()).or_default();
            for line in code.lines().map(|l| l.split("//").next().unwrap_or("")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        used.insert(name);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn modules_import_one_another_without_a_cycle() {
    let graph = imports();
    // Depth-first search for a back edge, naming the cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_owned());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.len() > 10, "read only {:?}", graph.keys());
}

#[test]
fn config_is_data_and_the_leaves_stay_leaves() {
    let graph = imports();
    let allowed: [(&str, &[&str]); 9] = [
        ("trace", &["config", "metrics"]),
        ("config", &["path", "pem", "redis"]),
        ("metrics", &["reason", "sync"]),
        ("telemetry", &["sync"]),
        ("reason", &[]),
        ("path", &[]),
        ("pem", &[]),
        ("redis", &["sync"]),
        ("sync", &[]),
    ];
    for (module, may) in allowed {
        let used = graph.get(module).cloned().unwrap_or_default();
        let extra: Vec<&String> = used.iter().filter(|u| !may.contains(&u.as_str())).collect();
        assert!(extra.is_empty(), "{module} imports {extra:?}");
    }
}
