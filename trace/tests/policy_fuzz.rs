//! Bad input for the policy parser ([`Policy::parse`]): arbitrary text, TOML-shaped documents of
//! any shape, deeply nested and huge documents, mutated shipped policies and valid policies with
//! one defect each. None of them panics, hangs or allocates without bound; every refusal is
//! `file:line:column: reason` pointing into the document and naming what is wrong; valid policies
//! still compile to what they say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use moat_testkit::bounded::{self, Failure};
use moat_trace::Policy;
use moat_trace::policy::{Action, Error, Rights, errno};
use proptest::prelude::*;

/// The name errors give the document.
const FILE: &str = "fuzz.toml";
/// Longest a single parse may take (release build; a hang or a blow-up trips it).
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Most bytes a single parse may allocate in total, per input byte (plus a fixed floor).
const ALLOC_PER_BYTE: u64 = 4096;
const ALLOC_FLOOR: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Bounded runs: every parse runs on its own thread, with a deadline and its allocations counted.

#[global_allocator]
static GLOBAL: moat_testkit::bounded::Counting = moat_testkit::bounded::Counting;

/// What a bounded parse gave.
struct Outcome {
    result: Result<Policy, Error>,
    text: String,
}

/// Parses `text` on a fresh thread (the 8 MiB stack `moat-trace`'s main thread has), failing the
/// test if it takes longer than [`TIME_LIMIT`], panics, or allocates more than the bound.
fn parse_bounded(text: String) -> Outcome {
    let input = text.clone();
    let ran = bounded::run(TIME_LIMIT, move || Policy::parse(&input, FILE));
    let (result, used) = match ran {
        Ok(v) => v,
        Err(Failure::TimedOut) => panic!(
            "parse took longer than {TIME_LIMIT:?} on a {}-byte document starting {:?}",
            text.len(),
            text.chars().take(200).collect::<String>()
        ),
        Err(Failure::Panicked) => panic!(
            "parse panicked on a {}-byte document starting {:?}",
            text.len(),
            text.chars().take(200).collect::<String>()
        ),
    };
    let bound = ALLOC_FLOOR + ALLOC_PER_BYTE * text.len() as u64;
    assert!(
        used <= bound,
        "parse allocated {used} bytes (bound {bound}) for a {}-byte document",
        text.len()
    );
    Outcome { result, text }
}

/// Checks the shape of a refusal: `fuzz.toml:L:C: reason`, with L and C inside the document.
fn check_error(text: &str, e: &Error) -> (usize, String) {
    let Error::Invalid {
        file,
        line,
        column,
        reason,
    } = e
    else {
        panic!("parsing text gave a read error: {e}");
    };
    assert_eq!(file, FILE, "{e}");
    assert!(
        !reason.trim().is_empty(),
        "empty reason: {e}\ndocument: {text:?}"
    );
    assert!(!reason.contains('\n'), "reason on several lines: {e:?}");
    assert_eq!(e.to_string(), format!("{FILE}:{line}:{column}: {reason}"));
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        *line >= 1 && *line <= lines.len(),
        "line {line} outside a {}-line document: {e}",
        lines.len()
    );
    let len = lines[line - 1].len();
    assert!(
        *column >= 1 && *column <= len + 1,
        "column {column} outside line {line} ({len} bytes): {e}"
    );
    (*line, reason.clone())
}

/// Parses `text`; a refusal must be well formed. Returns the policy, or (line, reason).
fn outcome(text: String) -> Result<Policy, (usize, String)> {
    let o = parse_bounded(text);
    o.result.map_err(|e| check_error(&o.text, &e))
}

/// A compiled policy's invariants, whatever document it came from.
fn check_policy(p: &Policy) {
    for r in &p.paths {
        let s = r.pattern.as_str();
        assert!(s.starts_with('/'), "{s:?} not absolute");
        assert!(!s.contains('\0'), "{s:?} has a NUL");
        assert!(s == "/" || !s.ends_with('/'), "{s:?} has a trailing /");
        assert!(
            !s.split('/').skip(1).any(|c| c.is_empty() && s != "/"),
            "{s:?} has an empty component"
        );
        assert!(
            !s.split('/').any(|c| c == "." || c == ".."),
            "{s:?} not normalised"
        );
        assert!(s.len() < libc::PATH_MAX as usize, "{s:?} too long");
    }
    // Rules are sorted most specific first.
    for w in p.paths.windows(2) {
        assert!(w[0].pattern.specificity() >= w[1].pattern.specificity());
    }
    if let Some(list) = &p.exec {
        for e in list {
            assert!(
                p.rights(e.pattern.as_str().as_bytes())
                    .contains(Rights::EXEC),
                "exec entry {} cannot run",
                e.pattern
            );
        }
    }
    for (nr, rule) in &p.syscalls {
        assert_eq!(moat_trace::syscalls::nr(&rule.name), Some(*nr));
    }
    // The compiled policy travels to the supervisor as JSON: it must survive that.
    let json = serde_json::to_string(p).unwrap();
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back.paths.len(), p.paths.len());
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: what a policy may say, and what it should not.

