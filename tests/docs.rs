//! The documentation stays usable (no Envoy needed): the README stays short and
//! gives the two commands, every relative link in the docs leads to a file that
//! exists (and, for a `#fragment` into a Markdown file, to a heading that
//! exists), and no product doc points at an issue tracker or at files outside
//! the repository.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

const README_MAX_LINES: usize = 220;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &Path) -> String {
    let path = root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files in `dir` (relative to the repository) whose names end with `ext`, sorted.
fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(ext))
        .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

/// The Markdown documents whose links are checked.
fn linked_docs() -> Vec<PathBuf> {
    let mut docs = vec![PathBuf::from("README.md")];
    docs.extend(files_in("docs", ".md"));
    docs.extend([
        PathBuf::from("BENCHMARKS.md"),
        PathBuf::from("dashboards/README.md"),
    ]);
    docs.extend(files_in("istio", ".md"));
    docs
}

/// The product docs: what a user or operator reads.
fn product_docs() -> Vec<PathBuf> {
    let mut docs = linked_docs();
    docs.extend(files_in("envoy", ".yaml"));
    docs
}

/// The lines of a Markdown text outside fenced code blocks, with inline code
/// spans blanked out, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = if trimmed.starts_with("```") {
            Some("```")
        } else if trimmed.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (Some(_), _) => {}
            (None, None) => out.push((i + 1, blank_code_spans(line))),
        }
    }
    out
}

fn blank_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else if in_code {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Inline link targets `[text](target)` on a line of prose (images too).
fn link_targets(line: &str) -> Vec<String> {
    let re = regex_lite::Regex::new(r"\]\(([^()\s]+)(?:\s+[^)]*)?\)").unwrap();
    re.captures_iter(line)
        .map(|c| c.get(1).unwrap().as_str().to_owned())
        .collect()
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    ["http://", "https://", "mailto:", "ftp://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// A heading's anchor as GitHub makes it: lower case, letters, digits, `-` and
/// `_` kept, spaces turned into `-`, everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_lowercase().collect::<String>())
            } else if c == ' ' {
                Some("-".to_owned())
            } else {
                None
            }
        })
        .collect()
}

/// Every anchor a Markdown text defines through its headings (repeats get
/// `-1`, `-2`, ... as on GitHub).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines_keeping_code(text) {
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !trimmed[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&trimmed[hashes..].replace('`', ""));
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Like `prose_lines`, but with inline code kept (headings keep its text).
fn prose_lines_keeping_code(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            out.push((i + 1, line.to_owned()));
        }
    }
    out
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None; // above the repository root
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

#[test]
fn readme_is_short_and_gives_the_two_commands() {
    if common::wasm_only("the docs, checked in the Wasm run") {
        return;
    }
    let readme = read(Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; keep it at most {README_MAX_LINES} and move reference \
         material to docs/"
    );
    for command in ["make run", "make test"] {
        assert!(readme.contains(command), "README.md must show `{command}`");
    }
}

#[test]
fn readme_links_every_doc() {
    if common::wasm_only("the docs, checked in the Wasm run") {
        return;
    }
    let readme = read(Path::new("README.md"));
    for doc in files_in("docs", ".md") {
        let target = doc.to_string_lossy().replace('\\', "/");
        assert!(
            readme.contains(&format!("]({target})")),
            "README.md does not link {target}"
        );
    }
}

