//! The policy file as TOML spells it. Every table refuses unknown keys, and every value a check
//! can fail on keeps its span, so an error names the line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A list of strings with the span of each.
pub(super) type Strings = Spanned<Vec<Spanned<String>>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// `"default"` (the built-in policy, which this file's rules refine) or `"none"`.
    pub base: Option<Spanned<String>>,
    /// Path rules.
    #[serde(default)]
    pub paths: Vec<Spanned<PathRule>>,
    /// Socket rules.
    pub network: Option<Spanned<Network>>,
    /// The exec allow-list.
    pub exec: Option<Spanned<Exec>>,
    /// Per-syscall actions: `name = "allow" | "log" | "kill" | "<ERRNO>"`.
    #[serde(default)]
    pub syscalls: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// One `[[paths]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PathRule {
    /// The absolute path (or pattern) the rule covers, with everything below it.
    pub path: Spanned<String>,
    /// The rights granted (the others are denied).
    pub allow: Option<Strings>,
    /// The rights denied (the others are granted).
    pub deny: Option<Strings>,
    /// The errno a denied call gets (default `EACCES`).
    pub errno: Option<Spanned<String>>,
    /// Log every call this rule decides, allowed or not.
    #[serde(default)]
    pub log: bool,
}

/// `[network]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Network {
    /// `false`: no sockets but Unix ones.
    pub enabled: Option<Spanned<bool>>,
    /// Address families sockets may be created in.
    pub families: Option<Strings>,
    /// Raw and packet sockets.
    pub raw: Option<Spanned<bool>>,
}

/// `[exec]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Exec {
    /// Programs (or directories of programs) that may be executed.
    pub allow: Strings,
}
