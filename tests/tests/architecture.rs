//! Architecture checks on the source tree: within every crate, the top-level modules import
//! each other without a cycle, so each concern has a direction and a leaf vocabulary (the
//! edge's `route`, the queue's `source`) stays a leaf.
//!
//! A module's imports are the `crate::NAME` paths in it (`use crate::{a, b::C}` included),
//! outside its `#[cfg(test)]` part.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names after `crate::` in `text`, and inside `use crate::{…}` groups.
fn imports(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find("};").unwrap_or(group.len())];
            // A group's top-level names: each follows `{`, `,` or the start, at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && !c.is_whitespace() => {
                        start = false;
                        names.insert(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// The top-level modules of the crate whose `src` is `src`, and what each imports.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap();
        let top = first.as_os_str().to_string_lossy();
        let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
        let top = if matches!(top.as_str(), "lib" | "main") {
            "<root>".to_owned()
        } else {
            top
        };
        let text = fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        graph.entry(top).or_default().extend(imports(code));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (name, deps) in &mut graph {
        deps.retain(|d| modules.contains(d) && d != name);
    }
    graph
}

/// A cycle through `from`, if there is one.
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in graph.get(path.last().unwrap()).into_iter().flatten() {
        if next == from {
            let mut found = path.clone();
            found.push(next.clone());
            return Some(found);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(found) = cycle(graph, from, path) {
                return Some(found);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut crates: Vec<PathBuf> = fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .collect();
    crates.push(workspace().join("tests/src"));
    let mut found = Vec::new();
    for src in crates.iter().filter(|p| p.is_dir()) {
        let graph = graph(src);
        for module in graph.keys() {
            if let Some(cycle) = cycle(&graph, module, &mut vec![module.clone()]) {
                found.push(format!("{}: {}", src.display(), cycle.join(" → ")));
            }
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
    assert!(crates.len() >= 9, "the crates were found");
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let text = "use crate::{a::B, c, d::{e, f}};\nfn x() { crate::g::h(); }\nuse crate::i;";
    let names: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(names, ["a", "c", "d", "g", "i"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        cycle(&g, "a", &mut vec!["a".to_owned()]),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
