//! From TOML text to a checked [`Policy`]: parse, refine the base policy, check for conflicts.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::file::{self, File, Strings};
use super::{
    Action, DEFAULT_TOML, Error, ExecEntry, Network, PathRule, Pattern, Policy, Result, Rights,
    SyscallRule, errno,
};
use crate::syscalls::{self, Kind};

/// A text being compiled, to turn spans into `file:line:column`.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |i| before.len() - i - 1)
            + 1;
        (line, column)
    }

    fn err(&self, span: Range<usize>, reason: impl Into<String>) -> Error {
        let (line, column) = self.line_col(span.start);
        Error::Invalid {
            file: self.name.to_string(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn origin(&self, span: Range<usize>) -> String {
        format!("{}:{}", self.name, self.line_col(span.start).0)
    }
}

/// Rules gathered from the base and the file, before the conflict checks.
#[derive(Default)]
struct Builder {
    paths: Vec<(PathRule, Option<Range<usize>>)>,
    network: Option<Network>,
    exec: Option<Vec<ExecEntry>>,
    syscalls: BTreeMap<u32, (SyscallRule, Option<Range<usize>>)>,
}

/// Compiles `text` (`None`: just the built-in default), named `name` in errors.
pub(super) fn compile(text: Option<&str>, name: &str) -> Result<Policy> {
    let base = Source {
        name: "builtin default policy",
        text: DEFAULT_TOML,
    };
    let mut b = Builder::default();
    let Some(text) = text else {
        let f = parse(&base)?;
        b.add(&base, f, false)?;
        return b.finish(&base, name);
    };
    let src = Source { name, text };
    let f = parse(&src)?;
    match f.base.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("default", _)) => {
            let d = parse(&base)?;
            b.add(&base, d, false)?;
        }
        Some(("none", _)) => {}
        Some((other, span)) => {
            return Err(src.err(
                span,
                format!(
                    "base = {other:?}: use \"default\" (refine the built-in policy) or \"none\""
                ),
            ));
        }
    }
    b.add(&src, f, true)?;
    b.finish(&src, name)
}

fn parse(src: &Source) -> Result<File> {
    toml::from_str::<File>(src.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        src.err(span, toml_reason(e.message()))
    })
}

/// The TOML parser's message as one line (it may span several, or be empty: `allow = ` at the end
/// of a file has no message at all).
fn toml_reason(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if parts.is_empty() {
        "not valid TOML here: a value, key or closing bracket is missing".into()
    } else {
        parts.join(": ")
    }
}

fn rights_of(src: &Source, list: &Strings) -> Result<Rights> {
    let mut r = Rights::NONE;
    for s in list.get_ref() {
        let Some(x) = Rights::from_name(s.get_ref()) else {
            return Err(src.err(
                s.span(),
                format!(
                    "unknown right {:?}: use read, write, exec, create or all",
                    s.get_ref()
                ),
            ));
        };
        r = r.union(x);
    }
    Ok(r)
}

fn errno_of(src: &Source, s: &Spanned<String>) -> Result<i32> {
    errno::from_name(s.get_ref()).ok_or_else(|| {
        src.err(
            s.span(),
            format!(
                "unknown errno {:?}: use one of {}",
                s.get_ref(),
                errno::all()
            ),
        )
    })
}

fn family(name: &str) -> Option<i32> {
    Some(match name {
        "unix" => libc::AF_UNIX,
        "inet" => libc::AF_INET,
        "inet6" => libc::AF_INET6,
        "netlink" => libc::AF_NETLINK,
        "packet" => libc::AF_PACKET,
        "vsock" => libc::AF_VSOCK,
        "alg" => libc::AF_ALG,
        "can" => libc::AF_CAN,
        "bluetooth" => libc::AF_BLUETOOTH,
        "tipc" => libc::AF_TIPC,
        "xdp" => libc::AF_XDP,
        "key" => libc::AF_KEY,
        _ => return None,
    })
}

