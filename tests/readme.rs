//! README's Rust programs are the examples CI builds, character for character: each block
//! after an `<!-- example: PATH -->` line must equal the file at PATH, and no Rust block
//! hides lines from the reader with rustdoc's `# ` prefix.

const README: &str = include_str!("../README.md");

#[test]
fn readme_programs_are_the_examples() {
    let mut checked = Vec::new();
    let mut lines = README.lines();
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
            "{path}: a rust block follows"
        );
        let mut block = String::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            block.push_str(line);
            block.push('\n');
        }
        let file = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            block == file,
            "README's copy of {path} differs from the file: copy the file into README"
        );
        checked.push(path);
    }
    for expected in [
        "examples/axum_sqlite.rs",
        "examples/hyper.rs",
        "examples/postgres.rs",
    ] {
        assert!(checked.contains(&expected), "README shows {expected}");
    }
}

#[test]
fn readme_rust_blocks_hide_nothing() {
    let mut in_rust = false;
    for (n, line) in README.lines().enumerate() {
        if line.starts_with("```") {
            in_rust = !in_rust && line.starts_with("```rust");
            continue;
        }
        if in_rust {
            assert!(
                !(line.starts_with("# ") || line == "#"),
                "README line {}: a hidden rustdoc line",
                n + 1
            );
        }
    }
}
