//! The engine's modules import one way: the shared kernel (`storage`, `ledger`) below the
//! stages (`source`, `enrich`, `lookup`, `sink`), which meet only in the plan (`job`,
//! `stage`). Reads the library's own sources; a new upward import fails here, naming it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::X` paths used in the module folder `module` that name one of `forbidden`.
fn imports(module: &str, forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root = src.join(module);
    let mut files = Vec::new();
    if root.is_dir() {
        rust_files(&root, &mut files);
    } else {
        files.push(src.join(format!("{module}.rs")));
    }
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for f in forbidden {
                if code.contains(&format!("crate::{f}::")) || code.contains(&format!("crate::{f};"))
                {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn modules_import_one_way() {
    let stages = ["source", "enrich", "lookup", "sink", "job", "pipeline"];
    let mut bad = Vec::new();
    // The kernel knows no stage.
    bad.extend(imports(
        "storage",
        &[&stages[..], &["ledger", "stage"]].concat(),
    ));
    bad.extend(imports(
        "ledger",
        &[&stages[..], &["stage", "report", "services"]].concat(),
    ));
    // Stages do not import each other (lookup reads its files through `source`, downward).
    bad.extend(imports(
        "source",
        &["enrich", "lookup", "sink", "job", "pipeline"],
    ));
    bad.extend(imports(
        "sink",
        &["source", "enrich", "lookup", "job", "pipeline"],
    ));
    bad.extend(imports(
        "enrich",
        &["source", "lookup", "sink", "job", "pipeline"],
    ));
    bad.extend(imports("lookup", &["enrich", "sink", "job", "pipeline"]));
    // The session's services know the plan's core (stages, functions, the ledger), no
    // stage's own modules.
    bad.extend(imports(
        "services",
        &[
            "source", "enrich", "lookup", "sink", "job", "pipeline", "report",
        ],
    ));
    assert!(
        bad.is_empty(),
        "imports against the layout:\n{}",
        bad.join("\n")
    );
}
