//! The code's layout, checked: no module of the userspace or XDP crate imports one that
//! imports it back (directly or around a cycle), and each userspace layer uses only the
//! layers below it (see the README's "How the code is laid out").

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The userspace crate's layers, bottom first: a module may use its own layer and those
/// before it.
const LAYERS: [&[&str]; 9] = [
    &["mac"],
    &["config"],
    &["host"],
    &["control"],
    &["dataplane"],
    &["observe"],
    &["api"],
    &["daemon"],
    &["cli"],
];

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

/// Every `.rs` file under `dir`.
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

/// The module a file is: `control/router/mod.rs` is `control::router`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// The first `depth` segments of every `crate::` path in `text`, including each item of a
/// `use crate::{...}` group. Test modules (after `#[cfg(test)]`) are left out: they may
/// reach anywhere.
fn crate_paths(text: &str, depth: usize) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut paths = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if rest.starts_with('{') {
            let group = group_body(rest);
            for item in top_level_items(group) {
                paths.insert(first_segments(&item, depth));
            }
        } else {
            paths.insert(first_segments(rest, depth));
        }
    }
    paths.remove("");
    paths
}

/// The text inside the braces `text` starts with.
fn group_body(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[1..i];
                }
            }
            _ => {}
        }
    }
    &text[1..]
}

/// The comma-separated items of a use group, nested groups flattened one level (`a::{b, c}`
/// gives `a::b` and `a::c`).
fn top_level_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let bytes = group.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                items.push(group[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(group[start..].trim().to_owned());
    let mut flat = Vec::new();
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        match item.split_once("::{") {
            Some((prefix, inner)) => {
                for sub in top_level_items(inner.trim_end_matches('}')) {
                    flat.push(format!("{prefix}::{sub}"));
                }
            }
            None => flat.push(item),
        }
    }
    flat
}

/// Up to `depth` leading `::`-separated identifiers of `path`.
fn first_segments(path: &str, depth: usize) -> String {
    let ident: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    ident
        .split("::")
        .filter(|s| !s.is_empty() && *s != "self")
        .take(depth)
        .collect::<Vec<_>>()
        .join("::")
}

/// The module graph of a crate: each module and the modules it uses. A path names the
/// deepest module file that exists for it.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        let text = fs::read_to_string(file).unwrap();
        let uses: BTreeSet<String> = crate_paths(&text, 4)
            .into_iter()
            .filter_map(|path| {
                let parts: Vec<&str> = path.split("::").collect();
                (1..=parts.len())
                    .rev()
                    .map(|n| parts[..n].join("::"))
                    .find(|m| modules.contains(m))
            })
            .filter(|used| *used != module && !module.starts_with(&format!("{used}::")))
            .collect();
        graph.insert(module, uses);
    }
    graph
}

/// A cycle in `graph`, if there is one, as the modules around it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|layer| layer.contains(&top))
}

#[test]
fn no_module_cycles_in_either_crate() {
    for name in ["pop-dataplane", "pop-dataplane-ebpf"] {
        let graph = graph(&crate_src(name));
        assert!(graph.len() > 5, "{name}: found only {graph:?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{name}: import cycle {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn userspace_layers_only_look_down() {
    let graph = graph(&crate_src("pop-dataplane"));
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        let Some(layer) = layer_of(module) else {
            // The crate root and the binary: they may use every layer.
            assert!(
                module.is_empty(),
                "{module:?} is in no layer: add it to LAYERS"
            );
            continue;
        };
        for used in uses {
            let used_layer = layer_of(used).expect("every module has a layer");
            if used_layer > layer {
                wrong.push(format!("{module} uses {used}, a layer above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_group_imports() {
    let text = "use crate::{\n    a::{b::C, d},\n    e::F,\n};\nfn f() { crate::g::h(); }\n";
    let paths = crate_paths(text, 2);
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        ["a::b", "a::d", "e::F", "g::h"]
    );
    let mut graph = BTreeMap::new();
    graph.insert("x".to_owned(), BTreeSet::from(["y".to_owned()]));
    graph.insert("y".to_owned(), BTreeSet::from(["x".to_owned()]));
    assert_eq!(find_cycle(&graph).unwrap(), ["x", "y", "x"]);
}
