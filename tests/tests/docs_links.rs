//! Every link in README.md and docs/**/*.md points at a file, and a heading, that exists.
//!
//! A small Markdown link scanner, no service and no network: inline links and images
//! `[text](target)`, reference definitions `[x]: target`, and `href`/`src` of HTML tags.
//! Nothing inside fenced code blocks or inline code spans is a link, and headings inside
//! fenced code blocks make no anchor. `http(s)://` and `mailto:` targets are not
//! followed; relative paths resolve against the linking file's directory (a leading `/`
//! against the repository root); `#anchor`s of Markdown files are checked against the
//! target file's ATX headings, slugged as GitHub does. A link that leaves the repository
//! cannot be checked from a clone: it is listed, not failed.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// One link: the line it is on (1-based) and its target as written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    line: usize,
    target: String,
}

/// What one Markdown file offers (heading anchors) and asks for (links).
#[derive(Debug, Default)]
struct Scan {
    anchors: Vec<String>,
    links: Vec<Link>,
}

/// A link that points nowhere.
#[derive(Debug)]
struct Broken {
    file: String,
    line: usize,
    target: String,
    why: String,
}

#[derive(Debug, Default)]
struct Report {
    /// How many links were looked at (external ones included).
    checked: usize,
    broken: Vec<Broken>,
    /// Links that leave the repository: `file:line: target`.
    outside: Vec<String>,
}

