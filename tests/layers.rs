//! Imports point down the layers (see `docs/architecture.md`): every `crate::X` path in a file
//! of `src/` names a module of a lower layer, or the file's own module. Reads the sources; the
//! self-check feeds it a broken import and expects it to be caught.

use std::path::Path;

/// Bottom first. A module may use modules of lower layers only (and itself).
const LAYERS: &[&[&str]] = &[
    &["logging", "config"],
    &["reactor"],
    &["stats"],
    &["net"],
    &["wire"],
    &["api", "discovery"],
    &["register", "gateway", "worker", "master", "http"],
    &["app", "cli"],
];

/// Imports that break the rule today, each with why; an entry that no longer matches
/// anything fails the check, so it is removed as soon as the import is gone.
const EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "src/worker/tests.rs",
    "gateway",
    "the dispatch tests build their config with the gateway tests' builder",
)];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a file of `src/` belongs to (`src/net/io.rs` -> `net`).
fn module_of(path: &str) -> &str {
    let rest = path.strip_prefix("src/").unwrap_or(path);
    let first = rest.split('/').next().unwrap_or(rest);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The top-level modules named by `crate::` paths in `text`, with their line numbers;
/// `crate::{a, b::c}` names `a` and `b`.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let boundary = rest[..i].chars().last().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            rest = &rest[i + "crate::".len()..];
            if !boundary {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in split_top_level(&group[..end]) {
                    out.push((n + 1, ident(part.trim())));
                }
            } else {
                out.push((n + 1, ident(rest)));
            }
        }
    }
    out.retain(|(_, m)| !m.is_empty());
    out
}

/// Split `a, b::{c, d}, e` at the commas outside braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Every broken rule in `files` (path relative to the repository, text).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut used = vec![false; EXCEPTIONS.len()];
    for (path, text) in files {
        let from = module_of(path);
        let Some(from_layer) = layer_of(from) else {
            bad.push(format!("{path}: module `{from}` is in no layer of tests/layers.rs"));
            continue;
        };
        for (line, to) in crate_paths(text) {
            if to == from {
                continue;
            }
            let ok = layer_of(&to).is_some_and(|l| l < from_layer);
            if ok {
                continue;
            }
            if let Some(e) = EXCEPTIONS.iter().position(|(p, m, _)| p == path && *m == to) {
                used[e] = true;
                continue;
            }
            bad.push(format!("{path}:{line}: `{from}` uses `crate::{to}`, which is not below it"));
        }
    }
    for ((path, to, _), used) in EXCEPTIONS.iter().zip(used) {
        let present = files.iter().any(|(p, _)| p == path);
        if present && !used {
            bad.push(format!("{path}: no longer uses `crate::{to}`; remove its exception"));
        }
    }
    bad
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_tree(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn imports_point_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    read_tree(&root.join("src"), root, &mut files);
    // The crate roots declare the modules; they are not part of a layer.
    files.retain(|(p, _)| p != "src/lib.rs" && p != "src/main.rs");
    assert!(files.len() > 50, "read {} files of src/", files.len());
    let bad = violations(&files);
    assert!(bad.is_empty(), "imports against the layers:\n{}", bad.join("\n"));
}

#[test]
fn the_check_catches_a_broken_import() {
    let file = |p: &str, t: &str| (p.to_string(), t.to_string());
    let files = vec![
        file("src/reactor/x.rs", "use crate::reactor::Ctx;\nuse crate::gateway::Gateway;\n"),
        file("src/stats/y.rs", "fn f() { crate::master::signal(1, 2); } // crate::cli in a comment\n"),
        file("src/wire/z.rs", "use crate::{net::io::Io, worker::{self, Worker}, reactor};\n"),
        file("src/gateway/ok.rs", "use crate::{net, wire::php, stats::Slot};\nuse crate::reactor::Ctx;\n"),
        file("src/worker/tests.rs", "fn f() {}\n"),
        file("src/newthing.rs", "fn f() {}\n"),
    ];
    let bad = violations(&files);
    let expect = [
        "src/reactor/x.rs:2: `reactor` uses `crate::gateway`",
        "src/stats/y.rs:1: `stats` uses `crate::master`",
        "src/wire/z.rs:1: `wire` uses `crate::worker`",
        "src/newthing.rs: module `newthing` is in no layer",
        "src/worker/tests.rs: no longer uses `crate::gateway`",
    ];
    assert_eq!(bad.len(), expect.len(), "{bad:#?}");
    for (b, e) in bad.iter().zip(expect) {
        assert!(b.starts_with(e), "{b} should start with {e}");
    }
}