const KEYS: &[&str] = &[
    "base", "paths", "path", "allow", "deny", "errno", "log", "network", "enabled", "families",
    "raw", "exec", "syscalls", "getpid", "keyctl", "ptrace", "openat", "clone", "socket",
];
const RIGHTS: &[&str] = &["read", "write", "exec", "create", "all"];
const ERRNOS: &[&str] = &["EPERM", "ENOENT", "EACCES", "EROFS", "ENOSYS", "EIO"];
const FAMILIES: &[&str] = &["unix", "inet", "inet6", "netlink", "vsock", "alg", "can"];
/// System calls the trace backend does not police, so any action is fine.
const FREE_CALLS: &[&str] = &[
    "getpid",
    "uname",
    "keyctl",
    "personality",
    "bpf",
    "acct",
    "sync",
    "getuid",
    "kill",
    "add_key",
];
const FREE_ACTIONS: &[&str] = &["allow", "log", "kill", "EPERM", "ENOSYS", "EACCES"];

/// Strings a fuzzer would put where paths and names go.
const NASTY: &[&str] = &[
    "/",
    "/etc",
    "/etc/",
    "etc",
    "",
    ".",
    "..",
    "/a/../b",
    "/a/./b",
    "//",
    "/a//b",
    "/proc/*/mem",
    "/proc/*x/mem",
    "*",
    "/*",
    "/\0",
    "/a\0b",
    "~/x",
    "./x",
    "read",
    "write",
    "exec",
    "create",
    "all",
    "none",
    "default",
    "EPERM",
    "eperm",
    "allow",
    "log",
    "kill",
    "inet",
    "packet",
    "unix",
    "/dev/kvm",
    "\u{feff}/x",
    "/\u{e9}t\u{e9}",
    "/\u{1F980}",
    "/a b",
    "/a\nb",
    "/a\"b",
    "/a\\b",
];

/// [`NASTY`] strings, random paths and patterns, any string, huge paths.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY).prop_map(String::from),
        1 => "/[a-z*.]{0,6}(/[a-z*.]{0,6}){0,4}",
        1 => any::<String>(),
        1 => (1usize..6000).prop_map(|n| format!("/{}", "a".repeat(n))),
        1 => (1usize..300).prop_map(|n| "/x".repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(String::from),
        1 => "[a-z_]{1,12}",
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        4 => nasty_string().prop_map(toml::Value::String),
        1 => any::<i64>().prop_map(toml::Value::Integer),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => any::<f64>().prop_map(toml::Value::Float),
    ]
}