/// GitHub's anchor for a heading's text: lower case; letters, digits, `-` and `_` kept,
/// each space a `-`, everything else (punctuation, backticks, `$`) dropped. Inline
/// links count by their text.
fn slug(heading: &str) -> String {
    link_text_only(heading.trim())
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// `[text](target)` -> `text` (images: their alt text), the way a heading renders.
fn link_text_only(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(close) = rest.find("](") {
        let end = rest[close + 2..].find(')').map(|e| close + 2 + e);
        match (rest[..close].rfind('['), end) {
            (Some(open), Some(end)) => {
                let before = rest[..open].strip_suffix('!').unwrap_or(&rest[..open]);
                out.push_str(before);
                out.push_str(&rest[open + 1..close]);
                rest = &rest[end + 1..];
            }
            _ => {
                out.push_str(&rest[..close + 2]);
                rest = &rest[close + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Anchors of headings in order, repeated ones numbered as github-slugger numbers them:
/// `a`, `a-1`, `a-2`, skipping a number another heading already took.
fn anchors<'a>(headings: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for heading in headings {
        let base = slug(heading);
        let mut anchor = base.clone();
        while occurrences.contains_key(&anchor) {
            let n = occurrences.get_mut(&base).expect("the base was seen first");
            *n += 1;
            anchor = format!("{base}-{n}");
        }
        occurrences.insert(anchor.clone(), 0);
        out.push(anchor);
    }
    out
}

/// The fence a line opens or closes: its character and length, if it is one.
fn fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start();
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = trimmed.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

/// The text of an ATX heading (`# Title`, closing `#`s dropped), if the line is one.
fn atx_heading(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let text = &rest[level..];
    if !(text.is_empty() || text.starts_with(' ') || text.starts_with('\t')) {
        return None;
    }
    let text = text.trim();
    let closed = text.trim_end_matches('#');
    Some(if closed.is_empty() || closed.ends_with(' ') {
        closed.trim_end()
    } else {
        text
    })
}

/// Blanks (with spaces, newlines kept) what cannot hold a link: inline code spans and
/// backslash escapes. `block` is one paragraph-like run of lines: code spans do not
/// cross a blank line.
fn mask_code_spans(block: &str) -> String {
    let bytes = block.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() && bytes[i + 1].is_ascii_punctuation() => {
                blank(&mut out, i, i + 2);
                i += 2;
            }
            b'`' => {
                let run = bytes[i..].iter().take_while(|b| **b == b'`').count();
                // The closing run: exactly as many backticks.
                let mut j = i + run;
                let mut close = None;
                while j < bytes.len() {
                    if bytes[j] == b'`' {
                        let r = bytes[j..].iter().take_while(|b| **b == b'`').count();
                        if r == run {
                            close = Some(j + r);
                            break;
                        }
                        j += r;
                    } else {
                        j += 1;
                    }
                }
                match close {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += run,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced, by ASCII")
}

/// The destination of an inline link, starting just after its `(`: `<...>`, or up to
/// whitespace or the `)` that balances.
fn destination(s: &str) -> Option<&str> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('<') {
        return rest.find('>').map(|end| &rest[..end]);
    }
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(&s[..i]),
            ')' => depth -= 1,
            c if c.is_whitespace() => return Some(&s[..i]),
            _ => {}
        }
    }
    None
}

/// Links of one masked block whose first line is `first_line` (1-based).
fn block_links(masked: &str, first_line: usize, links: &mut Vec<Link>) {
    let line_of = |pos: usize| first_line + masked[..pos].matches('\n').count();
    let mut found: Vec<(usize, String)> = Vec::new();

    // Reference definitions: `[label]: target` at the start of a line.
    let mut offset = 0;
    for line in masked.split('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent <= 3 && line[indent..].starts_with('[') {
            if let Some(close) = line.find("]:") {
                let rest = line[close + 2..].trim_start();
                let target = rest
                    .strip_prefix('<')
                    .and_then(|r| r.split('>').next())
                    .unwrap_or_else(|| rest.split_whitespace().next().unwrap_or(""));
                if close > indent + 1 && !target.is_empty() {
                    found.push((offset + line.len() - rest.len(), target.to_string()));
                }
            }
        }
        offset += line.len() + 1;
    }

    // Inline links and images: `[text](target)`, with a `[` that balances the `]`.
    let bytes = masked.as_bytes();
    let mut from = 0;
    while let Some(at) = masked[from..].find("](") {
        let close = from + at;
        from = close + 2;
        let mut depth = 0usize;
        let opened = (0..close).rev().any(|i| match bytes[i] {
            b']' => {
                depth += 1;
                false
            }
            b'[' if depth == 0 => true,
            b'[' => {
                depth -= 1;
                false
            }
            _ => false,
        });
        if !opened {
            continue;
        }
        if let Some(target) = destination(&masked[close + 2..]) {
            if !target.is_empty() {
                let pos = close + 2 + masked[close + 2..].find(target).unwrap_or(0);
                found.push((pos, target.to_string()));
            }
        }
    }

    // HTML: href="..." and src="..." inside a tag.
    for attr in ["href=", "src="] {
        let mut from = 0;
        while let Some(at) = masked[from..].find(attr) {
            let pos = from + at;
            from = pos + attr.len();
            let in_tag = masked[..pos].rfind('<') > masked[..pos].rfind('>');
            let rest = &masked[from..];
            let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'');
            if let (true, Some(q)) = (in_tag, quote) {
                if let Some(end) = rest[1..].find(q) {
                    found.push((from + 1, rest[1..1 + end].to_string()));
                }
            }
        }
    }

    found.sort_by_key(|(pos, _)| *pos);
    links.extend(found.into_iter().map(|(pos, target)| Link {
        line: line_of(pos),
        target,
    }));
}

/// Headings (outside fences) and links (outside fences and code spans) of a Markdown text.
fn scan(text: &str) -> Scan {
    let mut headings = Vec::new();
    let mut html_anchors = Vec::new();
    let mut links = Vec::new();
    let mut open: Option<(char, usize)> = None;
    let mut block = String::new();
    let mut block_start = 0;
    let flush = |block: &mut String, start: usize, links: &mut Vec<Link>| {
        if !block.is_empty() {
            block_links(&mask_code_spans(block), start, links);
            block.clear();
        }
    };
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if let Some((c, n)) = open {
            if fence(line).is_some_and(|(c2, n2)| c2 == c && n2 >= n)
                && line.trim().chars().all(|x| x == c)
            {
                open = None;
            }
            continue;
        }
        if let Some(f) = fence(line) {
            flush(&mut block, block_start, &mut links);
            open = Some(f);
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut block, block_start, &mut links);
            continue;
        }
        if let Some(heading) = atx_heading(line) {
            headings.push(heading.to_string());
        }
        // Explicit anchors: <a name="x"> or id="x".
        let masked = mask_code_spans(line);
        for attr in ["name=\"", "id=\""] {
            for (at, _) in masked.match_indices(attr) {
                let rest = &masked[at + attr.len()..];
                if masked[..at].rfind('<') > masked[..at].rfind('>') {
                    if let Some(end) = rest.find('"') {
                        html_anchors.push(rest[..end].to_string());
                    }
                }
            }
        }
        if block.is_empty() {
            block_start = number;
        } else {
            block.push('\n');
        }
        block.push_str(line);
    }
    flush(&mut block, block_start, &mut links);
    let mut anchors = anchors(headings.iter().map(String::as_str));
    anchors.extend(html_anchors);
    Scan { anchors, links }
}

