//! `hapnd-auth scan PATH...`: finds our API keys in files, for a pre-commit hook or a CI
//! step. A key is a string with our prefix (`sk_live_`, `sk_test_`), the key format's exact
//! shape (32 base62 characters, then 6 of checksum) and a valid CRC32 checksum, standing
//! on its own (not inside a longer word). Only the masked hint and `file:line` are printed.

use std::path::{Path, PathBuf};

use hapnd_auth::ApiKey;

use crate::Exit;
use crate::output::{data, esc};

/// The length of every key: prefix, body, checksum.
const KEY_LEN: usize = hapnd_auth::KEY_LEN;
/// Files larger than this are not read (reported, and counted as an error).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// One key found: where, and its masked hint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) line: usize,
    pub(crate) hint: String,
}

/// Every key in `bytes`, with its 1-based line number.
pub(crate) fn find_keys(bytes: &[u8]) -> Vec<Found> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut line = 1;
    let mut counted = 0;
    let mut at = 0;
    while let Some(offset) = memchr_sk(&bytes[at..]) {
        let start = at + offset;
        at = start + 1;
        let Some(candidate) = bytes.get(start..start + KEY_LEN) else {
            break;
        };
        if start > 0 && word(bytes[start - 1]) {
            continue;
        }
        if bytes.get(start + KEY_LEN).is_some_and(|&b| word(b)) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(candidate) else {
            continue;
        };
        let Ok(key) = ApiKey::parse(text) else {
            continue;
        };
        line += bytes[counted..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted = start;
        found.push(Found {
            line,
            hint: key.hint(),
        });
        at = start + KEY_LEN;
    }
    found
}

fn memchr_sk(bytes: &[u8]) -> Option<usize> {
    bytes.windows(3).position(|w| w == b"sk_")
}

/// Scans every file under `paths` (directories recursively, without following symbolic
/// links, skipping `.git`). Exit 0: no key; 1: keys found (each printed as
/// `file:line: hint`); 2: a path could not be read.
pub(crate) fn run(paths: &[PathBuf]) -> Result<(), Exit> {
    let mut found = 0;
    let mut errors = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        match scan_path(&path, &mut stack) {
            Ok(keys) => {
                for key in &keys {
                    data!(
                        "{}:{}: {}",
                        esc(&path.display().to_string()),
                        key.line,
                        key.hint
                    );
                }
                found += keys.len();
            }
            Err(e) => errors.push(format!("{}: {e}", esc(&path.display().to_string()))),
        }
    }
    for e in &errors {
        eprintln!("cannot scan {e}");
    }
    if found > 0 {
        return Err(Exit {
            code: 1,
            message: format!(
                "found {found} API key(s): revoke each (`hapnd-auth keys list` shows the hint) \
                 and remove it from the files"
            ),
        });
    }
    if !errors.is_empty() {
        return Err(Exit {
            code: 2,
            message: format!("{} path(s) could not be scanned", errors.len()),
        });
    }
    eprintln!("no API keys found");
    Ok(())
}

/// The keys in the file `path`; a directory's entries are pushed onto `stack` instead.
fn scan_path(path: &Path, stack: &mut Vec<PathBuf>) -> std::io::Result<Vec<Found>> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_none_or(|n| n != ".git"))
            .collect();
        entries.sort();
        stack.extend(entries.into_iter().rev());
        return Ok(Vec::new());
    }
    if !meta.is_file() {
        // Symbolic links (not followed: the target is scanned where it lives), sockets...
        return Ok(Vec::new());
    }
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB, not read",
            MAX_FILE >> 20
        )));
    }
    Ok(find_keys(&std::fs::read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hapnd_auth::Environment;

    #[test]
    fn finds_valid_keys_with_their_lines_and_nothing_else() {
        let live = ApiKey::generate(Environment::Live);
        let test = ApiKey::generate(Environment::Sandbox);
        let (live, test) = (live.expose_secret(), test.expose_secret());
        // A key with one character changed fails its checksum.
        let mut typo = live.to_owned();
        let last = typo.pop().unwrap();
        typo.push(if last == 'a' { 'b' } else { 'a' });
        let text = format!(
            "first line\nAPI_KEY={live}\n{typo}\nx{test}\n\"{test}\" and sk_live_short\n\
             {live}x\n{test}"
        );
        let found = find_keys(text.as_bytes());
        let lines: Vec<usize> = found.iter().map(|f| f.line).collect();
        assert_eq!(lines, [2, 5, 7], "{found:?}");
        assert!(found[0].hint.starts_with("sk_live_...") && found[0].hint.len() < 20);
        assert!(found[1].hint.starts_with("sk_test_..."));
        assert!(find_keys(b"").is_empty());
        assert!(find_keys(b"sk_").is_empty());
        // Bytes that are not UTF-8 around a key do not hide it.
        let mut bytes = vec![0xff, b'\n'];
        bytes.extend_from_slice(live.as_bytes());
        bytes.push(0xfe);
        assert_eq!(
            find_keys(&bytes),
            [Found {
                line: 2,
                hint: found[0].hint.clone()
            }]
        );
    }
}
