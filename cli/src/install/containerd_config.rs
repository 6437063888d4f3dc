//! moat's runtime entries in containerd's `config.toml`: merged in without disturbing anything else
//! in the file (comments and formatting kept, by editing it with `toml_edit`), and taken out again.
//!
//! containerd 1.6 and 1.7 read config version 2, where the CRI runtimes live in
//! `plugins."io.containerd.grpc.v1.cri".containerd.runtimes`; containerd 2.x reads version 3, where
//! they moved to `plugins."io.containerd.cri.v1.runtime".containerd.runtimes`. The version is read
//! from the file's `version` key; a file without one is the deprecated version 1, which moat does
//! not edit.

use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

/// The runtime type every moat handler uses (containerd runs `containerd-shim-moat-v2`).
pub const RUNTIME_TYPE: &str = "io.containerd.moat.v2";
/// The pod annotations containerd passes to the shim (they may only narrow a handler's config).
pub const POD_ANNOTATIONS: &str = "moat.dev/*";

/// A containerd config version moat can edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `version = 2`: containerd 1.6 and 1.7 (2.x reads it too, migrating it on load).
    V2,
    /// `version = 3`: containerd 2.x.
    V3,
}

impl Version {
    /// The keys from the top of the file to the CRI plugin's `runtimes` table.
    pub fn runtimes_path(self) -> [&'static str; 4] {
        let plugin = match self {
            Version::V2 => "io.containerd.grpc.v1.cri",
            Version::V3 => "io.containerd.cri.v1.runtime",
        };
        ["plugins", plugin, "containerd", "runtimes"]
    }

    /// The number in the file's `version` key.
    pub fn number(self) -> i64 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// The version a containerd of release `release` (e.g. `1.6.20~ds1`, `v2.0.4`) reads natively.
    pub fn for_release(release: &str) -> Version {
        let major = release.trim_start_matches('v').split('.').next();
        match major.and_then(|m| m.parse::<u32>().ok()) {
            Some(m) if m >= 2 => Version::V3,
            _ => Version::V2,
        }
    }
}

/// Whether a containerd of release `release` ignores a runtime's `runtime_path` and runs the
/// first `containerd-shim-moat-v2` on its `PATH` instead: every release before 1.6.21 and 1.7.0
/// (its client never passed the path on; fixed in 1.6.21 and 1.7.1). Debian 12 ships 1.6.20.
pub fn ignores_runtime_path(release: &str) -> bool {
    let nums: Vec<u32> = release
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    match nums.as_slice() {
        [1, minor, _] if *minor < 6 => true,
        [1, 6, patch] => *patch <= 20,
        [1, 7, patch] => *patch == 0,
        _ => false,
    }
}

/// One handler's entry: `runtimes.<handler>` with moat's runtime type and its config path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The RuntimeClass handler (`moat-ns`, ...).
    pub handler: String,
    /// The comment written above a new entry (one `#` line per line).
    pub comment: String,
    /// The shim binary (`runtime_path`), absolute.
    pub runtime_path: PathBuf,
    /// The handler config (`options.ConfigPath`), absolute.
    pub config_path: PathBuf,
}

/// What was wrong with a containerd config, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not TOML.
    #[error(
        "{path} is not valid TOML, so moat cannot merge its runtimes into it: {message}fix the \
         file (containerd would not start with it either) or name another with \
         --containerd-config"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column).
        message: String,
    },
    /// The file has a config version moat does not edit.
    #[error(
        "{path} is containerd config {found}: moat edits version 2 (containerd 1.6/1.7) and \
         version 3 (containerd 2.x); convert it with `containerd config migrate` and add the \
         version key it prints"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// What the file says (`version 1 (no version key)`, `version = "x"`).
        found: String,
    },
    /// A table on the way to the runtimes is something else.
    #[error(
        "{path}: `{key}` is {found}, not a table, so moat cannot add its runtimes below it: \
         rewrite it as [{key}] sections"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What it is (`an inline table`, `a string`).
        found: &'static str,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The outcome of [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The new file text (equal to the input when nothing had to change).
    pub text: String,
    /// The version written to.
    pub version: Version,
    /// Handlers whose entries were added.
    pub added: Vec<String>,
    /// Handlers whose existing entries had some of moat's keys changed.
    pub updated: Vec<String>,
    /// Things the admin should know (e.g. the CRI plugin is disabled in this file).
    pub warnings: Vec<String>,
}

