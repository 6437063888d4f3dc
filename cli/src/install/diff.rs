//! `--dry-run` output: a unified diff per text file a plan writes or removes, and one line per
//! binary file (a binary's bytes say nothing to a reader; its size and hash do).

use std::fs;
use std::io::ErrorKind;

use anyhow::Context;
use similar::TextDiff;

use super::plan::{Change, Content};
use super::record;

/// What the file holds now: nothing, text, or bytes that are not text.
enum Now {
    Missing,
    Text(String),
    Binary(u64),
}

fn now(change: &Change) -> anyhow::Result<Now> {
    match fs::read(&change.path) {
        Ok(b) => Ok(match String::from_utf8(b) {
            Ok(t) => Now::Text(t),
            Err(e) => Now::Binary(e.into_bytes().len() as u64),
        }),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            Ok(Now::Missing)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", change.path.display())),
    }
}

/// The diff (or summary) of one change, ending in a newline; empty when it changes nothing.
pub fn change(c: &Change) -> anyhow::Result<String> {
    if !c.needed()? {
        return Ok(String::new());
    }
    let path = c.path.display().to_string();
    let current = now(c)?;
    let new_text: Option<String> = match &c.content {
        Content::Text(t) => Some(t.clone()),
        Content::Bytes(b) => String::from_utf8(b.clone()).ok(),
        Content::Copy(_) => None,
        Content::Remove => Some(String::new()),
    };
    let old_text = match &current {
        Now::Missing => Some(String::new()),
        Now::Text(t) => Some(t.clone()),
        Now::Binary(_) => None,
    };
    if let (Some(old), Some(new)) = (&old_text, &new_text) {
        let from = match current {
            Now::Missing => "/dev/null".to_string(),
            _ => format!("a{path}"),
        };
        let to = match c.content {
            Content::Remove => "/dev/null".to_string(),
            _ => format!("b{path}"),
        };
        let mut out = format!("# {} ({})\n", path, c.what);
        if old == new {
            // Only the permission bits differ.
            out.push_str(&format!("mode -> {:o}\n", c.mode));
            return Ok(out);
        }
        out.push_str(
            &TextDiff::from_lines(old, new)
                .unified_diff()
                .context_radius(3)
                .header(&from, &to)
                .to_string(),
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
        return Ok(out);
    }
    let size = match &current {
        Now::Missing => 0,
        Now::Text(t) => t.len() as u64,
        Now::Binary(n) => *n,
    };
    let before = match current {
        Now::Missing => "new".to_string(),
        Now::Text(_) => format!("replacing a {size} byte text file"),
        Now::Binary(_) => format!("replacing a different {size} byte file"),
    };
    Ok(match &c.content {
        Content::Copy(src) => {
            let len = fs::metadata(src)
                .with_context(|| format!("reading {}", src.display()))?
                .len();
            let sha =
                record::sha256_file(src).with_context(|| format!("reading {}", src.display()))?;
            format!(
                "# {path} ({}): would copy {} ({len} bytes, sha256 {sha}), {before}\n",
                c.what,
                src.display()
            )
        }
        Content::Remove => format!("# {path} ({}): would remove it ({size} bytes)\n", c.what),
        Content::Bytes(b) => format!(
            "# {path} ({}): would write {} bytes, {before}\n",
            c.what,
            b.len()
        ),
        Content::Text(t) => format!(
            "# {path} ({}): would write {} bytes of text, {before}\n",
            c.what,
            t.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn change(path: &Path, content: Content) -> Change {
        Change {
            path: path.to_path_buf(),
            content,
            mode: 0o644,
            what: "test file",
        }
    }

    #[test]
    fn text_changes_are_unified_diffs_and_binaries_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        fs::write(&p, "a = 1\nb = 2\n").unwrap();
        let d = super::change(&change(&p, Content::Text("a = 1\nb = 3\n".into()))).unwrap();
        let path = p.display().to_string();
        assert!(d.contains(&format!("--- a{path}\n+++ b{path}\n")), "{d}");
        assert!(
            d.contains("@@ -1,2 +1,2 @@\n a = 1\n-b = 2\n+b = 3\n"),
            "{d}"
        );
        let new = dir.path().join("n.toml");
        let d = super::change(&change(&new, Content::Text("x\n".into()))).unwrap();
        assert!(d.contains("--- /dev/null\n") && d.contains("+x\n"), "{d}");
        let d = super::change(&change(&p, Content::Remove)).unwrap();
        assert!(
            d.contains("+++ /dev/null\n") && d.contains("-b = 2\n"),
            "{d}"
        );
        let src = dir.path().join("bin");
        fs::write(&src, [0xffu8, 0, 1]).unwrap();
        let d = super::change(&change(&dir.path().join("moat"), Content::Copy(src))).unwrap();
        assert!(
            d.contains("would copy") && d.contains("(3 bytes, sha256 "),
            "{d}"
        );
        assert!(d.ends_with("new\n"), "{d}");
        let same = super::change(&change(&p, Content::Text("a = 1\nb = 2\n".into()))).unwrap();
        assert_eq!(same, "", "an unchanged file has no diff");
    }
}