/// Any TOML value, nested up to 8 levels.
fn value() -> impl Strategy<Value = toml::Value> {
    leaf().prop_recursive(8, 256, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(toml::Value::Array),
            proptest::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", q.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Valid policies, generated with what they should compile to.

#[derive(Clone, Debug)]
struct RuleSpec {
    path: String,
    /// `true`: `allow = list`; `false`: `deny = list`.
    allow: bool,
    list: Vec<String>,
    errno: Option<String>,
    log: bool,
}

impl RuleSpec {
    fn rights(&self) -> Rights {
        let named = self
            .list
            .iter()
            .map(|n| Rights::from_name(n).unwrap())
            .fold(Rights::NONE, Rights::union);
        if self.allow {
            named
        } else {
            Rights::ALL.minus(named)
        }
    }
}

#[derive(Clone, Debug)]
struct NetSpec {
    enabled: Option<bool>,
    families: Option<Vec<String>>,
    raw: Option<bool>,
}

#[derive(Clone, Debug)]
struct PolicySpec {
    base_none: Option<bool>,
    rules: Vec<RuleSpec>,
    exec: Option<Vec<String>>,
    network: Option<NetSpec>,
    syscalls: BTreeMap<String, String>,
    /// Extra lines that must appear in a block (defects), by block name.
    extra: BTreeMap<String, Vec<String>>,
    /// Extra blocks appended at the end (defects).
    tail: Vec<Vec<String>>,
}

/// A rendered document: its text and the (first, last) line of each named block.
struct Rendered {
    text: String,
    blocks: BTreeMap<String, (usize, usize)>,
}

impl PolicySpec {
    fn render(&self) -> Rendered {
        let mut lines: Vec<String> = vec!["# generated".into()];
        let mut blocks = BTreeMap::new();
        let mut block = |name: String, body: Vec<String>, lines: &mut Vec<String>| {
            lines.push(String::new());
            let first = lines.len() + 1;
            lines.extend(body);
            blocks.insert(name, (first, lines.len()));
        };
        let extra = |name: &str| self.extra.get(name).cloned().unwrap_or_default();
        let mut top = Vec::new();
        match self.base_none {
            Some(true) => top.push("base = \"none\"".to_string()),
            Some(false) => top.push("base = \"default\"".to_string()),
            None => {}
        }
        top.extend(extra("top"));
        if !top.is_empty() {
            block("top".into(), top, &mut lines);
        }
        for (i, r) in self.rules.iter().enumerate() {
            let mut b = vec![
                "[[paths]]".to_string(),
                format!("path = {}", toml_string(&r.path)),
            ];
            let word = if r.allow { "allow" } else { "deny" };
            b.push(format!("{word} = {}", toml_list(&r.list)));
            if let Some(e) = &r.errno {
                b.push(format!("errno = {}", toml_string(e)));
            }
            if r.log {
                b.push("log = true".into());
            }
            b.extend(extra(&format!("rule{i}")));
            block(format!("rule{i}"), b, &mut lines);
        }
        if let Some(e) = &self.exec {
            let mut b = vec!["[exec]".to_string(), format!("allow = {}", toml_list(e))];
            b.extend(extra("exec"));
            block("exec".into(), b, &mut lines);
        }
        if let Some(n) = &self.network {
            let mut b = vec!["[network]".to_string()];
            if let Some(e) = n.enabled {
                b.push(format!("enabled = {e}"));
            }
            if let Some(f) = &n.families {
                b.push(format!("families = {}", toml_list(f)));
            }
            if let Some(r) = n.raw {
                b.push(format!("raw = {r}"));
            }
            b.extend(extra("network"));
            block("network".into(), b, &mut lines);
        }
        if !self.syscalls.is_empty() || self.extra.contains_key("syscalls") {
            let mut b = vec!["[syscalls]".to_string()];
            for (k, v) in &self.syscalls {
                b.push(format!("{k} = {}", toml_string(v)));
            }
            b.extend(extra("syscalls"));
            block("syscalls".into(), b, &mut lines);
        }
        for (i, t) in self.tail.iter().enumerate() {
            block(format!("tail{i}"), t.clone(), &mut lines);
        }
        let mut text = lines.join("\n");
        text.push('\n');
        Rendered { text, blocks }
    }

    /// Checks that `p` is what this spec says.
    fn check(&self, p: &Policy) {
        for r in &self.rules {
            let rule = p.rule_for(r.path.as_bytes()).unwrap();
            assert_eq!(rule.pattern.as_str(), r.path, "most specific rule");
            assert_eq!(rule.rights, r.rights(), "rights of {}", r.path);
            let want = r
                .errno
                .as_deref()
                .map_or(13, |e| errno::from_name(e).unwrap());
            assert_eq!(rule.errno, want, "errno of {}", r.path);
            assert_eq!(rule.log, r.log, "log of {}", r.path);
        }
        if self.base_none == Some(true) {
            assert_eq!(p.paths.len(), self.rules.len(), "base = none adds nothing");
        } else {
            // The default's rule for / is there unless replaced.
            assert!(p.rule_for(b"/").is_some());
        }
        match &self.exec {
            Some(list) => assert_eq!(p.exec.as_ref().map(Vec::len), Some(list.len())),
            None => assert!(p.exec.is_none()),
        }
        if let Some(n) = &self.network {
            let enabled = n.enabled.unwrap_or(true);
            let raw = n.raw.unwrap_or(false);
            assert_eq!(p.network.raw, raw);
            let inet_ok = enabled
                && n.families
                    .as_ref()
                    .is_none_or(|f| f.iter().any(|x| x == "inet"));
            assert_eq!(
                p.network.allows(libc::AF_INET, libc::SOCK_STREAM),
                inet_ok,
                "{n:?}"
            );
            if !enabled {
                assert_eq!(
                    p.network.families.as_deref(),
                    Some(&[libc::AF_UNIX][..]),
                    "unix only"
                );
            }
        }
        for (name, action) in &self.syscalls {
            let nr = moat_trace::syscalls::nr(name).unwrap();
            let got = p.action(nr).unwrap().action;
            let want = match action.as_str() {
                "allow" => Action::Allow,
                "log" => Action::Log,
                "kill" => Action::Kill,
                e => Action::Errno(errno::from_name(e).unwrap()),
            };
            assert_eq!(got, want, "{name}");
        }
    }
}

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9_-][a-z0-9_.-]{0,7}"
}

