//! `ext-runner new DIR`: a working extension to start from.

use std::path::Path;

use crate::extension::manifest::{Manifest, MANIFEST_FILE};

/// The extension name made of a folder name: lowercase letters, digits and
/// `_`, so that `NAME.hello` is a valid dotted tool name.
fn name_from(dir: &Path) -> String {
    let base = dir
        .canonicalize()
        .ok()
        .or_else(|| std::path::absolute(dir).ok())
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    name = name.trim_matches('_').to_string();
    if name.is_empty() {
        name = "myext".into();
    }
    name
}

fn manifest(name: &str) -> String {
    let text = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "description": format!("The {name} extension"),
        "abi_version": "1",
        "capabilities": ["tool.invoke"],
        "provenance": {"origin": "local", "trust_class": "dev", "owner_class": "personal"},
        "surfaces": {"tools": [{
            "name": format!("{name}.hello"),
            "description": "Say hello to someone (or to the world)",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string", "description": "Who to greet"}}
            }
        }]}
    });
    serde_json::to_string_pretty(&text).expect("JSON values serialize") + "\n"
}

fn worker(name: &str) -> String {
    format!(
        r#""""The {name} extension's worker. Each tool is a function of one dict
(the invoke's arguments) returning anything JSON can hold. Print diagnostics
to stderr: stdout is the protocol. See docs/extensions.md."""
from nodus_extension.worker import register_tool, run_loop


def hello(args):
    return f"Hello, {{args.get('name', 'world')}}!"


register_tool("{name}.hello", hello)
run_loop()
"#
    )
}

/// Creates the extension in `dir` (which must not exist, or be empty);
/// returns what to tell the user. Errors are usage errors.
pub fn create(dir: &Path, name: Option<&str>) -> Result<String, String> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            return Err(format!(
                "{} already exists and is not empty; name a new folder",
                dir.display()
            ));
        }
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => name_from(dir),
    };
    let text = manifest(&name);
    // The same checks `validate` makes, before anything is written.
    Manifest::parse(text.as_bytes(), MANIFEST_FILE)
        .map_err(|e| format!("--name {name:?} does not make a valid extension: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |file: &str, body: &str| {
        std::fs::write(dir.join(file), body)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(file).display()))
    };
    write(MANIFEST_FILE, &text)?;
    write("extension.py", &worker(&name))?;
    let d = shell_word(&dir.display().to_string());
    Ok(format!(
        "created {d}/{MANIFEST_FILE} and {d}/extension.py (extension {name}, tool {name}.hello)\n\
         \n\
         next:\n  \
           ext-runner validate {d}\n  \
           ext-runner invoke {d} {name}.hello\n  \
           ext-runner invoke {d} {name}.hello '{{\"name\": \"Ada\"}}'\n  \
           ext-runner policy {d}          # what the worker may do\n\
         \n\
         The manifest and the capabilities are described in docs/extensions.md.\n"
    ))
}

/// `s` as one shell word.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_folders() {
        assert_eq!(name_from(Path::new("/tmp/My-Ext 2")), "my_ext_2");
        assert_eq!(name_from(Path::new("/tmp/---")), "myext");
        assert_eq!(name_from(Path::new("/tmp/greeter")), "greeter");
    }

    #[test]
    fn the_manifest_validates() {
        let m = Manifest::parse(manifest("my_ext").as_bytes(), "m").unwrap();
        assert_eq!(m.tools[0].name, "my_ext.hello");
        assert!(Manifest::parse(manifest("Bad Name").as_bytes(), "m").is_err());
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("a/b"), "a/b");
        assert_eq!(shell_word("a b's"), r"'a b'\''s'");
    }
}