fn parse(text: &str, path: &Path) -> Result<DocumentMut> {
    text.parse::<DocumentMut>().map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The config version of a parsed file.
fn version_of(doc: &DocumentMut, path: &Path) -> Result<Version> {
    let err = |found: String| Error::Version {
        path: path.to_path_buf(),
        found,
    };
    match doc.get("version") {
        None => Err(err("version 1 (it has no `version` key)".into())),
        Some(item) => match item.as_integer() {
            Some(2) => Ok(Version::V2),
            Some(3) => Ok(Version::V3),
            Some(n) => Err(err(format!("version {n}"))),
            None => Err(err(format!("`version = {}`", item.to_string().trim()))),
        },
    }
}

/// The file's config version (for messages before anything is merged).
pub fn detect_version(text: &str, path: &Path) -> Result<Version> {
    version_of(&parse(text, path)?, path)
}

/// Merges `entries` into the config `text` read from `path`, or into a new file of version
/// `new_version` when `text` is `None`. An existing entry keeps every key moat does not set (and its
/// comments); moat's keys get moat's values. Merging twice gives the same text as merging once.
pub fn merge(
    text: Option<&str>,
    path: &Path,
    new_version: Version,
    entries: &[Entry],
) -> Result<Merged> {
    let (mut doc, version) = match text {
        Some(t) => {
            let doc = parse(t, path)?;
            let v = version_of(&doc, path)?;
            (doc, v)
        }
        None => {
            let mut doc = DocumentMut::new();
            doc.decor_mut().set_prefix(
                "# containerd config written by `moat install` (there was none); \
                 `moat uninstall` removes it.\n",
            );
            doc["version"] = toml_edit::value(new_version.number());
            (doc, new_version)
        }
    };
    let warnings = cri_warnings(&doc);
    let style = Style::of(&doc);
    let path_keys = version.runtimes_path();
    let runtimes = table_at(&mut doc, &path_keys, path)?;
    let mut added = Vec::new();
    let mut updated = Vec::new();
    for e in entries {
        match runtimes.get_mut(&e.handler) {
            Some(Item::Table(t)) => {
                if set_keys(t, e, None) {
                    updated.push(e.handler.clone());
                }
            }
            Some(other) => {
                return Err(Error::Shape {
                    path: path.to_path_buf(),
                    key: format!("{}.{}", path_keys.join("."), e.handler),
                    found: kind_of(other),
                });
            }
            None => {
                let depth = path_keys.len() + 1;
                let mut t = Table::new();
                let indent = style.header(depth);
                let comment: String = e
                    .comment
                    .lines()
                    .map(|l| format!("{indent}# {l}\n"))
                    .collect();
                t.decor_mut().set_prefix(format!("\n{comment}{indent}"));
                let indents = Indents {
                    keys: style.key(depth),
                    options_keys: style.key(depth + 1),
                };
                set_keys(&mut t, e, Some(&indents));
                if let Some(Item::Table(o)) = t.get_mut("options") {
                    o.decor_mut()
                        .set_prefix(format!("\n{}", style.header(depth + 1)));
                }
                runtimes.insert(&e.handler, Item::Table(t));
                added.push(e.handler.clone());
            }
        }
    }
    let mut out = doc.to_string();
    if text.is_none() && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(Merged {
        text: out,
        version,
        added,
        updated,
        warnings,
    })
}

/// Takes the entries of `handlers` out of the config `text` (for `moat uninstall` when the file
/// changed after `moat install`, so the original cannot simply be put back). Returns the new text
/// and the handlers that were there.
pub fn strip(text: &str, path: &Path, handlers: &[&str]) -> Result<(String, Vec<String>)> {
    let mut doc = parse(text, path)?;
    let version = version_of(&doc, path)?;
    let mut removed = Vec::new();
    let mut item: Option<&mut Item> = None;
    for (i, key) in version.runtimes_path().iter().enumerate() {
        item = if i == 0 {
            doc.get_mut(key)
        } else {
            item.and_then(|it| it.get_mut(key))
        };
    }
    if let Some(table) = item.and_then(Item::as_table_like_mut) {
        for h in handlers {
            if table.remove(h).is_some() {
                removed.push((*h).to_string());
            }
        }
    }
    let out = if removed.is_empty() {
        text.to_string()
    } else {
        doc.to_string()
    };
    Ok((out, removed))
}

/// The runtimes table, creating the tables on the way (as implicit tables, which print nothing of
/// their own).
fn table_at<'a>(doc: &'a mut DocumentMut, keys: &[&str], path: &Path) -> Result<&'a mut Table> {
    let mut table: &mut Table = doc.as_table_mut();
    for (i, key) in keys.iter().enumerate() {
        let item = table.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let found = kind_of(item);
        table = item.as_table_mut().ok_or_else(|| Error::Shape {
            path: path.to_path_buf(),
            key: keys[..=i].join("."),
            found,
        })?;
    }
    Ok(table)
}