fn valid_path() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("/".to_string()),
        8 => proptest::collection::vec(component(), 1..5).prop_map(|c| format!("/{}", c.join("/"))),
    ]
}

fn rule_spec(path: String) -> impl Strategy<Value = RuleSpec> {
    (
        any::<bool>(),
        proptest::collection::vec(prop::sample::select(RIGHTS), 0..5),
        proptest::option::of(prop::sample::select(ERRNOS)),
        any::<bool>(),
    )
        .prop_map(move |(allow, list, errno, log)| RuleSpec {
            path: path.clone(),
            allow,
            list: list.into_iter().map(String::from).collect(),
            errno: errno.map(String::from),
            log,
        })
}

fn rules(max: usize) -> impl Strategy<Value = Vec<RuleSpec>> {
    proptest::collection::btree_set(valid_path(), 0..max).prop_flat_map(|paths| {
        paths
            .into_iter()
            .map(rule_spec)
            .collect::<Vec<_>>()
            .prop_shuffle()
    })
}

fn net_spec() -> impl Strategy<Value = NetSpec> {
    prop_oneof![
        1 => Just(NetSpec { enabled: Some(false), families: None, raw: None }),
        1 => Just(NetSpec { enabled: Some(false), families: None, raw: Some(false) }),
        4 => (
            proptest::option::of(Just(true)),
            proptest::option::of(proptest::collection::vec(prop::sample::select(FAMILIES), 0..5)),
            proptest::option::of(any::<bool>()),
            any::<bool>(),
        )
            .prop_map(|(enabled, families, raw, packet)| {
                let mut families: Option<Vec<String>> =
                    families.map(|f| f.into_iter().map(String::from).collect());
                if packet && raw == Some(true) {
                    families.get_or_insert_with(Vec::new).push("packet".into());
                }
                NetSpec { enabled, families, raw }
            }),
    ]
}

