//! The architecture, written where it cannot drift: reads every `crate::`
//! path in the crate's sources (tests included) and fails when a module
//! reaches into a layer above its own, when a top-level module is missing
//! from [`LAYERS`], or when the files of one folder import each other in a
//! circle. ARCHITECTURE.md explains the layers; lib.rs lists them in the
//! same order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up. A module may import from the
/// layers below its own, never from its own layer's other modules or from
/// above. The pipeline's stages (config → plan → rootfs → pki → fs → disk →
/// artifact → flash | qemu) keep their order; `util`, `debian` and `host`
/// serve every stage, `lock` sits between the plan and the bases it pins,
/// `bundle` makes the packages a build may install, `pipeline` runs the
/// stages, `cli` is the front.
const LAYERS: &[&[&str]] = &[
    &["util"],
    &["debian"],
    &["host"],
    &["config"],
    &["plan"],
    // Unit tests' plans from the repository's manifests (cfg(test) only).
    &["test_support"],
    &["lock"],
    &["rootfs"],
    &["pki"],
    &["fs"],
    &["disk"],
    &["artifact"],
    &["bundle"],
    &["pipeline"],
    // Below the QEMU tiers: tier 3 judges the real cluster by what
    // `habuild status` observed.
    &["status"],
    &["flash", "qemu", "testdoubles"],
    &["cli"],
];

/// Modules that are not part of the layering (this test itself).
const EXEMPT: &[&str] = &["layering_tests"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    out.sort();
    out
}

/// The text without `//` comments (doc links name modules without
/// importing them). Good enough for this crate: no string holds `crate::`.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every path that starts with `prefix` (`crate::`,
/// `super::`), including each member of a `prefix{a::x, b::{y, z}}` group.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (1, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        out.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// The top-level module a file belongs to (None for lib.rs).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        // main.rs is the binary: it may only call the front.
        Some("main") => Some("cli".into()),
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

#[test]
fn every_module_has_a_layer() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    assert!(declared.len() > 10, "lib.rs declares {declared:?}");
    let unplaced: Vec<&&str> = declared
        .iter()
        .filter(|m| layer_of(m).is_none() && !EXEMPT.contains(m))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules {unplaced:?} have no place in LAYERS (builder/src/layering_tests.rs) \
         and in ARCHITECTURE.md: decide which layers they may use"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_or_beside_it() {
    let mut problems = Vec::new();
    for file in rust_files(&src()) {
        let Some(from) = top_module(&file) else {
            continue;
        };
        if EXEMPT.contains(&from.as_str()) {
            continue;
        }
        let own = layer_of(&from).unwrap_or_else(|| panic!("{from} has no layer"));
        let text = fs::read_to_string(&file).unwrap();
        for to in first_segments(&code(&text), "crate::") {
            if to == from {
                continue;
            }
            match layer_of(&to) {
                Some(l) if l < own => {}
                _ => problems.push(format!(
                    "{}: {from} imports crate::{to}",
                    file.strip_prefix(src()).unwrap().display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layering (a module may use only the layers below it; \
         see LAYERS in builder/src/layering_tests.rs and ARCHITECTURE.md):\n  {}",
        problems.join("\n  ")
    );
}

/// Within one folder, the files' imports of each other (`super::x`, or
/// `crate::<folder>::x`) form no circle; `mod.rs` (the folder's own
/// module) and test files do not count.
#[test]
fn no_circle_between_the_files_of_a_folder() {
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let name = file.file_stem().unwrap().to_str().unwrap();
        if name == "mod" || name == "lib" || name == "main" || name.ends_with("tests") {
            continue;
        }
        let dir = file.parent().unwrap();
        let text = fs::read_to_string(&file).unwrap();
        let text = code(text.split("#[cfg(test)]").next().unwrap());
        let sibling = |m: &String| {
            let f = dir.join(format!("{m}.rs"));
            let d = dir.join(m);
            (m != name && (f.is_file() || d.is_dir())).then(|| dir.join(m))
        };
        let mut deps: BTreeSet<PathBuf> = first_segments(&text, "super::")
            .iter()
            .filter_map(sibling)
            .collect();
        if let Some(top) = top_module(&file).filter(|t| dir == src().join(t)) {
            let prefix = format!("crate::{top}::");
            deps.extend(first_segments(&text, &prefix).iter().filter_map(sibling));
        }
        graph.insert(dir.join(name), deps);
    }
    let mut circles = Vec::new();
    for start in graph.keys() {
        // Depth-first from each file; a path back to it is a circle.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = path
                        .iter()
                        .chain([start])
                        .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
                        .collect();
                    circles.push(names.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files of one folder import each other in a circle (move what both need into one of them, or a third file):\n  {}",
        circles.join("\n  ")
    );
}

#[test]
fn the_reader_sees_grouped_and_nested_paths() {
    let found = first_segments(
        "use crate::{a::x, b::{y, z}, self};\nlet v = crate::c::f(); my_crate::d::g(); \
         use crate::e;",
        "crate::",
    );
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "b", "c", "e"]);
    assert_eq!(code("let a = 1; // crate::x\n"), "let a = 1; ");
}

/// lib.rs's module map lists the same layers in the same order.
#[test]
fn the_module_map_in_lib_rs_follows_the_layers() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let rows: Vec<Vec<String>> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|row| {
            let modules = row.split(" | ").nth(1).unwrap_or_default();
            modules
                .split(", ")
                .map(|m| m.trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let layers: Vec<Vec<String>> = LAYERS
        .iter()
        .map(|l| l.iter().map(|m| m.to_string()).collect())
        .collect();
    assert_eq!(rows, layers, "lib.rs's module map and LAYERS differ");
}