impl Builder {
    fn add(&mut self, src: &Source, f: File, user: bool) -> Result<()> {
        // Paths: a file's rule replaces the base's rule for the same path; twice in one file is a
        // conflict.
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for rule in &f.paths {
            let r = rule.get_ref();
            let text = r.path.get_ref();
            let pattern = Pattern::parse(text).map_err(|e| src.err(r.path.span(), e))?;
            if let Some(prev) = seen.get(text) {
                return Err(src.err(
                    rule.span(),
                    format!(
                        "conflicting rules: {text:?} already has a rule at line {}; merge them",
                        src.line_col(prev.start).0
                    ),
                ));
            }
            seen.insert(text.clone(), rule.span());
            let rights = match (&r.allow, &r.deny) {
                (Some(a), None) => rights_of(src, a)?,
                (None, Some(d)) => Rights::ALL.minus(rights_of(src, d)?),
                (Some(_), Some(_)) => {
                    return Err(src.err(
                        rule.span(),
                        format!("rule for {text:?} has both allow and deny: keep one of them"),
                    ));
                }
                (None, None) => {
                    return Err(src.err(
                        rule.span(),
                        format!(
                            "rule for {text:?} says neither allow nor deny: add allow = [...] \
                             (e.g. [\"read\"], [] for nothing) or deny = [...]"
                        ),
                    ));
                }
            };
            let errno = match &r.errno {
                Some(e) => errno_of(src, e)?,
                None => libc::EACCES,
            };
            let compiled = PathRule {
                pattern,
                rights,
                errno,
                log: r.log,
                origin: src.origin(rule.span()),
            };
            let span = user.then(|| rule.span());
            match self
                .paths
                .iter_mut()
                .find(|(p, _)| p.pattern.as_str() == text)
            {
                Some(slot) => *slot = (compiled, span),
                None => self.paths.push((compiled, span)),
            }
        }

        if let Some(n) = &f.network {
            self.network = Some(network(src, n)?);
        }

        if let Some(e) = &f.exec {
            let mut list = Vec::new();
            for s in e.get_ref().allow.get_ref() {
                let pattern = Pattern::parse(s.get_ref()).map_err(|m| src.err(s.span(), m))?;
                list.push(ExecEntry {
                    pattern,
                    origin: src.origin(s.span()),
                });
            }
            self.exec = Some(list);
        }

        for (name, action) in &f.syscalls {
            let Some(nr) = syscalls::nr(name.get_ref()) else {
                return Err(src.err(
                    name.span(),
                    format!(
                        "unknown system call {:?} (x86_64 names, as in syscall(2))",
                        name.get_ref()
                    ),
                ));
            };
            let a = match action.get_ref().as_str() {
                "allow" => Action::Allow,
                "log" => Action::Log,
                "kill" => Action::Kill,
                other => match errno::from_name(other) {
                    Some(e) => Action::Errno(e),
                    None => {
                        return Err(src.err(
                            action.span(),
                            format!(
                                "unknown action {other:?} for {}: use allow, log, kill or an errno \
                                 name such as EPERM",
                                name.get_ref()
                            ),
                        ));
                    }
                },
            };
            let rule = SyscallRule {
                name: name.get_ref().clone(),
                action: a,
                origin: src.origin(name.span()),
            };
            self.syscalls.insert(nr, (rule, user.then(|| name.span())));
        }
        Ok(())
    }

