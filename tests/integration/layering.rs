//! ARCHITECTURE.md's picture of the layers is true: every module under
//! `src/` is on it, and none imports a module on a row above its own but for
//! the exceptions the document names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Upward arrows ARCHITECTURE.md lists as exceptions: (importer, imported).
const EXCEPTIONS: &[(&str, &str)] =
    &[("config", "tenancy"), ("config", "tokens"), ("config", "upstream"), ("pg_client", "upstream")];

/// Module name → row (0 at the top) from the first picture in ARCHITECTURE.md.
fn layers(doc: &str) -> HashMap<String, usize> {
    let start = doc.find("dependencies point downward").expect("the layer picture's heading");
    let block = &doc[start..];
    let block = &block[block.find("```\n").expect("the picture opens") + 4..];
    let block = &block[..block.find("```").expect("the picture closes")];
    let mut rank = HashMap::new();
    for (row, line) in block.lines().enumerate() {
        let names = line.split("  ").next().unwrap_or_default();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            assert!(rank.insert(name.to_owned(), row).is_none(), "{name} is on two rows");
        }
    }
    rank
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::<module>` paths a source file names, outside its unit tests.
fn imported_modules(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        if !name.is_empty() && !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rank = layers(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    let mut missing = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let Some(&own_row) = rank.get(&module) else {
            missing.push(module);
            continue;
        };
        for imported in imported_modules(&std::fs::read_to_string(file).unwrap()) {
            let Some(&row) = rank.get(&imported) else { continue };
            if row < own_row && !EXCEPTIONS.contains(&(module.as_str(), imported.as_str())) {
                upward.push(format!("{} imports {imported}", relative.display()));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "modules not on ARCHITECTURE.md's picture: {missing:?}");
    assert!(upward.is_empty(), "imports pointing up: {upward:#?}");
    assert!(rank.contains_key("frontend") && rank["frontend"] < rank["upstream"], "the picture was read");
}

#[test]
fn the_check_sees_an_upward_import() {
    let rank = layers("dependencies point downward:\n\n```\ntop      a\nbottom, leaf   b\n```\n");
    assert_eq!((rank["top"], rank["bottom"], rank["leaf"]), (0, 1, 1));
    assert_eq!(imported_modules("use crate::top::X;\nfn f() { crate::leaf::g() }"), ["top", "leaf"]);
    assert!(imported_modules("#[cfg(test)]\nmod tests { use crate::top; }").is_empty());
}