fn policy_spec(max_rules: usize) -> impl Strategy<Value = PolicySpec> {
    (
        proptest::option::of(any::<bool>()),
        rules(max_rules),
        proptest::option::of(net_spec()),
        proptest::collection::btree_map(
            prop::sample::select(FREE_CALLS).prop_map(String::from),
            prop::sample::select(FREE_ACTIONS).prop_map(String::from),
            0..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(base_none, rules, network, syscalls, with_exec)| {
            // Exec entries: paths whose own rule grants exec (the most specific rule for a path
            // is its own).
            let exec = with_exec.then(|| {
                rules
                    .iter()
                    .filter(|r| r.rights().contains(Rights::EXEC))
                    .map(|r| r.path.clone())
                    .collect()
            });
            PolicySpec {
                base_none,
                rules,
                exec,
                network,
                syscalls,
                extra: BTreeMap::new(),
                tail: Vec::new(),
            }
        })
}

// ---------------------------------------------------------------------------------------------
// One defect each, with the words the refusal must contain and the block it must point into.

#[derive(Clone, Copy, Debug)]
enum Defect {
    Relative,
    Nul,
    DotDot,
    Dot,
    DoubleSlash,
    TrailingSlash,
    TooLong,
    PartialStar,
    UnknownRight,
    UnknownErrno,
    BothAllowDeny,
    Neither,
    Duplicate,
    UnknownRuleKey,
    WrongType,
    UnknownSyscall,
    BadAction,
    Fixed,
    Escape,
    BypassPaths,
    BypassNetwork,
    UnknownFamily,
    PacketWithoutRaw,
    DisabledWithFamilies,
    DisabledWithRaw,
    BadBase,
    ExecCannotRun,
    ExecRelative,
    UnknownSection,
    Ambiguous,
}

const DEFECTS: &[Defect] = &[
    Defect::Relative,
    Defect::Nul,
    Defect::DotDot,
    Defect::Dot,
    Defect::DoubleSlash,
    Defect::TrailingSlash,
    Defect::TooLong,
    Defect::PartialStar,
    Defect::UnknownRight,
    Defect::UnknownErrno,
    Defect::BothAllowDeny,
    Defect::Neither,
    Defect::Duplicate,
    Defect::UnknownRuleKey,
    Defect::WrongType,
    Defect::UnknownSyscall,
    Defect::BadAction,
    Defect::Fixed,
    Defect::Escape,
    Defect::BypassPaths,
    Defect::BypassNetwork,
    Defect::UnknownFamily,
    Defect::PacketWithoutRaw,
    Defect::DisabledWithFamilies,
    Defect::DisabledWithRaw,
    Defect::BadBase,
    Defect::ExecCannotRun,
    Defect::ExecRelative,
    Defect::UnknownSection,
    Defect::Ambiguous,
];

/// Puts `d` into `s` (at rule `pick` where it needs one); returns the words the refusal must
/// contain and the block it must point into.
fn inject(s: &mut PolicySpec, d: Defect, pick: usize) -> (Vec<&'static str>, String) {
    if s.rules.is_empty() {
        s.rules.push(RuleSpec {
            path: "/srv/data".into(),
            allow: true,
            list: vec!["read".into()],
            errno: None,
            log: false,
        });
        s.exec = s.exec.take().map(|_| Vec::new());
    }
    let i = pick % s.rules.len();
    let rule = format!("rule{i}");
    // A path defect: rule i's path changes, and the exec list must not name it any more.
    let repath = |s: &mut PolicySpec, p: String| {
        let old = std::mem::replace(&mut s.rules[i].path, p);
        if let Some(e) = &mut s.exec {
            e.retain(|x| *x != old);
        }
    };
    match d {
        Defect::Relative => {
            let p = s.rules[i].path.trim_start_matches('/').to_string();
            repath(s, p);
            (vec!["is not absolute"], rule)
        }
        Defect::Nul => {
            let p = format!("{}\0x", s.rules[i].path);
            repath(s, p);
            (vec!["NUL byte"], rule)
        }
        Defect::DotDot => {
            let p = format!("{}/..", s.rules[i].path.trim_end_matches('/'));
            repath(s, p);
            (vec!["\"..\"", "normalised"], rule)
        }
        Defect::Dot => {
            let p = format!("{}/./x", s.rules[i].path.trim_end_matches('/'));
            repath(s, p);
            (vec!["\".\"", "normalised"], rule)
        }
        Defect::DoubleSlash => {
            let p = format!("/{}", s.rules[i].path);
            repath(s, p);
            (vec!["empty component"], rule)
        }
        Defect::TrailingSlash => {
            let p = format!("{}/", s.rules[i].path);
            repath(s, p);
            (vec!["empty component"], rule)
        }
        Defect::TooLong => {
            let p = format!("/{}", "x".repeat(5000));
            repath(s, p);
            (vec!["longer than PATH_MAX"], rule)
        }
        Defect::PartialStar => {
            let p = format!("{}/ab*", s.rules[i].path.trim_end_matches('/'));
            repath(s, p);
            (vec!["one whole component"], rule)
        }
        Defect::UnknownRight => {
            s.rules[i].list.push("append".into());
            (vec!["unknown right", "append"], rule)
        }
        Defect::UnknownErrno => {
            s.rules[i].errno = Some("EWHATEVER".into());
            (vec!["unknown errno", "EWHATEVER"], rule)
        }
        Defect::BothAllowDeny => {
            let other = if s.rules[i].allow { "deny" } else { "allow" };
            s.extra
                .entry(rule.clone())
                .or_default()
                .push(format!("{other} = [\"read\"]"));
            (vec!["both allow and deny"], rule)
        }
        Defect::Neither => {
            s.rules[i].list.clear();
            // Rendered as `allow = []`: replace the rule with one that says neither.
            let r = s.rules.remove(i);
            if let Some(e) = &mut s.exec {
                e.retain(|x| *x != r.path);
            }
            s.tail.push(vec![
                "[[paths]]".into(),
                format!("path = {}", toml_string(&r.path)),
            ]);
            (vec!["neither allow nor deny"], "tail0".into())
        }
        Defect::Duplicate => {
            let r = &s.rules[i];
            let word = if r.allow { "allow" } else { "deny" };
            s.tail.push(vec![
                "[[paths]]".into(),
                format!("path = {}", toml_string(&r.path)),
                format!("{word} = {}", toml_list(&r.list)),
            ]);
            (
                vec!["conflicting rules", "already has a rule"],
                "tail0".into(),
            )
        }
        Defect::UnknownRuleKey => {
            s.extra
                .entry(rule.clone())
                .or_default()
                .push("mode = \"0644\"".into());
            (vec!["unknown field", "mode"], rule)
        }
        Defect::WrongType => {
            s.rules[i].log = false;
            s.extra
                .entry(rule.clone())
                .or_default()
                .push("log = \"yes\"".into());
            (vec!["invalid type"], rule)
        }
        Defect::UnknownSyscall => {
            s.extra
                .entry("syscalls".into())
                .or_default()
                .push("not_a_call = \"log\"".into());
            (vec!["unknown system call", "not_a_call"], "syscalls".into())
        }
        Defect::BadAction => {
            s.syscalls.remove("getpid");
            s.extra
                .entry("syscalls".into())
                .or_default()
                .push("getpid = \"maybe\"".into());
            (vec!["unknown action", "maybe"], "syscalls".into())
        }
        Defect::Fixed => {
            s.syscalls.insert("ptrace".into(), "log".into());
            (vec!["ptrace", "always denied"], "syscalls".into())
        }
        Defect::Escape => {
            s.syscalls.insert("clone".into(), "allow".into());
            (vec!["clone", "escape the supervisor"], "syscalls".into())
        }
        Defect::BypassPaths => {
            s.syscalls.insert("openat".into(), "allow".into());
            (vec!["openat", "bypass the [[paths]]"], "syscalls".into())
        }
        Defect::BypassNetwork => {
            // The default (and any [network] without raw = true) forbids raw sockets:
            // `socket = "allow"` would bypass that.
            if let Some(n) = &mut s.network {
                n.raw = Some(false);
                if let Some(f) = &mut n.families {
                    f.retain(|x| x != "packet");
                }
            }
            s.syscalls.insert("socket".into(), "allow".into());
            (vec!["socket", "bypass the [network]"], "syscalls".into())
        }
        Defect::UnknownFamily => {
            s.network = Some(NetSpec {
                enabled: None,
                families: Some(vec!["inet".into(), "ipx".into()]),
                raw: None,
            });
            (vec!["unknown address family", "ipx"], "network".into())
        }
        Defect::PacketWithoutRaw => {
            s.network = Some(NetSpec {
                enabled: Some(true),
                families: Some(vec!["packet".into()]),
                raw: Some(false),
            });
            (vec!["packet sockets are raw"], "network".into())
        }
        Defect::DisabledWithFamilies => {
            s.network = Some(NetSpec {
                enabled: Some(false),
                families: Some(vec!["inet".into()]),
                raw: None,
            });
            (vec!["enabled = false", "families"], "network".into())
        }
        Defect::DisabledWithRaw => {
            s.network = Some(NetSpec {
                enabled: Some(false),
                families: None,
                raw: Some(true),
            });
            (vec!["enabled = false with raw = true"], "network".into())
        }
        Defect::BadBase => {
            s.base_none = None;
            s.extra
                .entry("top".into())
                .or_default()
                .push("base = \"strict\"".into());
            (vec!["base = \"strict\"", "\"none\""], "top".into())
        }
        Defect::ExecCannotRun => {
            s.rules.push(RuleSpec {
                path: "/opt/noexec-here".into(),
                allow: true,
                list: vec!["read".into()],
                errno: None,
                log: false,
            });
            s.exec
                .get_or_insert_with(Vec::new)
                .push("/opt/noexec-here".into());
            (vec!["/opt/noexec-here", "can never run"], "exec".into())
        }
        Defect::ExecRelative => {
            s.exec.get_or_insert_with(Vec::new).push("bin/sh".into());
            (vec!["is not absolute", "bin/sh"], "exec".into())
        }
        Defect::UnknownSection => {
            s.tail
                .push(vec!["[filesystem]".into(), "root = \"/\"".into()]);
            (vec!["unknown field", "filesystem"], "tail0".into())
        }
        Defect::Ambiguous => {
            s.tail.push(vec![
                "[[paths]]".into(),
                "path = \"/zz/*/a\"".into(),
                "allow = [\"read\"]".into(),
            ]);
            s.tail.push(vec![
                "[[paths]]".into(),
                "path = \"/zz/b/*\"".into(),
                "allow = [\"write\"]".into(),
            ]);
            (vec!["match the same paths equally well"], "tail1".into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of the shipped policies.

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, with: char },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
}

/// TOML punctuation, section headers, escapes, odd characters.
const SNIPPETS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "\"",
    "'",
    "=",
    "\n",
    ",",
    "#",
    "{",
    "}",
    "\\",
    "\\u0000",
    "[[paths]]\n",
    "[network]\n",
    "[syscalls]\n",
    "[exec]\n",
    "path = \"/x\"\n",
    "allow = [\"all\"]\n",
    "deny = []\n",
    "base = \"none\"\n",
    "log = true\n",
    "errno = \"EPERM\"\n",
    "ptrace = \"allow\"\n",
    "\"\"\"",
    "'''",
    "\r\n",
    "\t",
    "\u{0}",
    "\u{7f}",
    "\u{e9}",
    "\u{1F980}",
    "\u{feff}",
    "1979-05-27T07:32:00Z",
    "inf",
    "nan",
    "0x",
    "+",
    "..",
    "/..",
    "*",
];

fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SNIPPETS).prop_map(String::from),
        any::<String>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), snippet()).prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in muts {
        let n = chars.len().max(1);
        match m {
            Mutation::Delete { at, len } => {
                let a = at % n;
                let b = (a + len).min(chars.len());
                if a < b {
                    chars.drain(a..b);
                }
            }
            Mutation::Insert { at, text } => {
                let a = at % (chars.len() + 1);
                chars.splice(a..a, text.chars());
            }
            Mutation::Replace { at, with } => {
                if !chars.is_empty() {
                    chars[at % n] = *with;
                }
            }
            Mutation::DuplicateLine { line } | Mutation::SwapLines { a: line, .. } => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let l = line % lines.len();
                match m {
                    Mutation::SwapLines { b, .. } => {
                        let b = b % lines.len();
                        lines.swap(l, b);
                    }
                    _ => lines.insert(l, lines[l]),
                }
                chars = lines.join("\n").chars().collect();
            }
            Mutation::Truncate { at } => chars.truncate(at % n),
        }
    }
    chars.into_iter().collect()
}

