//! Replays the inputs kept in `tests/fuzz_regressions/<target>/` through the invariant checks
//! of the fuzz target of the same name (`fuzz/checks/`), so the findings of `cargo fuzz` and a
//! few interesting inputs stay covered by a plain `cargo test`. See `fuzz/README.md`.

#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

#[test]
fn every_kept_input_passes_its_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in checks::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            count += 1;
            if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(format!("{target}/{}", file.file_name().unwrap_or_default().to_string_lossy()));
            }
        }
    }
    assert!(failures.is_empty(), "inputs failing their checks: {failures:?}");
    assert!(count > 0, "no inputs under {}", root.display());
}

#[test]
fn every_directory_names_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for entry in fs::read_dir(&root).into_iter().flatten().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            checks::TARGETS.iter().any(|(t, _)| *t == name),
            "tests/fuzz_regressions/{name} is not a fuzz target"
        );
    }
}