/// `%20` and friends, as a browser decodes a path or a fragment.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/./b/../c` -> `a/c`, lexically; `None` when `..` climbs above the start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

/// Where a link leads.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A URI with this scheme (lower case): `https`, `mailto`, ...
    Scheme(String),
    /// A path that climbs out of the repository with `..`.
    Outside,
    /// A path from the repository root, and the fragment after `#` (decoded).
    Local {
        path: PathBuf,
        fragment: Option<String>,
    },
}

/// Resolves `target`, as written in `file` (relative to the repository root).
fn resolve(file: &Path, target: &str) -> Target {
    if let Some((scheme, _)) = target.split_once(':') {
        let mut chars = scheme.chars();
        if chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Target::Scheme(scheme.to_ascii_lowercase());
        }
    }
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(percent_decode(f))),
        None => (target, None),
    };
    let path = percent_decode(path.split('?').next().unwrap_or(""));
    let joined = if path.is_empty() {
        file.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        PathBuf::from(from_root)
    } else {
        file.parent().unwrap_or(Path::new("")).join(&path)
    };
    match normalize(&joined) {
        Some(path) => Target::Local { path, fragment },
        None => Target::Outside,
    }
}

/// Checks every link of `files` (paths relative to `root`).
fn check(root: &Path, files: &[PathBuf]) -> Report {
    let mut report = Report::default();
    let mut anchor_cache: HashMap<PathBuf, Vec<String>> = HashMap::new();
    let mut anchors_of = |rel: &Path| -> Vec<String> {
        anchor_cache
            .entry(rel.to_path_buf())
            .or_insert_with(|| {
                std::fs::read_to_string(root.join(rel))
                    .map(|t| scan(&t).anchors)
                    .unwrap_or_default()
            })
            .clone()
    };
    for file in files {
        let text = match std::fs::read_to_string(root.join(file)) {
            Ok(t) => t,
            Err(e) => {
                report.broken.push(Broken {
                    file: file.display().to_string(),
                    line: 0,
                    target: String::new(),
                    why: format!("cannot read the file: {e}"),
                });
                continue;
            }
        };
        for link in scan(&text).links {
            report.checked += 1;
            let broken = |why: String| Broken {
                file: file.display().to_string(),
                line: link.line,
                target: link.target.clone(),
                why,
            };
            let (target, fragment) = match resolve(file, &link.target) {
                Target::Scheme(s) if ["http", "https", "mailto"].contains(&s.as_str()) => continue,
                Target::Scheme(s) => {
                    report
                        .broken
                        .push(broken(format!("a `{s}:` link is not checked nor followed")));
                    continue;
                }
                Target::Outside => {
                    report.outside.push(format!(
                        "{}:{}: {}",
                        file.display(),
                        link.line,
                        link.target
                    ));
                    continue;
                }
                Target::Local { path, fragment } => (path, fragment),
            };
            let on_disk = root.join(&target);
            if !on_disk.exists() {
                report.broken.push(broken(format!(
                    "no such file: {}",
                    if target.as_os_str().is_empty() {
                        ".".into()
                    } else {
                        target.display().to_string()
                    }
                )));
                continue;
            }
            let markdown = on_disk.is_file()
                && target
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("md"));
            // A fragment of a non-Markdown file (`#L10` of a source file) is GitHub's.
            let Some(f) = fragment.filter(|f| markdown && !f.is_empty()) else {
                continue;
            };
            if !anchors_of(&target).contains(&f) {
                report.broken.push(broken(format!(
                    "no heading with anchor #{f} in {}",
                    target.display()
                )));
            }
        }
    }
    report
}

/// README.md and every docs/**/*.md, relative to `root`, sorted.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            return;
        };
        for entry in entries.flatten() {
            let rel = dir.join(entry.file_name());
            let kind = entry.file_type().expect("a directory entry has a type");
            if kind.is_dir() {
                walk(root, &rel, out);
            } else if rel.extension().is_some_and(|e| e == "md") {
                out.push(rel);
            }
        }
    }
    let mut files = vec![PathBuf::from("README.md")];
    walk(root, Path::new("docs"), &mut files);
    files.sort();
    files
}

// ---- the real files -----------------------------------------------------------------

