//! Inputs shared by the unit tests.

use std::path::Path;

/// Every stored fuzz input (seeds, corpus and artifacts of every target): configs,
/// tokens, cookies, requests. Differential tests replay them.
pub(crate) fn stored_fuzz_inputs() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for kind in ["seeds", "corpus", "artifacts"] {
        let Ok(targets) = std::fs::read_dir(root.join(kind)) else {
            continue;
        };
        for target in targets {
            let Ok(entries) = std::fs::read_dir(target.unwrap().path()) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    inputs.push(std::fs::read(&path).unwrap());
                }
            }
        }
    }
    inputs
}