#[test]
fn relative_links_lead_to_existing_files_and_headings() {
    if common::wasm_only("the docs, checked in the Wasm run") {
        return;
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in linked_docs() {
        let text = read(&doc);
        let dir = doc.parent().unwrap_or(Path::new("")).to_path_buf();
        for (line_no, line) in prose_lines(&text) {
            for target in link_targets(&line) {
                if is_external(&target) {
                    continue;
                }
                checked += 1;
                let (file, fragment) = match target.split_once('#') {
                    Some((file, fragment)) => (file, Some(fragment)),
                    None => (target.as_str(), None),
                };
                let resolved = if file.is_empty() {
                    Some(doc.clone())
                } else {
                    normalize(&dir.join(file))
                };
                let where_ = format!("{}:{line_no}: ({target})", doc.display());
                let Some(resolved) = resolved else {
                    broken.push(format!("{where_} leaves the repository"));
                    continue;
                };
                let on_disk = root().join(&resolved);
                if !on_disk.exists() {
                    broken.push(format!("{where_}: no {}", resolved.display()));
                    continue;
                }
                if let Some(fragment) = fragment {
                    if on_disk.is_file() && resolved.extension().is_some_and(|e| e == "md") {
                        let known = anchors(&read(&resolved));
                        if !known.iter().any(|a| a == fragment) {
                            broken.push(format!(
                                "{where_}: no heading #{fragment} in {}",
                                resolved.display()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The parts of a product doc a reader sees: the whole of a Markdown file, the
/// comments of a YAML file.
fn readable_lines(doc: &Path, text: &str) -> Vec<(usize, String)> {
    let yaml = doc.extension().is_some_and(|e| e == "yaml" || e == "yml");
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            if !yaml {
                return Some((i + 1, line.to_owned()));
            }
            // A YAML comment starts with `#` at the start or after a blank.
            let bytes = line.as_bytes();
            let start = (0..bytes.len()).find(|&j| {
                bytes[j] == b'#' && (j == 0 || bytes[j - 1] == b' ' || bytes[j - 1] == b'\t')
            })?;
            Some((i + 1, line[start + 1..].to_owned()))
        })
        .collect()
}

#[test]
fn product_docs_name_no_issue_numbers_and_no_outside_files() {
    if common::wasm_only("the docs, checked in the Wasm run") {
        return;
    }
    let issue = regex_lite::Regex::new(r"(?i)\bissues?\s*(?:no\.?\s*)?#?\d").unwrap();
    // `#12` as a reference: after a blank, an opening bracket or a comma, and
    // not a Markdown heading (`## x` has a blank after the hashes).
    let hash_ref = regex_lite::Regex::new(r"(?:^|[\s(\[,;])#\d+\b").unwrap();
    let mut found = Vec::new();
    let docs = product_docs();
    assert!(docs.len() >= 8, "expected the product docs, found {docs:?}");
    for doc in docs {
        let text = read(&doc);
        for (line_no, line) in readable_lines(&doc, &text) {
            let where_ = format!("{}:{line_no}", doc.display());
            if let Some(m) = issue.find(&line) {
                found.push(format!("{where_}: issue reference {:?}", m.as_str()));
            }
            if let Some(m) = hash_ref.find(&line) {
                found.push(format!("{where_}: issue reference {:?}", m.as_str().trim()));
            }
            if line.contains("../shared") {
                found.push(format!(
                    "{where_}: points outside the repository (../shared)"
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "product docs speak of the project only:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_should() {
    if common::wasm_only("the docs, checked in the Wasm run") {
        return;
    }
    assert_eq!(slug("Reliability: soak"), "reliability-soak");
    assert_eq!(
        slug("Check, explain, simulate: the canary-router CLI"),
        "check-explain-simulate-the-canary-router-cli"
    );
    assert_eq!(
        anchors("# A\n## B c\n```\n## not a heading\n```\n## B c\n"),
        ["a", "b-c", "b-c-1"]
    );
    assert_eq!(
        link_targets("see [x](docs/a.md#b) and [y](https://e.org) `[z](no.md)`"),
        ["docs/a.md#b", "https://e.org", "no.md"]
    );
    assert_eq!(
        link_targets(&blank_code_spans("`[z](no.md)` [w](w.md)")),
        ["w.md"]
    );
    assert_eq!(
        normalize(Path::new("docs/../BENCHMARKS.md")),
        Some("BENCHMARKS.md".into())
    );
    assert_eq!(normalize(Path::new("../outside.md")), None);
    let yaml = readable_lines(Path::new("x.yaml"), "a: 1 # see issue 4\nissuer: x\n");
    assert_eq!(yaml, [(1, " see issue 4".to_owned())]);
}