#[test]
fn readme_and_docs_links_resolve() {
    let root = siphon_tests::repo_root();
    let files = markdown_files(&root);
    assert!(
        files.iter().any(|f| f.starts_with("docs")),
        "no Markdown under docs/ in {files:?}"
    );
    let report = check(&root, &files);
    eprintln!("{} links in {} files", report.checked, files.len());
    assert!(
        report.checked > files.len(),
        "too few links found: {report:?}"
    );
    for o in &report.outside {
        eprintln!("not checked, outside the repository: {o}");
    }
    let lines: Vec<String> = report
        .broken
        .iter()
        .map(|b| format!("  {}:{}: ({}) -> {}", b.file, b.line, b.target, b.why))
        .collect();
    assert!(
        report.broken.is_empty(),
        "{} broken link(s) in README.md and docs/:\n{}",
        report.broken.len(),
        lines.join("\n")
    );
}

#[test]
fn readme_stays_a_front_page() {
    let text = std::fs::read_to_string(siphon_tests::repo_root().join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: at most 250 (issue #28); move the detail to a page under docs/"
    );
}

#[test]
fn every_docs_page_is_reachable_from_the_readme() {
    let root = siphon_tests::repo_root();
    let mut seen = vec![PathBuf::from("README.md")];
    let mut next = 0;
    while next < seen.len() {
        let file = seen[next].clone();
        next += 1;
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        for link in scan(&text).links {
            if let Target::Local { path, .. } = resolve(&file, &link.target) {
                if path.extension().is_some_and(|e| e == "md") && !seen.contains(&path) {
                    seen.push(path);
                }
            }
        }
    }
    let orphans: Vec<_> = markdown_files(&root)
        .into_iter()
        .filter(|f| !seen.contains(f))
        .collect();
    assert!(
        orphans.is_empty(),
        "pages no link from README.md leads to: {orphans:?}"
    );
}

// ---- the scanner ----------------------------------------------------------------------

#[test]
fn slugs_of_tricky_headings() {
    for (heading, anchor) in [
        ("`$import` sessions and `$load`", "import-sessions-and-load"),
        (
            "FHIR validation (`validation: {enable, checks}`)",
            "fhir-validation-validation-enable-checks",
        ),
        (
            "Speed and memory (`make bench-load`, `make bench-dump`)",
            "speed-and-memory-make-bench-load-make-bench-dump",
        ),
        (
            "First loads: `disable-idx?` and `drop-primary-key?`",
            "first-loads-disable-idx-and-drop-primary-key",
        ),
        (
            "Dump to a bucket (`aidbox.bulk/dump-to-bucket`)",
            "dump-to-a-bucket-aidboxbulkdump-to-bucket",
        ),
        ("`$export` (FHIR Bulk Data)", "export-fhir-bulk-data"),
        ("Limits (today)", "limits-today"),
        ("snake_case and kebab-case", "snake_case-and-kebab-case"),
        ("Two  spaces", "two--spaces"),
        ("A [linked](other.md#x) heading", "a-linked-heading"),
        ("Ünïcode Größe", "ünïcode-größe"),
    ] {
        assert_eq!(slug(heading), anchor, "heading {heading:?}");
    }
}

#[test]
fn repeated_headings_are_numbered() {
    assert_eq!(
        anchors(["Deploy", "Build", "Deploy", "Deploy"]),
        ["deploy", "build", "deploy-1", "deploy-2"]
    );
    // github-slugger: a number another heading already took is skipped.
    assert_eq!(anchors(["a", "a-1", "a"]), ["a", "a-1", "a-2"]);
    assert_eq!(anchors(["a", "a", "a-1"]), ["a", "a-1", "a-1-1"]);
}

#[test]
fn atx_headings_and_their_closing_hashes() {
    assert_eq!(atx_heading("## Tests"), Some("Tests"));
    assert_eq!(atx_heading("### Cost notes ###"), Some("Cost notes"));
    assert_eq!(atx_heading("# C#"), Some("C#"));
    assert_eq!(atx_heading("#hashtag"), None);
    assert_eq!(atx_heading("####### seven"), None);
    assert_eq!(atx_heading("    # indented code"), None);
}

#[test]
fn fenced_code_holds_no_link_and_no_heading() {
    let text = "# Top\n\n```sh\n# comment, not a heading\ncurl [x](nowhere.md)\n```\n\n\
                ~~~\n[y](nowhere.md)\n```\nstill inside\n~~~\n\n## After [z](here.md)\n";
    let s = scan(text);
    assert_eq!(s.anchors, ["top", "after-z"]);
    assert_eq!(
        s.links,
        [Link {
            line: 14,
            target: "here.md".into()
        }]
    );
}

#[test]
fn code_spans_and_escapes_hold_no_link() {
    let text = "`[a](one.md)` and ``x ` [b](two.md)`` and \\[c](three.md)\n\
                a span `that\ncrosses [d](four.md) a line` then [e](five.md)\n\
                an unclosed ` backtick [f](six.md)\n";
    let targets: Vec<_> = scan(text).links.into_iter().map(|l| l.target).collect();
    assert_eq!(targets, ["five.md", "six.md"]);
}

#[test]
fn every_kind_of_link_is_found_on_its_line() {
    let text = "Intro [inline](a.md#x) and ![image](img/p.png \"title\").\n\
                \n\
                [ref]: ref.md#y\n\
                <a href=\"html.md\">html</a> <img src='pic.png'>\n\
                [nested [brackets]](nested.md) and [paren](dir/(1).md) and [angle](<with space.md>)\n\
                [not a link] (plain.md) and [][]\n\
                [multi\nline](multi.md)\n";
    let links = scan(text).links;
    let got: Vec<_> = links.iter().map(|l| (l.line, l.target.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, "a.md#x"),
            (1, "img/p.png"),
            (3, "ref.md#y"),
            (4, "html.md"),
            (4, "pic.png"),
            (5, "nested.md"),
            (5, "dir/(1).md"),
            (5, "with space.md"),
            (8, "multi.md"),
        ]
    );
}

