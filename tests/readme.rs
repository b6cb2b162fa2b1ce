//! README's and the guides' (`docs/*.md`) Rust programs are the examples CI builds,
//! character for character: each block after an `<!-- example: PATH -->` line must equal
//! the file at PATH; no Rust block hides lines from the reader with rustdoc's `# ` prefix;
//! README stays a front door (at most 300 lines); and every relative link, with its
//! `#anchor`, leads somewhere.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, CHANGELOG.md and every `docs/*.md`, as (path relative to the root, text).
fn documents() -> Vec<(String, String)> {
    let mut paths = vec!["README.md".to_owned(), "CHANGELOG.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(root().join(&p)).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn readme_programs_are_the_examples() {
    let mut checked = Vec::new();
    for (doc, text) in documents() {
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(path) = line
                .strip_prefix("<!-- example: ")
                .and_then(|rest| rest.strip_suffix(" -->"))
            else {
                continue;
            };
            assert_eq!(
                lines.next(),
                Some("```rust,ignore"),
                "{doc}: {path}: a rust block follows"
            );
            let mut block = String::new();
            for line in lines.by_ref().take_while(|l| *l != "```") {
                block.push_str(line);
                block.push('\n');
            }
            let file = std::fs::read_to_string(root().join(path))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                block == file,
                "{doc}'s copy of {path} differs from the file: copy the file into {doc}"
            );
            checked.push(path.to_owned());
        }
    }
    for expected in [
        "examples/axum_sqlite.rs",
        "examples/hyper.rs",
        "examples/postgres.rs",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "the docs show {expected}"
        );
    }
}

#[test]
fn readme_rust_blocks_hide_nothing() {
    for (doc, text) in documents() {
        let mut in_rust = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                in_rust = !in_rust && line.starts_with("```rust");
                continue;
            }
            if in_rust {
                assert!(
                    !(line.starts_with("# ") || line == "#"),
                    "{doc} line {}: a hidden rustdoc line",
                    n + 1
                );
            }
        }
    }
}

#[test]
fn readme_is_a_front_door() {
    let (_, readme) = &documents()[0];
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines: move detail into docs/"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped,
/// spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a document's headings (outside code blocks).
fn anchors(text: &str) -> HashSet<String> {
    let mut fence = false;
    let mut found = HashSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if !fence && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                found.insert(anchor(heading));
            }
        }
    }
    found
}

/// `](target)` links outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn relative_links_and_anchors_resolve() {
    let docs = documents();
    let mut broken = Vec::new();
    for (doc, text) in &docs {
        let dir = Path::new(doc).parent().unwrap();
        for link in links(text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                PathBuf::from(doc)
            } else {
                dir.join(file)
            };
            let full = root().join(&target);
            if !full.exists() {
                broken.push(format!("{doc}: {link:?} leads nowhere"));
                continue;
            }
            if let Some(fragment) = fragment {
                let text = std::fs::read_to_string(&full).unwrap();
                if !anchors(&text).contains(fragment) {
                    broken.push(format!(
                        "{doc}: {link:?} names no heading of {}",
                        target.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
