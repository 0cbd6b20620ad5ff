//! Imports go one way: no crate of the workspace has a cycle among its modules.
//!
//! A cycle (`a` uses `b`, `b` uses `a`, directly or through others) is the knot that makes a
//! module impossible to read, test or change on its own. This check reads the `crate::`,
//! `super::` and `self::` paths of every module file (outside `#[cfg(test)]` code), resolves
//! each to the module file that defines it, and fails naming every cycle it finds. It needs no
//! tool beyond the test itself, so CI pays nothing for it.
//!
//! A module file is a node: `lib.rs`/`main.rs` is the crate root, `a.rs` and `a/mod.rs` are `a`,
//! `a/b.rs` is `a::b`. Declaring a child (`mod b;`) is not an import; using an item of the parent
//! from a child is, and so is re-exporting a child's item from the parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must form no cycle: name and source folder (the one holding its
/// `lib.rs` or `main.rs`).
const CRATES: &[(&str, &str)] = &[
    ("shared", "shared/src"),
    ("local_postgres", "local_postgres/src"),
    ("cdc", "cdc/src"),
    ("gateway", "gateway/src"),
    ("cli", "cli/src"),
    ("bench", "bench/src"),
    ("tests", "tests/harness"),
];

#[test]
fn no_crate_has_a_module_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for (name, src) in CRATES {
        let graph = ModuleGraph::read(&root.join(src));
        for (cycle, imports) in graph.cycles().into_iter().zip(graph.knotted_imports()) {
            report.push(format!(
                "{name}: {}\n    its imports: {}",
                cycle.join(" → "),
                imports.join(", ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "module cycles (each line: modules that import one another; break the cycle by moving \
         the shared item down or passing it in):\n  {}",
        report.join("\n  ")
    );
}

/// The gateway's layers, top to bottom (ARCHITECTURE.md): a module may import its own layer or
/// any below it, never one above. Modules of a folder not listed by name take the folder's
/// layer (`auth` covers `auth::session`).
const GATEWAY_LAYERS: &[&[&str]] = &[
    &["crate", "server"],
    &[
        "rest",
        "history",
        "control",
        "starting",
        "health",
        "inspector",
    ],
    &["http_auth"],
    &[
        "phoenix",
        "phoenix::connection",
        "phoenix::channel",
        "socketio",
        "socketio::connection",
        "native",
        "native::connection",
        "rooms",
        "rooms::session",
    ],
    &["socket", "rooms::request"],
    &["state"],
    &["channels"],
    &[
        "broadcast",
        "typing",
        "presence",
        "messages",
        "database_broadcasts",
        "changes::feed",
        "event_log",
        "registry",
    ],
    &["changes", "subscriber", "wire"],
    &[
        "envelope",
        "outbox",
        "phoenix::frame",
        "socketio::packet",
        "json_write",
        "json_input",
        "rate_limit",
        "metrics",
        "decision_log",
    ],
    &["auth", "db", "config"],
];

#[test]
fn gateway_modules_import_only_their_layer_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let graph = ModuleGraph::read(&root.join("gateway/src"));
    let layer_of = |module: &[String]| -> Option<usize> {
        (0..=module.len()).rev().find_map(|n| {
            let name = display(&module[..n]);
            GATEWAY_LAYERS
                .iter()
                .position(|layer| layer.contains(&name.as_str()))
        })
    };
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for module in &graph.modules {
        let Some(from) = layer_of(module) else {
            unplaced.push(display(module));
            continue;
        };
        for target in graph.edges.get(module).into_iter().flatten() {
            if let Some(to) = layer_of(target) {
                if to < from {
                    upward.push(format!("{} → {}", display(module), display(target)));
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "gateway modules with no layer: {unplaced:?}; add each to GATEWAY_LAYERS (and to the map in ARCHITECTURE.md)"
    );
    assert!(
        upward.is_empty(),
        "gateway modules importing a layer above their own (move the item down, or pass it in): {upward:?}"
    );
}

#[test]
fn the_check_finds_a_cycle() {
    // The check itself must be able to fail: a two-module cycle and a longer one.
    let mut graph = ModuleGraph::default();
    for module in [&["a"][..], &["b"], &["c"], &["d"], &["d", "e"]] {
        graph.add_module(module.iter().map(|s| s.to_string()).collect());
    }
    graph.add_source(&["a".into()], "use crate::b::Thing;");
    graph.add_source(
        &["b".into()],
        "fn f() { let _ = ('\\'', '\\n'); crate::a::go() }",
    );
    // `e` is imported by name and used through it; `a` is imported but nothing imports `c`
    // back from there.
    graph.add_source(&["c".into()], "use crate::{d::{e}, a};\nfn f() { e::g() }");
    graph.add_source(&["d".into(), "e".into()], "use super::super::c::Z;");
    // Test code does not count: `d` imports `c` only there.
    graph.add_source(
        &["d".into()],
        "pub use self::e::X; // crate::c\n#[cfg(test)]\nmod tests { use crate::c; }",
    );
    let cycles = graph.cycles();
    assert_eq!(
        cycles,
        vec![vec!["a", "b", "a"], vec!["c", "d::e", "c"]]
            .into_iter()
            .map(|c| c.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}

/// Module paths (`["changes", "feed"]`; the root is `[]`) and the modules each one uses.
#[derive(Default)]
struct ModuleGraph {
    modules: BTreeSet<Vec<String>>,
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

impl ModuleGraph {
    /// Reads every module file under a crate's source folder.
    fn read(src: &Path) -> ModuleGraph {
        let files: Vec<(Vec<String>, PathBuf)> = rust_files(src)
            .into_iter()
            .filter_map(|file| Some((module_path(src, &file)?, file)))
            .collect();
        let mut graph = ModuleGraph::default();
        for (module, _) in &files {
            graph.add_module(module.clone());
        }
        for (module, file) in &files {
            let text = std::fs::read_to_string(file).expect("read a module file");
            graph.add_source(module, &text);
        }
        graph
    }

    fn add_module(&mut self, module: Vec<String>) {
        self.modules.insert(module);
    }

    /// Records the modules that `source` (the text of `module`'s file) uses.
    /// A module imported by name (`use crate::phoenix;`) is followed through its alias too:
    /// `phoenix::connection::serve` uses `phoenix::connection`.
    fn add_source(&mut self, module: &[String], source: &str) {
        let code = production_code(source);
        let mut paths = used_paths(&code, &["crate", "super", "self"]);
        let mut aliases = BTreeMap::new();
        for path in &paths {
            if let Some(target) = self.resolve(module, path) {
                let named = path.iter().rev().find(|s| *s != "self");
                if target.last() == named && !target.is_empty() {
                    aliases.insert(target.last().cloned().expect("not the root"), target);
                }
            }
        }
        for (alias, target) in &aliases {
            for mut path in used_paths(&code, &[alias.as_str()]) {
                path.splice(
                    0..1,
                    std::iter::once("crate".to_string()).chain(target.iter().cloned()),
                );
                paths.push(path);
            }
        }
        for path in paths {
            if let Some(target) = self.resolve(module, &path) {
                if target != module {
                    self.edges
                        .entry(module.to_vec())
                        .or_default()
                        .insert(target);
                }
            }
        }
    }

    /// The module a path used from `from` lands in: the longest prefix of its absolute form
    /// that names a module file (the rest is an item, or a module declared inline).
    fn resolve(&self, from: &[String], path: &[String]) -> Option<Vec<String>> {
        let mut absolute: Vec<String> = Vec::new();
        let mut segments = path.iter().peekable();
        match segments.next()?.as_str() {
            "crate" => {}
            "self" => absolute.extend_from_slice(from),
            "super" => {
                absolute.extend_from_slice(from);
                absolute.pop()?;
                while segments.peek().is_some_and(|s| *s == "super") {
                    segments.next();
                    absolute.pop()?;
                }
            }
            _ => return None,
        }
        absolute.extend(segments.cloned());
        (0..=absolute.len())
            .rev()
            .map(|n| absolute[..n].to_vec())
            .find(|prefix| self.modules.contains(prefix))
    }

    /// Every cycle, one per strongly connected component of two or more modules, written as a
    /// closed walk through the component's modules.
    fn cycles(&self) -> Vec<Vec<String>> {
        strongly_connected(&self.modules, &self.edges)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| self.walk(&component))
            .collect()
    }

    /// For each cycle of [`ModuleGraph::cycles`], every import between its modules
    /// (`a → b`), so the reader sees which ones to cut.
    fn knotted_imports(&self) -> Vec<Vec<String>> {
        strongly_connected(&self.modules, &self.edges)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let mut imports = Vec::new();
                for from in &component {
                    for to in self.edges.get(from).into_iter().flatten() {
                        if component.contains(to) {
                            imports.push(format!("{} → {}", display(from), display(to)));
                        }
                    }
                }
                imports
            })
            .collect()
    }

    /// A closed walk from the component's first module that names a cycle within it: the
    /// shortest way back to the start from each successive neighbour, so the reader sees the
    /// actual imports.
    fn walk(&self, component: &BTreeSet<Vec<String>>) -> Vec<String> {
        let start = component
            .iter()
            .next()
            .expect("a component has a module")
            .clone();
        // Breadth-first from start's neighbours back to start, inside the component.
        let mut previous: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        let mut frontier = vec![start.clone()];
        'search: while !frontier.is_empty() {
            let mut next = Vec::new();
            for node in frontier {
                for target in self.edges.get(&node).into_iter().flatten() {
                    if !component.contains(target) || previous.contains_key(target) {
                        continue;
                    }
                    previous.insert(target.clone(), node.clone());
                    if *target == start {
                        break 'search;
                    }
                    next.push(target.clone());
                }
            }
            frontier = next;
        }
        let mut walk = vec![start.clone()];
        let mut node = previous[&start].clone();
        while node != start {
            walk.push(node.clone());
            node = previous[&node].clone();
        }
        walk.push(start);
        walk.reverse();
        let mut names: Vec<String> = walk.iter().map(|m| display(m)).collect();
        // Also name the component's other members, so one line says all that is knotted.
        let named: BTreeSet<&Vec<String>> = walk.iter().collect();
        let others: Vec<String> = component
            .iter()
            .filter(|m| !named.contains(m))
            .map(|m| display(m))
            .collect();
        if !others.is_empty() {
            let last = names.pop().expect("a walk has an end");
            names.push(format!("{last} (with {})", others.join(", ")));
        }
        names
    }
}

fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// Tarjan's algorithm: the strongly connected components of the graph.
fn strongly_connected(
    nodes: &BTreeSet<Vec<String>>,
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<BTreeSet<Vec<String>>> {
    struct State<'g> {
        edges: &'g BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'g Vec<String>, usize>,
        low: BTreeMap<&'g Vec<String>, usize>,
        stack: Vec<&'g Vec<String>>,
        on_stack: BTreeSet<&'g Vec<String>>,
        components: Vec<BTreeSet<Vec<String>>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g Vec<String>) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for target in state.edges.get(node).into_iter().flatten() {
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[target].min(state.low[node]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.index[target].min(state.low[node]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = BTreeSet::new();
            loop {
                let member = state.stack.pop().expect("the node is on the stack");
                state.on_stack.remove(member);
                component.insert(member.clone());
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in nodes {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.components.sort();
    state.components
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `src/a/b.rs` → `["a", "b"]`; `lib.rs`, `main.rs` → `[]`; `a/mod.rs` → `["a"]`. Files under
/// `bin/` are crate roots of their own and are left out.
fn module_path(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let file_name = parts.pop()?;
    let stem = file_name.strip_suffix(".rs")?;
    match stem {
        "lib" | "main" if parts.is_empty() => {}
        "mod" => {}
        _ => parts.push(stem.to_string()),
    }
    Some(parts)
}

/// The source without comments, string literals and `#[cfg(test)]` items, so that only code
/// that ships is read.
fn production_code(source: &str) -> String {
    let without_comments = strip_comments_and_strings(source);
    let mut out = String::with_capacity(without_comments.len());
    let mut rest = without_comments.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = skip_item(&rest[at + "#[cfg(test)]".len()..]);
    }
    out.push_str(rest);
    out
}

/// Skips one item: up to the `;` that ends it or the `}` that closes its first block.
fn skip_item(text: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            ';' if depth == 0 => return &text[i + 1..],
            _ => {}
        }
    }
    ""
}

fn strip_comments_and_strings(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |end| end + 2);
        } else if let Some(hashes) = raw_string_start(rest) {
            let closing = format!("\"{}", "#".repeat(hashes));
            let body = &rest[hashes + 2..];
            i += hashes
                + 2
                + body
                    .find(&closing)
                    .map_or(body.len(), |end| end + closing.len());
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            i += (j + 1).min(rest.len());
        } else if rest.starts_with('\'') && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap();
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br##"` … : the number of hashes, where `text` opens a raw string.
fn raw_string_start(text: &str) -> Option<usize> {
    let text = text.strip_prefix('b').unwrap_or(text);
    let after_r = text.strip_prefix('r')?;
    let hashes = after_r.bytes().take_while(|b| *b == b'#').count();
    (after_r.as_bytes().get(hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of a char literal (`'a'`, `'\n'`, `'\u{1F600}'`) at the start of `text`, or None
/// where the quote starts a lifetime.
fn char_literal_len(text: &str) -> Option<usize> {
    let body = &text[1..];
    let len = if body.starts_with('\\') {
        // The escaped character may itself be a quote: `'\''`.
        body.get(2..)?.find('\'')? + 2
    } else {
        body.chars().next()?.len_utf8()
    };
    (body.as_bytes().get(len) == Some(&b'\'')).then_some(len + 2)
}

/// Every path starting with one of `heads` (`crate`, `super`, `self`, or a module's alias) in
/// `code`, `use` groups expanded (`crate::{a::X, b}` gives `crate::a::X` and `crate::b`).
fn used_paths(code: &str, heads: &[&str]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    for head in heads {
        let start = format!("{head}::");
        let start = start.as_str();
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            let preceded_by_ident = at > 0 && {
                let b = bytes[at - 1];
                b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'$'
            };
            if preceded_by_ident {
                continue;
            }
            let head = start.trim_end_matches(':').to_string();
            expand(&code[at + start.len()..], vec![head], &mut paths);
        }
    }
    paths
}

/// Reads the rest of a path after `prefix::` from `text`, pushing every full path it spells.
fn expand(text: &str, prefix: Vec<String>, paths: &mut Vec<Vec<String>>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        for member in split_group(group) {
            expand(member, prefix.clone(), paths);
        }
        return;
    }
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        paths.push(prefix);
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    match text[ident.len()..].trim_start().strip_prefix("::") {
        Some(rest) => expand(rest, path, paths),
        None => paths.push(path),
    }
}

/// The comma-separated members of a `{ ... }` group whose opening brace is already consumed.
fn split_group(group: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                members.push(&group[start..i]);
                return members;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members
}
