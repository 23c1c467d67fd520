//! The module graph has no cycle: each top-level module of `src/` only uses modules below
//! it (see the module map in `lib.rs`). Read from the sources, so a new `use` that closes a
//! loop fails `make test` with the loop named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a file under `src/` belongs to (`avro/envelope.rs` → `avro`).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let m = first.strip_suffix(".rs").unwrap_or(first);
    (m != "lib" && m != "main").then(|| m.to_owned())
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::<name>` paths and the first segments of `use crate::{a::…, b, …};` groups, in
/// code (comments skipped).
fn uses(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| modules.contains(m));
    out
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Every top-level module and the modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<String> = all
        .iter()
        .filter_map(|p| module_of(p.strip_prefix(&src).unwrap()))
        .collect();
    assert!(
        modules.contains("pipeline") && modules.contains("avro"),
        "{modules:?}"
    );
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &all {
        let Some(m) = module_of(p.strip_prefix(&src).unwrap()) else {
            continue;
        };
        let text = std::fs::read_to_string(p).unwrap();
        let mut used = uses(&text, &modules);
        used.remove(&m);
        graph.entry(m).or_default().extend(used);
    }
    // The reader sees real edges (a test that finds none would pass on anything).
    assert!(graph["pipeline"].contains("kafka"), "{graph:?}");
    assert!(graph["kafka"].contains("checkpoint"), "{graph:?}");
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    if let Some(c) = cycle(&graph) {
        panic!(
            "module import cycle: {} (move the shared item below both; lib.rs has the order)",
            c.join(" → ")
        );
    }
}

/// The modules `lib.rs`'s map lists "from the bottom", in its order.
fn documented_order() -> Vec<String> {
    let lib = include_str!("lib.rs");
    let start = lib
        .find("from the bottom")
        .expect("lib.rs: the module order");
    let text = &lib[start..];
    let end = text
        .find(".\n")
        .expect("lib.rs: the order ends with a full stop");
    text[..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn lib_rs_lists_every_module_in_an_order_it_keeps() {
    let mut graph = graph();
    graph.remove("layering"); // this test
    let order = documented_order();
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    assert_eq!(
        listed, modules,
        "lib.rs's module order must name every top-level module once: {order:?}"
    );
    let at = |m: &str| order.iter().position(|o| o == m).unwrap();
    for (m, used) in &graph {
        for u in used {
            assert!(
                at(u) < at(m),
                "{m} uses {u}, which lib.rs's order (from the bottom up) puts above it: move one of them"
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert(
        "a".into(),
        uses("use crate::{b::X, c};\n// crate::a", &modules),
    );
    g.insert("b".into(), uses("fn f() { crate::c::g() }", &modules));
    g.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
    g.insert("c".into(), uses("use crate::a::Y;", &modules));
    assert_eq!(cycle(&g).map(|c| c.join(" ")), Some("a b c a".to_owned()));
}