fn kind_of(item: &Item) -> &'static str {
    match item {
        Item::None => "empty",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(Value::InlineTable(_)) => "an inline table",
        Item::Value(Value::Array(_)) => "an array",
        Item::Value(Value::String(_)) => "a string",
        Item::Value(_) => "a value",
    }
}

/// Indents for the keys of a new entry: its own, and those of its `options` table.
struct Indents {
    keys: String,
    options_keys: String,
}

/// Sets moat's keys in a runtime table; `indents` (for a new table) prefix each new key. Returns
/// whether anything changed. Values that already match are left alone, decor and all.
fn set_keys(t: &mut Table, e: &Entry, indents: Option<&Indents>) -> bool {
    let keys = indents.map(|i| i.keys.as_str());
    let mut annotations = Array::new();
    annotations.push(POD_ANNOTATIONS);
    let mut changed = set_value(t, "runtime_type", Value::from(RUNTIME_TYPE), keys);
    changed |= set_value(t, "runtime_path", path_value(&e.runtime_path), keys);
    changed |= set_value(t, "pod_annotations", Value::Array(annotations), keys);
    if !t.contains_key("options") {
        t.insert("options", Item::Table(Table::new()));
        changed = true;
    }
    if let Some(o) = t.get_mut("options").and_then(Item::as_table_like_mut) {
        let keys = indents.map(|i| i.options_keys.as_str());
        changed |= set_value(o, "ConfigPath", path_value(&e.config_path), keys);
    }
    changed
}

fn path_value(p: &Path) -> Value {
    Value::from(p.to_string_lossy().as_ref())
}

/// Sets `key` to `want` unless it already has that value; an old value keeps its surrounding
/// whitespace and comments, a new key gets `indent`. Returns whether anything changed.
fn set_value(t: &mut dyn TableLike, key: &str, want: Value, indent: Option<&str>) -> bool {
    if let Some(old) = t.get_mut(key).and_then(Item::as_value_mut) {
        if same_value(old, &want) {
            return false;
        }
        let decor = old.decor().clone();
        *old = want;
        *old.decor_mut() = decor;
        return true;
    }
    t.insert(key, Item::Value(want));
    if let (Some(indent), Some(mut k)) = (indent, t.key_mut(key)) {
        k.leaf_decor_mut().set_prefix(indent);
    }
    true
}

/// Whether two values are equal as containerd reads them (quoting and spacing aside).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.value() == y.value(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same_value(p, q))
        }
        (Value::Integer(x), Value::Integer(y)) => x.value() == y.value(),
        (Value::Boolean(x), Value::Boolean(y)) => x.value() == y.value(),
        _ => false,
    }
}

/// Warnings about the file as Kubernetes would use it: a disabled CRI plugin.
fn cri_warnings(doc: &DocumentMut) -> Vec<String> {
    let disabled = doc
        .get("disabled_plugins")
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|p| *p == "cri" || p.contains(".cri"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    disabled
        .into_iter()
        .map(|p| {
            format!(
                "disabled_plugins lists {p:?}: containerd's CRI plugin is off, so the kubelet \
                 cannot use containerd (or moat) until you remove it from that list"
            )
        })
        .collect()
}

/// How the file indents its table headers: `step` spaces per nesting level, as containerd's own
/// `config default` output does (2), or none.
struct Style {
    step: usize,
}

impl Style {
    /// Reads the indentation of the first nested table header that has one.
    fn of(doc: &DocumentMut) -> Style {
        fn walk(t: &Table, depth: usize) -> Option<usize> {
            for (_, item) in t.iter() {
                if let Item::Table(sub) = item {
                    if depth >= 1 && !sub.is_implicit() && sub.position().is_some() {
                        let indent = sub
                            .decor()
                            .prefix()
                            .and_then(|p| p.as_str())
                            .map(|p| p.rsplit('\n').next().unwrap_or(""))
                            .map(|last| last.len() - last.trim_start_matches(' ').len());
                        if let Some(n) = indent {
                            return Some(n / depth);
                        }
                    }
                    if let Some(s) = walk(sub, depth + 1) {
                        return Some(s);
                    }
                }
            }
            None
        }
        Style {
            step: walk(doc.as_table(), 0).unwrap_or(0),
        }
    }

    /// The indent of a header `depth` keys deep (`[a.b]` is depth 2).
    fn header(&self, depth: usize) -> String {
        " ".repeat(self.step * (depth - 1))
    }

    /// The indent of the keys inside a header `depth` keys deep.
    fn key(&self, depth: usize) -> String {
        " ".repeat(self.step * depth)
    }
}

#[cfg(test)]
mod tests;