    /// Conflict checks over the merged rules; errors point into `src` (the user's file) when the
    /// offending rule came from it.
    fn finish(self, src: &Source, name: &str) -> Result<Policy> {
        let conflict = |span: &Option<Range<usize>>, reason: String| match span {
            Some(s) => src.err(s.clone(), reason),
            None => src.err(0..0, reason),
        };
        for (i, (a, sa)) in self.paths.iter().enumerate() {
            for (b, sb) in &self.paths[..i] {
                if a.pattern.ambiguous_with(&b.pattern)
                    && (a.rights != b.rights || a.errno != b.errno)
                {
                    let span = if sa.is_some() { sa } else { sb };
                    return Err(conflict(
                        span,
                        format!(
                            "conflicting rules: {} ({}) and {} ({}) match the same paths equally \
                             well but grant different rights; make one more specific",
                            a.pattern, a.origin, b.pattern, b.origin
                        ),
                    ));
                }
            }
        }
        let mut paths: Vec<PathRule> = self.paths.into_iter().map(|(p, _)| p).collect();
        // Most specific first; the sort is stable, so equal ones keep file order.
        paths.sort_by_key(|p| std::cmp::Reverse(p.pattern.specificity()));

        let network = self.network.unwrap_or(Network {
            families: None,
            raw: false,
            origin: "built in".into(),
        });

        let policy_so_far = Policy {
            paths,
            network,
            exec: self.exec,
            syscalls: BTreeMap::new(),
            source: name.to_string(),
        };
        if let Some(list) = &policy_so_far.exec {
            for e in list {
                let path = e.pattern.as_str().as_bytes();
                if !policy_so_far.rights(path).contains(Rights::EXEC) {
                    let by =
                        policy_so_far
                            .rule_for(path)
                            .map_or("no rule covers it".to_string(), |r| {
                                format!(
                                    "the rule for {} ({}) does not grant exec",
                                    r.pattern, r.origin
                                )
                            });
                    return Err(Error::Invalid {
                        file: src.name.to_string(),
                        line: origin_line(&e.origin),
                        column: 1,
                        reason: format!(
                            "conflicting rules: exec allow-list entry {} can never run: {by}",
                            e.pattern
                        ),
                    });
                }
            }
        }

        let mut syscalls = BTreeMap::new();
        for (nr, (rule, span)) in self.syscalls {
            let kind = syscalls::kind(nr);
            let loosens = matches!(rule.action, Action::Allow | Action::Log);
            match kind {
                Some(Kind::Fixed { why, .. }) if loosens => {
                    return Err(conflict(
                        &span,
                        format!(
                            "{} = \"{}\": {} is always denied under the trace backend ({why}); \
                             remove the line or give an errno",
                            rule.name,
                            action_name(rule.action),
                            rule.name
                        ),
                    ));
                }
                Some(Kind::Seccomp | Kind::Clone | Kind::Unshare)
                    if rule.action == Action::Allow =>
                {
                    return Err(conflict(
                        &span,
                        format!(
                            "{} = \"allow\" would let the workload escape the supervisor; remove it",
                            rule.name
                        ),
                    ));
                }
                Some(k) if rule.action == Action::Allow && k.uses_paths() => {
                    return Err(conflict(
                        &span,
                        format!(
                            "conflicting rules: {} = \"allow\" would bypass the [[paths]] rules \
                             that police it; use \"log\", or remove the line",
                            rule.name
                        ),
                    ));
                }
                Some(Kind::Socket | Kind::SocketPair)
                    if rule.action == Action::Allow && policy_so_far.network.restricts() =>
                {
                    return Err(conflict(
                        &span,
                        format!(
                            "conflicting rules: {} = \"allow\" would bypass the [network] rules \
                             ({}); change [network] instead",
                            rule.name, policy_so_far.network.origin
                        ),
                    ));
                }
                _ => {}
            }
            syscalls.insert(nr, rule);
        }
        Ok(Policy {
            syscalls,
            ..policy_so_far
        })
    }
}

fn origin_line(origin: &str) -> usize {
    origin
        .rsplit(':')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(1)
}

/// The action's name as a policy spells it.
pub(crate) fn action_name(a: Action) -> String {
    match a {
        Action::Allow => "allow".into(),
        Action::Log => "log".into(),
        Action::Kill => "kill".into(),
        Action::Errno(e) => errno::name(e),
    }
}

fn network(src: &Source, n: &Spanned<file::Network>) -> Result<Network> {
    let v = n.get_ref();
    let enabled = v.enabled.as_ref().is_none_or(|e| *e.get_ref());
    let raw = v.raw.as_ref().is_some_and(|r| *r.get_ref());
    if !enabled {
        if let Some(f) = &v.families {
            return Err(src.err(
                f.span(),
                "conflicting rules: enabled = false allows Unix sockets only, so a families \
                 list means nothing; drop one of them",
            ));
        }
        if raw {
            return Err(src.err(
                n.span(),
                "conflicting rules: enabled = false with raw = true; drop one of them",
            ));
        }
    }
    let families = match (&v.families, enabled) {
        (_, false) => Some(vec![libc::AF_UNIX]),
        (None, true) => None,
        (Some(list), true) => {
            let mut out = Vec::new();
            for s in list.get_ref() {
                let Some(f) = family(s.get_ref()) else {
                    return Err(src.err(
                        s.span(),
                        format!(
                            "unknown address family {:?}: use unix, inet, inet6, netlink, packet, \
                             vsock, alg, can, bluetooth, tipc, xdp or key",
                            s.get_ref()
                        ),
                    ));
                };
                if f == libc::AF_PACKET && !raw {
                    return Err(src.err(
                        s.span(),
                        "conflicting rules: packet sockets are raw sockets; add raw = true or \
                         drop \"packet\"",
                    ));
                }
                out.push(f);
            }
            Some(out)
        }
    };
    Ok(Network {
        families,
        raw,
        origin: src.origin(n.span()),
    })
}
