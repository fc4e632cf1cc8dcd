#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Every fuzz input kept in the repository is a regression test: the seeds
//! (`fuzz/seeds/<target>/`), the minimized corpus `make fuzz` grows
//! (`fuzz/corpus/<target>/`) and any crash reproducer (`fuzz/artifacts/<target>/`)
//! run through the very checks the fuzz targets assert (`fuzz/checks.rs`), on
//! stable Rust, without a fuzzer.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

const KINDS: [&str; 3] = ["seeds", "corpus", "artifacts"];

fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run every stored input of `target`; report all failing files at once.
fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, check)| check)
        .unwrap();
    let mut count = 0;
    let mut failed = Vec::new();
    for kind in KINDS {
        for file in files(kind, target) {
            let data = std::fs::read(&file).unwrap();
            count += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(count > 0, "no seeds or corpus for fuzz target {target}");
    assert!(
        failed.is_empty(),
        "{} of {count} `{target}` inputs fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
    eprintln!("{target}: {count} inputs replayed");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn config_structured() {
    replay("config_structured");
}

#[test]
fn cookie() {
    replay("cookie");
}

#[test]
fn jwt() {
    replay("jwt");
}

#[test]
fn decide() {
    replay("decide");
}

/// The shared checks, the fuzz targets and the tests above name the same targets.
#[test]
fn every_target_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            path.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    on_disk.sort();
    let mut checked: Vec<String> = checks::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    checked.sort();
    assert_eq!(on_disk, checked);
}
