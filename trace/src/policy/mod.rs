//! The trace policy: which paths a workload may read, write, execute or create, which sockets it may
//! open, which programs it may run, and what happens to individual system calls.
//!
//! A policy is a TOML file (documented with examples in `trace/policies/`). It is parsed, checked
//! and compiled here, before any workload starts: an unknown key, a malformed rule, a path that is
//! not absolute or two rules that contradict each other are reported with the file, line, column
//! and reason. Unless it says `base = "none"`, a file refines the built-in default policy
//! ([`DEFAULT_TOML`]): its rules replace the default's rules for the same path, section or call.

mod compile;
pub mod errno;
mod file;
mod pattern;
mod rights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use pattern::Pattern;
pub use rights::Rights;

/// The built-in default policy, as shipped in `trace/policies/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../policies/default.toml");

/// A policy error: the file could not be read, or says something wrong (with where and why).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading policy {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("{file}:{line}:{column}: {reason}")]
    Invalid {
        /// The file (or `builtin default policy`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// A `Result` with the policy [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What happens to a system call a policy names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// Run it (without stopping, unless other rules police it).
    Allow,
    /// Run it (subject to any other rule) and log it.
    Log,
    /// Fail it with this errno, and log it.
    Errno(i32),
    /// Kill the whole process, and log it.
    Kill,
}

/// A compiled `[[paths]]` rule.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PathRule {
    /// What it covers.
    pub pattern: Pattern,
    /// What it grants.
    pub rights: Rights,
    /// What a denied call gets.
    pub errno: i32,
    /// Log every call it decides.
    pub log: bool,
    /// `file:line`, for logs and errors.
    pub origin: String,
}

/// The compiled `[network]` section.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Network {
    /// Address families allowed (`None`: any).
    pub families: Option<Vec<i32>>,
    /// Raw (`SOCK_RAW`) and packet (`AF_PACKET`) sockets allowed.
    pub raw: bool,
    /// `file:line`, or `built in`.
    pub origin: String,
}

impl Network {
    /// True if sockets of this family and type may be created.
    pub fn allows(&self, family: i32, ty: i32) -> bool {
        let raw = family == libc::AF_PACKET || (ty & 0xf) == libc::SOCK_RAW;
        if raw && !self.raw {
            return false;
        }
        self.families.as_ref().is_none_or(|f| f.contains(&family))
    }

    /// True if the section restricts anything (so `socket` must be checked).
    pub fn restricts(&self) -> bool {
        self.families.is_some() || !self.raw
    }
}

/// An `[exec]` allow-list entry.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExecEntry {
    /// A program, or a directory whose programs may run.
    pub pattern: Pattern,
    /// `file:line`.
    pub origin: String,
}

/// A compiled `[syscalls]` entry.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SyscallRule {
    /// The call's name.
    pub name: String,
    /// What happens.
    pub action: Action,
    /// `file:line`.
    pub origin: String,
}

/// A checked, compiled policy. Serialisable, so a front end can check it and hand it to the
/// supervisor process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Path rules, most specific first.
    pub paths: Vec<PathRule>,
    /// Socket rules.
    pub network: Network,
    /// The exec allow-list (`None`: any program the path rules let execute).
    pub exec: Option<Vec<ExecEntry>>,
    /// Per-syscall actions, by number.
    pub syscalls: BTreeMap<u32, SyscallRule>,
    /// Where the policy came from.
    pub source: String,
}

impl Policy {
    /// The built-in default policy.
    pub fn builtin() -> Result<Policy> {
        compile::compile(None, "builtin default policy")
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks a policy given as text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Policy> {
        compile::compile(Some(text), file)
    }

    /// The most specific path rule covering `path` (absolute, canonical), if any. A path no rule
    /// covers gets no rights.
    pub fn rule_for(&self, path: &[u8]) -> Option<&PathRule> {
        self.paths.iter().find(|r| r.pattern.matches(path))
    }

    /// The rights on `path`.
    pub fn rights(&self, path: &[u8]) -> Rights {
        self.rule_for(path).map_or(Rights::NONE, |r| r.rights)
    }

    /// True if the exec allow-list lets `path` run (always true without a list).
    pub fn exec_listed(&self, path: &[u8]) -> bool {
        self.exec
            .as_ref()
            .is_none_or(|list| list.iter().any(|e| e.pattern.matches(path)))
    }

    /// The explicit action for system call `nr`, if the policy names it.
    pub fn action(&self, nr: u32) -> Option<&SyscallRule> {
        self.syscalls.get(&nr)
    }
}

#[cfg(test)]
mod tests;
