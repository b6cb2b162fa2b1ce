//! The bench scripts keep working when the docs move: every `benches/*.sh` and
//! `scripts/*.sh` parses (`bash -n`), the shell helper reads the same proxy blocks from
//! docs/forward-auth.md as the tests do, and the scripts that benchmark those blocks
//! (`BENCH_CHECK=1`: configurations written and validated by nginx and Caddy, nothing built
//! or loaded) get through their whole set-up.

mod skip;

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shell_scripts() -> Vec<PathBuf> {
    let mut scripts = Vec::new();
    for dir in ["benches", "scripts"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(path);
            }
        }
    }
    scripts.sort();
    scripts
}

#[test]
fn every_script_parses() {
    let scripts = shell_scripts();
    assert!(
        scripts.iter().any(|p| p.ends_with("benches/upstream.sh")),
        "{scripts:?}"
    );
    for script in scripts {
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The fenced block after `<!-- forward-auth-test: NAME -->`, as cli/tests/gateway reads it.
fn docs_block(name: &str) -> String {
    let docs = std::fs::read_to_string(root().join("docs/forward-auth.md")).unwrap();
    let marker = format!("<!-- forward-auth-test: {name} -->");
    let after = &docs[docs.find(&marker).expect("the marker") + marker.len()..];
    let block = &after[after.find("```").unwrap()..];
    let body = &block[block.find('\n').unwrap() + 1..];
    body[..body.find("\n```").unwrap() + 1].to_owned()
}

#[test]
fn the_benches_read_the_blocks_the_tests_read() {
    for name in ["gateway", "nginx", "caddy"] {
        let out = Command::new("bash")
            .current_dir(root())
            .args([
                "-c",
                "source benches/proxy_configs.sh && docs_block \"$1\"",
                "-",
            ])
            .arg(name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), docs_block(name));
    }
    // A block that is not there fails the helper, loudly.
    let out = Command::new("bash")
        .current_dir(root())
        .args([
            "-c",
            "source benches/proxy_configs.sh && docs_block no-such-block",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-block"));
}

#[test]
fn the_forward_auth_benches_set_up_from_the_docs() {
    for script in ["benches/forward_auth.sh", "benches/upstream.sh"] {
        let out = Command::new("bash")
            .current_dir(root())
            .arg(script)
            .env("BENCH_CHECK", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "BENCH_CHECK=1 bash {script}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("bench configuration checked: --trusted-proxy 127.0.0.1"),
            "{script}: {stdout}"
        );
        for line in stdout.lines().filter(|l| l.starts_with("not validated")) {
            assert!(
                std::env::var_os("CI").is_none(),
                "{script}: {line} and CI is set: .ci/run installs it"
            );
            skip::skipped(&format!("{script}: {line}"));
        }
    }
}