/// A throwaway tree of files under the system's temporary directory.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str, files: &[(&str, &str)]) -> Tree {
        let root =
            std::env::temp_dir().join(format!("siphon-docs-links-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Tree(root)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn broken_files_and_anchors_are_named() {
    let tree = Tree::new(
        "broken",
        &[
            (
                "README.md",
                "# Top\n\n## Same heading\n\n## Same heading\n\n\
                 [ok](docs/a.md#fhir-validation-validation-enable-checks) [ok](#same-heading-1)\n\
                 [gone](docs/missing.md) [bad anchor](docs/a.md#the-loader)\n\
                 [dir](docs/) [img](docs/console/p.png) [line](docs/x.rs#L3) [ext](https://example.org/x)\n\
                 [self-bad](#same-heading-2) [mail](mailto:a@b.c) [root](/docs/a.md#top-of-a)\n",
            ),
            (
                "docs/a.md",
                "# Top of a\n\n[back](../README.md#top) [up](../../elsewhere/x.md) [ftp](ftp://h/x)\n\n\
                 ## FHIR validation (`validation: {enable, checks}`)\n\n```\n## The loader\n```\n",
            ),
            ("docs/console/p.png", ""),
            ("docs/x.rs", ""),
        ],
    );
    let report = check(
        &tree.0,
        &[PathBuf::from("README.md"), PathBuf::from("docs/a.md")],
    );
    let got: Vec<_> = report
        .broken
        .iter()
        .map(|b| (b.file.as_str(), b.line, b.target.as_str(), b.why.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "README.md",
                8,
                "docs/missing.md",
                "no such file: docs/missing.md"
            ),
            (
                "README.md",
                8,
                "docs/a.md#the-loader",
                "no heading with anchor #the-loader in docs/a.md"
            ),
            (
                "README.md",
                10,
                "#same-heading-2",
                "no heading with anchor #same-heading-2 in README.md"
            ),
            (
                "docs/a.md",
                3,
                "ftp://h/x",
                "a `ftp:` link is not checked nor followed"
            ),
        ]
    );
    assert_eq!(report.outside, ["docs/a.md:3: ../../elsewhere/x.md"]);
}

#[test]
fn markdown_files_are_the_readme_and_everything_under_docs() {
    let tree = Tree::new(
        "walk",
        &[
            ("README.md", ""),
            ("OTHER.md", ""),
            ("docs/a.md", ""),
            ("docs/sub/b.md", ""),
            ("docs/sub/c.png", ""),
        ],
    );
    assert_eq!(
        markdown_files(&tree.0),
        ["README.md", "docs/a.md", "docs/sub/b.md"].map(PathBuf::from)
    );
}

#[test]
fn percent_decoding_and_normalizing() {
    assert_eq!(percent_decode("with%20space.md"), "with space.md");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(
        normalize(Path::new("docs/../infra/./events/README.md")),
        Some(PathBuf::from("infra/events/README.md"))
    );
    assert_eq!(normalize(Path::new("../shared/x.md")), None);
}
