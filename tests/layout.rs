//! The layout of `src/` as a test: imports run one way. `core` uses neither `store` nor
//! `edge`, `store` does not use `edge`, `edge::respond` (the leaf that makes responses) uses
//! no other part of the Worker, `runtime` (the calls into the Workers runtime) uses nothing
//! of the crate and `core` does not use it, and no module reaches another that reaches it
//! back.
//!
//! Imports are read from the text: every `crate::`, `super::` and `self::` path outside
//! test modules, comments and visibility (`pub(super)`), braces expanded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`edge::limit`) → the source of that module, without its tests.
fn modules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).unwrap();
            let mut parts: Vec<String> =
                rel.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.insert(parts.join("::"), without_tests(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// The text before the first `#[cfg(test)]` module, comment lines dropped.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|n| n.contains("mod ")) {
            break;
        }
        if !t.starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every path that starts with `crate::`, `super::` or `self::`, braces expanded:
/// `super::{a, b::c}` gives `super::a` and `super::b::c`.
fn paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in ["crate::", "super::", "self::"] {
        let mut rest = text;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            rest = &rest[at + root.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            let head = tail[..end].trim_end_matches(':');
            if tail[end..].starts_with('{') {
                let close = tail[end..].find('}').map_or(tail.len(), |c| end + c);
                for item in tail[end + 1..close].split(',') {
                    let item = item.trim().split(" as ").next().unwrap_or("");
                    let item: String =
                        item.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                    if !item.is_empty() && item != "self" {
                        out.push(format!("{head}::{item}"));
                    }
                }
                out.push(head.to_string());
            } else {
                out.push(head.to_string());
            }
        }
    }
    out
}

/// The module a path names from module `from`: the longest prefix that is a module.
fn target(modules: &BTreeMap<String, String>, from: &str, path: &str) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if from.is_empty() { Vec::new() } else { from.split("::").collect() };
    match segs.first().copied() {
        Some("crate") => base.clear(),
        Some("self") => {}
        Some("super") => {
            base.pop();
        }
        _ => return None,
    }
    segs.remove(0);
    while segs.first() == Some(&"super") {
        base.pop();
        segs.remove(0);
    }
    (0..=segs.len()).rev().map(|n| [base.as_slice(), &segs[..n]].concat().join("::")).find(|m| modules.contains_key(m))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (name, text) in &modules {
        let uses: BTreeSet<String> = paths(text)
            .iter()
            .filter_map(|p| target(&modules, name, p))
            .filter(|t| t != name && !t.is_empty())
            .collect();
        graph.insert(name.clone(), uses);
    }
    graph
}

#[test]
fn imports_run_one_way() {
    let graph = graph();
    assert!(graph.contains_key("edge::limit") && graph.contains_key("core::policy"), "{:?}", graph.keys());
    for (from, uses) in &graph {
        for to in uses {
            let layer = |m: &str| m.split("::").next().unwrap_or("").to_string();
            let (a, b) = (layer(from), layer(to));
            assert!(!(a == "core" && (b == "store" || b == "edge")), "{from} uses {to}: core is pure");
            assert!(!(a == "store" && b == "edge"), "{from} uses {to}: the stores know nothing of the Worker");
            assert!(!(from == "edge::respond" && b == "edge"), "{from} uses {to}: respond is the leaf");
            assert!(
                a != "runtime" || b == "runtime",
                "{from} uses {to}: runtime, the calls into the runtime, is a leaf"
            );
            assert!(!(a == "core" && b == "runtime"), "{from} uses {to}: core is pure");
            if a == "edge" {
                assert!(!from.starts_with(&format!("{to}::")), "{from} calls back into {to}, its parent");
            }
        }
    }
    // No cycle: a depth-first walk never meets a module it is still inside.
    fn walk<'a>(
        g: &'a BTreeMap<String, BTreeSet<String>>,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in g.get(m).into_iter().flatten() {
            walk(g, next, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        walk(&graph, m, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_reader_sees_a_cycle_when_there_is_one() {
    let mut modules = BTreeMap::new();
    modules.insert("core::a".to_string(), String::new());
    modules.insert("core::b".to_string(), String::new());
    let found: Vec<String> = paths("use super::{b, c::d};\n// use crate::x\nlet x = crate::core::a::f();")
        .iter()
        .filter_map(|p| target(&modules, "core::a", p))
        .collect();
    assert_eq!(found, ["core::a", "core::b"]);
    assert_eq!(without_tests("use a;\n#[cfg(test)]\nmod tests {\nuse super::x;\n}\n"), "use a;\n");
}