fn shipped() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 3, "shipped policies not found");
    v
}

// ---------------------------------------------------------------------------------------------

/// `cases` cases (`PROPTEST_CASES` overrides), no regression files (this is not a lib crate).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text at all: a policy or a well-formed refusal.
    #[test]
    fn arbitrary_text(text in prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        proptest::collection::vec(snippet(), 0..64).prop_map(|v| v.concat()),
    ]) {
        if let Ok(p) = outcome(text) {
            check_policy(&p);
        }
    }

    /// TOML documents of any shape built from the policy's own keys and nasty values: accepted
    /// only if they compile to a policy with every invariant, otherwise a well-formed refusal.
    #[test]
    fn toml_shaped_documents(doc in proptest::collection::btree_map(key(), value(), 0..8)) {
        let table: toml::Table = doc.into_iter().collect();
        // Some shapes TOML cannot write (e.g. a table after a value in an array): nothing to test.
        let Ok(text) = toml::to_string(&table) else { return Ok(()); };
        if let Ok(p) = outcome(text) {
            check_policy(&p);
        }
    }

    /// The shipped policies, mutated a few characters or lines at a time.
    #[test]
    fn mutated_shipped_policies(
        which in any::<prop::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let files = shipped();
        let (_, text) = &files[which.index(files.len())];
        if let Ok(p) = outcome(mutate(text, &muts)) {
            check_policy(&p);
        }
    }

    /// Valid policies compile to exactly what they say.
    #[test]
    fn valid_policies_round_trip(spec in policy_spec(24)) {
        let r = spec.render();
        match outcome(r.text.clone()) {
            Ok(p) => {
                check_policy(&p);
                spec.check(&p);
            }
            Err((line, reason)) => panic!("valid policy refused at line {line}: {reason}\n{}", r.text),
        }
    }

    /// A valid policy with one defect is refused, and the refusal names the defect and points
    /// into the block that holds it.
    #[test]
    fn one_defect_is_named(
        spec in policy_spec(12),
        defect in prop::sample::select(DEFECTS),
        pick in any::<usize>(),
    ) {
        let mut spec = spec;
        let (words, block) = inject(&mut spec, defect, pick);
        let r = spec.render();
        match outcome(r.text.clone()) {
            Ok(_) => panic!("{defect:?} accepted:\n{}", r.text),
            Err((line, reason)) => {
                for w in &words {
                    prop_assert!(reason.contains(w), "{defect:?}: {w:?} not in {reason:?}\n{}", r.text);
                }
                let (first, last) = r.blocks[&block];
                prop_assert!(
                    (first..=last).contains(&line),
                    "{defect:?}: line {line} outside block {block} ({first}..={last}): {reason}\n{}",
                    r.text
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// Thousands of rules, a huge exec list and huge rights lists: accepted, in bounded time and
    /// memory.
    #[test]
    fn huge_valid_policies(n in 1000usize..3000, rights in 1000usize..20000) {
        let mut text = String::from("base = \"none\"\n");
        let list = vec!["\"read\""; rights].join(", ");
        text.push_str(&format!("[[paths]]\npath = \"/\"\nallow = [\"all\", {list}]\n"));
        let mut exec = Vec::new();
        for i in 0..n {
            text.push_str(&format!("[[paths]]\npath = \"/d{}/f{i}\"\nallow = [\"exec\"]\n", i % 37));
            exec.push(format!("\"/d{}/f{i}\"", i % 37));
        }
        text.push_str(&format!("[exec]\nallow = [{}]\n", exec.join(", ")));
        let p = outcome(text).unwrap_or_else(|(l, r)| panic!("line {l}: {r}"));
        prop_assert_eq!(p.paths.len(), n + 1);
        prop_assert_eq!(p.exec.as_ref().map(Vec::len), Some(n));
    }
}

/// Deep nesting: arrays, inline tables, dotted keys and table headers thousands of levels deep are
/// refused with a message, never a stack overflow.
#[test]
fn deep_nesting_is_refused() {
    for depth in [100usize, 1_000, 10_000, 100_000] {
        let docs = [
            format!("x = {}1{}", "[".repeat(depth), "]".repeat(depth)),
            format!("x = {}1{}", "{a = ".repeat(depth), "}".repeat(depth)),
            format!("{} = 1", vec!["a"; depth].join(".")),
            format!("[{}]", vec!["paths"; depth].join(".")),
            format!("[[paths]]\npath = \"/\"\nallow = {}]", "[".repeat(depth)),
            format!("[syscalls]\n{} = \"log\"", vec!["getpid"; depth].join(".")),
        ];
        for d in docs {
            let head: String = d.chars().take(40).collect();
            match outcome(d) {
                Ok(_) => panic!("depth {depth} accepted: {head}"),
                Err((_, reason)) => assert!(!reason.is_empty(), "{head}"),
            }
        }
    }
}

/// Long lines and many lines: errors still point at the right line and column.
#[test]
fn positions_in_long_documents() {
    let mut text = "# padding\n".repeat(5000);
    text.push_str(&format!("# {}\n", "x".repeat(100_000)));
    text.push_str("[[paths]]\npath = \"etc\"\nallow = []\n");
    let (line, reason) = outcome(text).unwrap_err();
    assert_eq!(line, 5003, "{reason}");
    assert!(reason.contains("not absolute"), "{reason}");
    // A multi-byte character before the error: columns count bytes, and stay inside the line.
    let text = "[[paths]]\npath = \"/\u{e9}\u{e9}\"\nallow = [\"\u{e9}\"]\n".to_string();
    let (line, reason) = outcome(text).unwrap_err();
    assert_eq!(line, 3, "{reason}");
    assert!(reason.contains("unknown right"), "{reason}");
}

/// The TOML parser's own messages become one clear line: never empty, never several lines.
#[test]
fn toml_syntax_errors_are_one_clear_line() {
    let (line, reason) = outcome("# a comment\nallow = ".into()).unwrap_err();
    assert_eq!(line, 2);
    assert!(reason.contains("not valid TOML"), "{reason}");
    let (_, reason) = outcome("[[paths]]\npath = \"/\"\nallow = [\n".into()).unwrap_err();
    assert_eq!(reason, "invalid array: expected `]`");
}
