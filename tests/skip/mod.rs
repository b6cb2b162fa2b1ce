//! Tests that cannot run say so: [`skipped`] prints `SKIPPED: <reason>` and, when
//! `HAPND_SKIP_LOG` names a file (`scripts/test.sh` sets it), appends the test's name and
//! the reason there, so that a run ends with the count of skipped tests and why, instead of
//! counting them among the passed. Callers keep their own rule for CI, where a skip fails.
#![allow(dead_code)]

use std::io::Write;

/// Records that the running test did not test what it is for, and why.
pub fn skipped(reason: &str) {
    eprintln!("SKIPPED: {reason}");
    let Some(log) = std::env::var_os("HAPND_SKIP_LOG") else {
        return;
    };
    // libtest names each test's thread after the test; the binary is the test target.
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(name, _)| name.to_owned())
        })
        .unwrap_or_default();
    let line = format!("{target}::{test}\t{reason}\n");
    // One short write with O_APPEND: lines from parallel tests do not interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = file.write_all(line.as_bytes());
    }
}
