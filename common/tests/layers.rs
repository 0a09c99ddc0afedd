//! The house rule of `common/`, checked on the source: every top-level module belongs to
//! a layer, and a module may only name (`crate::x`) modules of its own layer or below.
//! Within a layer, the graph of top-level modules has no circle.
//!
//! Foundations < model < edges (storage, sources, queue, sinks, secrets, web) < domain <
//! orchestration. Adding a top-level module means placing it here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (module, layer): lower numbers are lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("config", 0),
    ("resource_type", 0),
    ("telemetry", 0),
    ("memory", 0),
    ("lease", 0),
    ("model", 1),
    ("fhir", 1),
    ("metrics", 1),
    ("secrets", 2),
    ("storage", 2),
    ("sources", 2),
    ("sinks", 2),
    ("formats", 2),
    ("queue", 2),
    ("web", 2),
    ("auth", 3),
    ("loading", 3),
    ("dumping", 3),
    ("resources", 3),
    ("ingestion", 3),
    ("validation", 3),
    ("inventory", 4),
    ("sessions", 4),
    ("pulling", 4),
    ("exporting", 4),
    ("dead_letters", 5),
    ("workers", 5),
    ("sweep", 5),
    ("boot", 5),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| {
            panic!("module {module} has no layer: add it to LAYERS in tests/layers.rs")
        })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One file of `src/`: its path from `src/` and its text.
struct Source {
    rel: String,
    text: String,
}

impl Source {
    /// The text before the unit tests (which may hold SQL or calls as data).
    fn code(&self) -> &str {
        self.text.split("#[cfg(test)]").next().unwrap_or("")
    }
}

/// Every `.rs` file under `src/`.
fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|file| Source {
            rel: file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string(),
            text: std::fs::read_to_string(&file).unwrap(),
        })
        .collect()
}

/// Top-level module -> the top-level modules its files name through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups are not used in this code base; a bare name is a module.
            if !name.is_empty() && name != module && name.chars().next().unwrap().is_lowercase() {
                uses.insert(name);
            }
        }
    }
    graph
}

#[test]
fn no_module_names_a_higher_layer() {
    let mut wrong = Vec::new();
    for (module, uses) in graph() {
        for used in uses {
            if layer(&used) > layer(&module) {
                wrong.push(format!(
                    "{module} (layer {}) uses {used} (layer {})",
                    layer(&module),
                    layer(&used)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "lower modules import higher ones:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_circle() {
    let graph = graph();
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn only_storage_holds_sql() {
    // Statements are written as string literals starting with the verb; only storage/ may.
    let verbs = [
        "\"SELECT ",
        "\"INSERT ",
        "\"UPDATE ",
        "\"DELETE ",
        "\"COPY ",
        "\"CREATE ",
        "\"BEGIN",
    ];
    let mut outside = Vec::new();
    for file in sources() {
        if file.rel.starts_with("storage/") {
            continue;
        }
        // Unit tests may hold SQL as data (the `$dump-sql` gate's test cases).
        let text = file.code();
        for verb in verbs {
            if text.contains(verb) || text.contains(&verb.to_lowercase()) {
                outside.push(format!("{}: {verb}", file.rel));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "SQL outside storage/:\n{}",
        outside.join("\n")
    );
}

/// A depth-first search for a circle in `graph`.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Words that follow `prefix` in `text` (`super::refs::forget` -> `refs`).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn no_room_has_a_circle_between_its_files() {
    // The files (or sub-folders) of one room name each other as `super::x` (or
    // `crate::room::x`); `mod.rs` is the room itself, not one of its files.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for room in std::fs::read_dir(&src).unwrap() {
        let room = room.unwrap().path();
        if !room.is_dir() {
            continue;
        }
        let name = room.file_name().unwrap().to_string_lossy().to_string();
        let mut files = Vec::new();
        rust_files(&room, &mut files);
        let child = |file: &Path| {
            let rel = file.strip_prefix(&room).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            first.trim_end_matches(".rs").to_string()
        };
        let children: BTreeSet<String> = files.iter().map(|f| child(f)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let me = child(file);
            if me == "mod" {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            let depth = file.strip_prefix(&room).unwrap().components().count();
            // From room/x.rs, `super::` is the room; from room/x/y.rs, `super::super::`.
            let up = "super::".repeat(depth);
            let mut named = names_after(text, &up);
            named.extend(names_after(text, &format!("crate::{name}::")));
            let edges = graph.entry(me.clone()).or_default();
            for n in named {
                if n != me && children.contains(&n) && n != "mod" {
                    edges.insert(n);
                }
            }
        }
        if let Some(circle) = find_circle(&graph) {
            panic!("import circle inside {name}/: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn aws_sdk_crates_are_named_only_at_the_edges() {
    // The edges that talk to AWS: sources (S3 reads, the SDK's HTTP client), sinks (S3
    // writes), queue (SQS), secrets (Secrets Manager). The domain sees their types only.
    let edges = ["sources/", "sinks/", "queue.rs", "secrets.rs"];
    let crates = [
        "aws_sdk_",
        "aws_config",
        "aws_smithy",
        "aws_credential_types",
    ];
    let mut outside = Vec::new();
    for file in sources() {
        if edges.iter().any(|e| file.rel.starts_with(e)) {
            continue;
        }
        for c in crates {
            if file.text.contains(c) {
                outside.push(format!("{}: {c}", file.rel));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "AWS SDK crates named outside the edges:\n{}",
        outside.join("\n")
    );
}

#[test]
fn statements_are_unnamed_so_a_transaction_pooler_can_share_connections() {
    // tokio-postgres' `query`, `query_one`, `query_opt` and `execute` prepare a named
    // statement in a round trip of its own; behind PgBouncer (transaction pooling) the
    // run may reach another server connection, and RDS Proxy pins the session. storage/
    // uses `Statements` (unnamed, one round trip). A named statement is allowed only
    // where it is prepared and closed inside one transaction (COPY, describing a query):
    // `copy_in`, `copy_out` and `prepare`, listed here with the files that use them.
    let named = [
        ".query(",
        ".query_one(",
        ".query_opt(",
        ".execute(",
        ".query_raw(",
        ".prepare_cached(",
        ".prepare_typed(",
    ];
    let in_transaction = [".prepare(", ".copy_in(", ".copy_out("];
    let allowed = [
        "storage/read.rs",
        "storage/dumps.rs",
        "storage/plans.rs",
        "storage/copy_in.rs",
    ];
    let mut found = Vec::new();
    for file in sources() {
        let (rel, text) = (&file.rel, file.code());
        for n in named {
            // `uri.query()` and the like take no arguments; a statement always has one.
            if text.contains(n) && !rel.starts_with("web") {
                found.push(format!("{rel}: {n}"));
            }
        }
        if !allowed.contains(&rel.as_str()) {
            for n in in_transaction {
                if text.contains(n) {
                    found.push(format!("{rel}: {n} (only where a transaction holds it)"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "named prepared statements:\n{}",
        found.join("\n")
    );
}
