//! Imports run one way: no circle among the files of `src/`, nor among its parts (the
//! top-level modules: `capture`, `model`, `publish`, ...).
//!
//! The graph is read from the source text: every `use crate::…`, `use super::…` and
//! `use self::…` tree and every inline `crate::…`, `super::…` or `self::…` path, resolved to the
//! file that holds the module it names (the deepest `x.rs` or `x/mod.rs` on the path). A path
//! that starts with one of the file's own child modules (`use child::Item;`, `child::f()` in the
//! file that says `mod child;`) is an import of that child too, so a parent that uses its child
//! while the child uses `super::` items of the parent is a circle like any other; the `mod
//! child;` declaration itself is no import. `super` and `self` inside an inline module
//! (`mod avx2 { use super::…; }`) count from that module. Unit-test modules
//! (`#[cfg(test)] mod …`) are left out: they may reach anywhere. The library (`src/lib.rs`)
//! and the binary (`src/main.rs` with `src/cli/`) are two crates and two graphs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// A crate's files, relative to `src`, each with the files it imports.
fn import_graph(src: &Path, root_file: &str, files: &[String]) -> Graph {
    let mut graph = Graph::new();
    for file in files {
        let text = std::fs::read_to_string(src.join(file)).expect("read a source file");
        let module = module_of(file, root_file);
        let text = strip_tests(&strip_comments(&text));
        let children = child_modules(&text);
        let mut targets = BTreeSet::new();
        for (scope, path) in paths_in(&text, &children) {
            if let Some(absolute) = absolute(&module, &scope, &path, &children) {
                let target = file_of(src, root_file, &absolute);
                if &target != file {
                    targets.insert(target);
                }
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// The module path of a file: `capture/v4l2.rs` is `capture::v4l2`, `capture/mod.rs` is
/// `capture`, the crate root is the empty path.
fn module_of(file: &str, root_file: &str) -> Vec<String> {
    if file == root_file {
        return Vec::new();
    }
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts
}

/// A path as written (`crate::a::b`, `super::c`, `self::d`, `child::e`) made absolute from the
/// crate root. `scope` is the inline module the path is written in (empty at the file's top);
/// `children` are the modules the file declares with `mod child;`.
fn absolute(
    module: &[String],
    scope: &[String],
    path: &[String],
    children: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let here = || module.iter().chain(scope).cloned();
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(here().chain(rest.iter().cloned()).collect()),
        // A file's own child, named from the file's top (where `mod child;` puts it in scope).
        name if scope.is_empty() && children.contains(name) => {
            Some(here().chain(path.iter().cloned()).collect())
        }
        "super" => {
            // `super` in `a/b.rs` (module a::b) is `a`; so is `super` in `a/b/mod.rs`; inside
            // `mod m { … }` of `a/b.rs` it is `a::b`.
            let mut base: Vec<String> = here().collect();
            base.pop()?;
            let mut rest = rest;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
            Some(base.into_iter().chain(rest.iter().cloned()).collect())
        }
        _ => None,
    }
}

/// The file holding the deepest module on `path`.
fn file_of(src: &Path, root_file: &str, path: &[String]) -> String {
    let mut found = root_file.to_string();
    let mut dir = PathBuf::new();
    for segment in path {
        let as_file = dir.join(format!("{segment}.rs"));
        let as_dir = dir.join(segment).join("mod.rs");
        if src.join(&as_file).is_file() {
            found = as_file.to_string_lossy().into_owned();
        } else if src.join(&as_dir).is_file() {
            found = as_dir.to_string_lossy().into_owned();
        } else {
            break;
        }
        dir = dir.join(segment);
    }
    found
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else if rest.starts_with("'\"'") {
            // The character literal '"' opens no string.
            rest = &rest[3..];
        } else if let Some(len) = char_literal(rest) {
            // Nor does any other: '{' opens no block, '\u{7f}' no group.
            out.push(' ');
            rest = &rest[len..];
        } else if let Some(after) = rest.strip_prefix("r#\"") {
            rest = after.find("\"#").map_or("", |i| &after[i + 2..]);
            out.push_str("\"\"");
        } else if rest.starts_with('"') {
            // A string literal is copied as an empty one: its text names no module.
            let mut chars = rest.char_indices().skip(1);
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            out.push_str("\"\"");
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The length of the character literal `text` starts with (`'x'`, `'\n'`, `'\u{7f}'`), if it
/// starts with one rather than a lifetime (`'a`).
fn char_literal(text: &str) -> Option<usize> {
    let body = text.strip_prefix('\'')?;
    let mut chars = body.char_indices();
    let (_, first) = chars.next()?;
    if first == '\\' {
        // After the escaped character: '\'' ends at the second quote.
        let close = body.get(2..)?.find('\'')? + 2;
        (close <= 10).then_some(close + 2)
    } else {
        let (i, c) = chars.next()?;
        (c == '\'').then_some(i + 2)
    }
}

/// The text before the first unit-test module.
fn strip_tests(text: &str) -> String {
    let mut search = 0;
    while let Some(at) = text[search..].find("#[cfg(test)]") {
        let start = search + at;
        let after = text[start + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod ") || after.starts_with("pub mod ") {
            return text[..start].to_string();
        }
        search = start + 1;
    }
    text.to_string()
}

/// The modules a file declares as files of their own: `mod x;` (with any visibility), not
/// `mod x { … }`.
fn child_modules(text: &str) -> BTreeSet<String> {
    tokenize(text)
        .windows(3)
        .filter(|w| w[0] == "mod" && is_ident(&w[1]) && w[2] == ";")
        .map(|w| w[1].clone())
        .collect()
}

/// Every module path the text names: the leaves of its `use` trees and its inline paths, each
/// with the inline module (`mod m { … }`, nested: `[m, n]`) it is written in.
fn paths_in(text: &str, children: &BTreeSet<String>) -> Vec<(Vec<String>, Vec<String>)> {
    let tokens = tokenize(text);
    let mut paths = Vec::new();
    // The inline modules open at this point, each with the brace depth inside it.
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let names = |scope: &[(String, usize)]| scope.iter().map(|(n, _)| n.clone()).collect();
    let starts_path = |t: &str, scope: &[(String, usize)]| {
        t == "crate" || t == "super" || t == "self" || (scope.is_empty() && children.contains(t))
    };
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "{" {
            depth += 1;
            i += 1;
        } else if tokens[i] == "}" {
            if scope.last().is_some_and(|(_, d)| *d == depth) {
                scope.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
        } else if tokens[i] == "mod"
            && tokens.get(i + 1).is_some_and(|t| is_ident(t))
            && tokens.get(i + 2).map(String::as_str) == Some("{")
        {
            scope.push((tokens[i + 1].clone(), depth + 1));
            i += 2;
        } else if tokens[i] == "use" {
            let end = tokens[i..]
                .iter()
                .position(|t| t == ";")
                .map_or(tokens.len(), |p| i + p);
            let mut leaves = Vec::new();
            use_tree(&tokens[i + 1..end], &[], &mut leaves);
            paths.extend(leaves.into_iter().map(|p| (names(&scope), p)));
            i = end;
        } else if starts_path(&tokens[i], &scope)
            && tokens.get(i + 1).map(String::as_str) == Some("::")
            && (i == 0 || tokens[i - 1] != "::")
        {
            let mut path = vec![tokens[i].clone()];
            let mut j = i + 1;
            while tokens.get(j).map(String::as_str) == Some("::") {
                match tokens.get(j + 1) {
                    Some(t) if is_ident(t) => path.push(t.clone()),
                    _ => break,
                }
                j += 2;
            }
            paths.push((names(&scope), path));
            i = j;
        } else {
            i += 1;
        }
    }
    paths
}

/// The leaves of one `use` tree (`a::{b, c::{d, e as f}}`), each prefixed by `prefix`.
fn use_tree(tokens: &[String], prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        match t {
            "{" => {
                // Split the group at its top-level commas.
                let mut depth = 0;
                let mut start = i + 1;
                let mut j = i + 1;
                while j < tokens.len() {
                    match tokens[j].as_str() {
                        "{" => depth += 1,
                        "}" if depth == 0 => break,
                        "}" => depth -= 1,
                        "," if depth == 0 => {
                            use_tree(&tokens[start..j], &path, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                use_tree(&tokens[start..j], &path, out);
                return;
            }
            "as" => break,
            "::" | "pub" => {}
            _ if is_ident(t) => path.push(t.to_string()),
            _ => {}
        }
        i += 1;
    }
    if path.len() > prefix.len() || !prefix.is_empty() {
        out.push(path);
    }
}

fn is_ident(t: &str) -> bool {
    t.chars().all(|c| c.is_alphanumeric() || c == '_') && !t.is_empty()
}

fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            tokens.push("::".into());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// The strongly connected parts with more than one member: the import circles.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut part = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    part.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if part.len() > 1 {
                    part.sort();
                    self.found.push(part);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

/// The same graph with each file replaced by its part (`capture/v4l2.rs` → `capture`).
fn parts_graph(graph: &Graph) -> Graph {
    let part = |f: &str| {
        f.split('/')
            .next()
            .unwrap_or(f)
            .trim_end_matches(".rs")
            .to_string()
    };
    let mut parts = Graph::new();
    for (from, tos) in graph {
        let entry = parts.entry(part(from)).or_default();
        for to in tos {
            if part(to) != part(from) {
                entry.insert(part(to));
            }
        }
    }
    parts
}

fn rust_files(src: &Path) -> Vec<String> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).expect("under src");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out.sort();
    out
}

fn describe(circles: &[Vec<String>], graph: &Graph) -> String {
    let mut s = String::new();
    for part in circles {
        s.push_str(&format!("circle of {}:\n", part.len()));
        for member in part {
            let inside: Vec<&str> = graph[member]
                .iter()
                .filter(|t| part.contains(t))
                .map(String::as_str)
                .collect();
            s.push_str(&format!("  {member} imports {}\n", inside.join(", ")));
        }
    }
    s
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all = rust_files(&src);
    let is_binary = |f: &String| f == "main.rs" || f.starts_with("cli/");
    let library: Vec<String> = all.iter().filter(|f| !is_binary(f)).cloned().collect();
    let binary: Vec<String> = all.iter().filter(|f| is_binary(f)).cloned().collect();
    let mut report = String::new();
    for (name, root, files) in [
        ("library", "lib.rs", &library),
        ("binary", "main.rs", &binary),
    ] {
        let files_graph = import_graph(&src, root, files);
        let parts = parts_graph(&files_graph);
        let edges: usize = files_graph.values().map(BTreeSet::len).sum();
        eprintln!(
            "{name}: {} files, {edges} imports between them, {} parts",
            files_graph.len(),
            parts.len()
        );
        for (from, tos) in &parts {
            if !tos.is_empty() {
                let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
                eprintln!("  {from} -> {}", tos.join(", "));
            }
        }
        report.push_str(&describe(&circles(&files_graph), &files_graph));
        report.push_str(&describe(&circles(&parts), &parts));
    }
    assert!(report.is_empty(), "imports run both ways:\n{report}");

    // The service (the daemon and all it reaches) does not link the training code.
    let parts = parts_graph(&import_graph(&src, "lib.rs", &library));
    let reached = reachable(&parts, "daemon");
    for training in ["train", "eval"] {
        assert!(
            !reached.contains(training),
            "the daemon reaches {training}: {reached:?}"
        );
    }
}

/// Every node `from` leads to.
fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(node) = todo.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

/// The check finds a circle when there is one, through `super`, groups and inline paths.
#[test]
fn a_circle_is_found() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::fs::create_dir_all(src.join("b")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").expect("write");
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod x;\npub mod y;\n// use crate::b::z; in a comment is no import\n",
    )
    .expect("write");
    std::fs::write(src.join("a/x.rs"), "use super::{y::Y, *};\npub struct X;\n").expect("write");
    std::fs::write(
        src.join("a/y.rs"),
        "pub fn f() { crate::b::z::g(); }\npub struct Y;\n",
    )
    .expect("write");
    std::fs::write(src.join("b/mod.rs"), "pub mod z;\n").expect("write");
    std::fs::write(
        src.join("b/z.rs"),
        "use crate::{a::x::X as Renamed, b};\npub fn g() {}\n#[cfg(test)]\nmod tests { use crate::a::y; }\n",
    )
    .expect("write");
    let files = rust_files(src);
    let graph = import_graph(src, "lib.rs", &files);
    assert_eq!(
        graph["a/x.rs"],
        BTreeSet::from(["a/mod.rs".to_string(), "a/y.rs".to_string()])
    );
    assert_eq!(
        graph["b/z.rs"],
        BTreeSet::from(["a/x.rs".to_string(), "b/mod.rs".to_string()])
    );
    assert!(graph["a/mod.rs"].is_empty(), "{:?}", graph["a/mod.rs"]);
    let found = circles(&graph);
    assert_eq!(found, vec![vec!["a/x.rs", "a/y.rs", "b/z.rs"]]);
    assert_eq!(circles(&parts_graph(&graph)), vec![vec!["a", "b"]]);

    // Break it: the circle is gone.
    std::fs::write(src.join("a/y.rs"), "pub struct Y;\n").expect("write");
    let graph = import_graph(src, "lib.rs", &files);
    assert!(circles(&graph).is_empty());
    assert!(circles(&parts_graph(&graph)).is_empty());
}

/// A parent that uses its child while the child uses the parent's items is a circle; the
/// `mod` declaration alone is not, nor is `super` inside the child's own inline module.
#[test]
fn a_parent_child_circle_is_found() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let src = dir.path();
    std::fs::create_dir_all(src.join("m")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod m;\n").expect("write");
    std::fs::write(
        src.join("m/mod.rs"),
        "pub mod error;\nmod kernel;\npub mod plain;\npub use error::Error;\n\
         pub fn run() { kernel::go(); }\npub struct Shared;\n",
    )
    .expect("write");
    std::fs::write(src.join("m/error.rs"), "pub struct Error;\n").expect("write");
    std::fs::write(
        src.join("m/kernel.rs"),
        "use super::Shared;\npub fn go() { let c = '{'; }\n\
         mod simd { use super::go; pub fn f() { self::g(); } fn g() {} }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("m/plain.rs"),
        "use super::error::Error;\n#[cfg(target_arch = \"x86_64\")]\nmod avx2 {\n    use super::*;\n}\n",
    )
    .expect("write");
    let files = rust_files(src);
    let graph = import_graph(src, "lib.rs", &files);
    assert_eq!(
        graph["m/mod.rs"],
        BTreeSet::from(["m/error.rs".to_string(), "m/kernel.rs".to_string()])
    );
    assert_eq!(
        graph["m/kernel.rs"],
        BTreeSet::from(["m/mod.rs".to_string()])
    );
    assert_eq!(
        graph["m/plain.rs"],
        BTreeSet::from(["m/error.rs".to_string()])
    );
    assert_eq!(circles(&graph), vec![vec!["m/kernel.rs", "m/mod.rs"]]);

    // The shared item moves to a file of its own: the circle is gone.
    std::fs::write(
        src.join("m/mod.rs"),
        "pub mod error;\nmod kernel;\npub mod plain;\npub mod shared;\npub use error::Error;\n\
         pub use shared::Shared;\npub fn run() { kernel::go(); }\n",
    )
    .expect("write");
    std::fs::write(src.join("m/shared.rs"), "pub struct Shared;\n").expect("write");
    std::fs::write(
        src.join("m/kernel.rs"),
        "use super::shared::Shared;\npub fn go() {}\n",
    )
    .expect("write");
    let files = rust_files(src);
    let graph = import_graph(src, "lib.rs", &files);
    assert!(circles(&graph).is_empty(), "{graph:?}");
}
