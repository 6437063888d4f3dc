//! Decisions for the calls that name paths: resolve each path as the tracee would (canonical,
//! in the container's view), check it against the policy, then pin the checked path in the
//! tracee's unwritable region and point the call at it (for `open*`, turned into `openat2` with
//! `RESOLVE_NO_SYMLINKS`, so a symlink swapped in afterwards fails the call instead of
//! redirecting it).

// A denial is an `Outcome` returned through `Err`; built once per stop, its size does not matter.
#![allow(clippy::result_large_err)]

use super::args::{read_bytes, read_path};
use super::call::{Ctx, Edits, Outcome, Pin, check, path_rule, q};
use crate::policy::Rights;
use crate::region::{SLOT_MISC, SLOT_PATH2};
use crate::resolve::{self, Errno, Resolved};
use crate::syscalls::{Follow, Kind, PathArg};

type R = Result<Outcome, Outcome>;

/// Decides a path call.
pub(super) fn decide(c: &Ctx, k: Kind) -> Outcome {
    let r = match k {
        Kind::Open {
            arg,
            flags,
            mode,
            how,
        } => open(c, arg, flags, mode, how),
        Kind::Exec { arg, flags } => exec(c, arg, flags),
        Kind::Path {
            arg,
            rights,
            follow,
            null_ok,
        } => single(c, arg, rights, follow, null_ok),
        Kind::Two {
            old,
            new,
            link,
            flags,
        } => two(c, old, new, link, flags),
        Kind::Symlink { target, link } => symlink(c, target, link),
        Kind::Mount => mount(c),
        Kind::Umount => umount(c),
        Kind::Connect => sock_addr(c, false),
        Kind::Bind => sock_addr(c, true),
        _ => Ok(Outcome::run()),
    };
    r.unwrap_or_else(|o| o)
}

/// A path argument after resolution.
struct Target {
    raw: Vec<u8>,
    /// The canonical path; `Err` for an object without one (pipe, socket, memfd, deleted file)
    /// reached through a descriptor.
    canon: Result<Vec<u8>, Errno>,
    exists: bool,
    /// The tracee's descriptor the path named (`/proc/self/fd/N`, or an empty path with
    /// `AT_EMPTY_PATH`).
    fd: Option<i32>,
}

impl Target {
    fn text(&self) -> String {
        match &self.canon {
            Ok(p) if *p != self.raw => format!("{} -> {}", q(&self.raw), q(p)),
            _ => q(&self.raw),
        }
    }
}

fn dirfd(c: &Ctx, arg: PathArg) -> Option<i32> {
    arg.dirfd.map(|i| c.args[i] as i32)
}

/// Reads and resolves a path argument. `empty_ok`: an empty path means the directory fd itself.
fn target(c: &Ctx, arg: PathArg, follow: bool, empty_ok: bool) -> Result<Target, Outcome> {
    let raw = read_path(c.who.tid, c.args[arg.path]).map_err(Outcome::fail)?;
    let dfd = dirfd(c, arg);
    if raw.is_empty() {
        if !empty_ok {
            return Err(Outcome::fail(libc::ENOENT));
        }
        let fd = dfd.unwrap_or(libc::AT_FDCWD);
        return Ok(Target {
            raw,
            canon: resolve::dir_of(&c.view, c.who, Some(fd)),
            exists: true,
            fd: Some(fd),
        });
    }
    match resolve::resolve(&c.view, c.who, dfd, &raw, follow) {
        Ok(Resolved::Path { path, exists }) => Ok(Target {
            raw,
            canon: Ok(path),
            exists,
            fd: None,
        }),
        Ok(Resolved::OwnFd(n)) => Ok(Target {
            raw,
            canon: resolve::dir_of(&c.view, c.who, Some(n)),
            exists: true,
            fd: Some(n),
        }),
        Err(e) => Err(Outcome::fail(e)),
    }
}

/// Copies `path` (plus NUL) into the caller's slot at `off`; `None` for trusted callers (whose
/// own memory needs no pinning).
fn pin(c: &Ctx, off: u64, path: &[u8]) -> Result<Option<u64>, Outcome> {
    match &c.pin {
        Pin::Trusted => Ok(None),
        Pin::Missing(why) => Err(Outcome::deny(libc::EPERM, format!("built in: {why}"))),
        Pin::Slot(r, s) => {
            let mut b = Vec::with_capacity(path.len() + 1);
            b.extend_from_slice(path);
            b.push(0);
            Ok(Some(r.pin(*s, off, &b)))
        }
    }
}

fn pin_raw(c: &Ctx, off: u64, bytes: &[u8]) -> Result<Option<u64>, Outcome> {
    match &c.pin {
        Pin::Trusted => Ok(None),
        Pin::Missing(why) => Err(Outcome::deny(libc::EPERM, format!("built in: {why}"))),
        Pin::Slot(r, s) => Ok(Some(r.pin(*s, off, bytes))),
    }
}

fn checked(c: &Ctx, path: &[u8], need: Rights, text: &str) -> Result<bool, Outcome> {
    check(c.policy, path, need).map_err(|o| o.with_args(text.to_string()))
}

fn logged(mut o: Outcome, c: &Ctx, log: bool, path: &[u8], text: String) -> Outcome {
    o.args = text;
    if log {
        o.log = true;
        o.rule = Some(path_rule(c.policy, path));
    }
    o
}

/// Kernel `VALID_OPEN_FLAGS`.
const VALID_OPEN: u64 = 0o3
    | 0o100
    | 0o200
    | 0o400
    | 0o1000
    | 0o2000
    | 0o4000
    | 0o10000
    | 0o20000
    | 0o40000
    | 0o100000
    | 0o200000
    | 0o400000
    | 0o1000000
    | 0o2000000
    | 0o4000000
    | 0o10000000
    | 0o20000000;

fn open(c: &Ctx, arg: PathArg, flags_i: Option<usize>, mode_i: usize, how: bool) -> R {
    let a = &c.args;
    let (flags, mode, res) = if how {
        let size = a[3];
        if size < 24 {
            return Err(Outcome::fail(libc::EINVAL));
        }
        if size > 4096 {
            return Err(Outcome::fail(libc::E2BIG));
        }
        let b = read_bytes(c.who.tid, a[2], size as usize).map_err(Outcome::fail)?;
        if b[24..].iter().any(|x| *x != 0) {
            return Err(Outcome::fail(libc::E2BIG));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        (word(0), word(8), word(16))
    } else if let Some(i) = flags_i {
        (a[i] & 0xffff_ffff, a[mode_i] & 0xffff_ffff, 0)
    } else {
        (
            (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64,
            a[mode_i],
            0,
        )
    };
    let f = flags as i32;
    let path_only = f & libc::O_PATH != 0;
    let acc = f & libc::O_ACCMODE;
    let mut need = Rights::NONE;
    if path_only {
        need = Rights::READ;
    } else {
        if acc == libc::O_RDONLY || acc == libc::O_RDWR {
            need = need.union(Rights::READ);
        }
        if acc == libc::O_WRONLY || acc == libc::O_RDWR || f & libc::O_TRUNC != 0 {
            need = need.union(Rights::WRITE);
        }
    }
    let tmpfile = !path_only && f & libc::O_TMPFILE == libc::O_TMPFILE;
    let creat = !path_only && f & libc::O_CREAT != 0;
    let excl = f & libc::O_EXCL != 0;
    let follow = f & libc::O_NOFOLLOW == 0 && !(creat && excl);
    if tmpfile {
        need = need.union(Rights::CREATE).union(Rights::WRITE);
    }
    let t = if res & (libc::RESOLVE_BENEATH | libc::RESOLVE_IN_ROOT) != 0 {
        beneath(c, arg, follow, res)?
    } else {
        target(c, arg, follow, false)?
    };
    let text = format!("{}, flags={flags:#o}", t.text());
    let canon = match (&t.canon, t.fd) {
        (Ok(p), _) => p.clone(),
        // A descriptor of an object without a path (pipe, socket, memfd): reopening it through
        // /proc/self/fd gives the same object, so duplicate the descriptor instead.
        (Err(_), Some(fd)) => {
            let cmd = if f & libc::O_CLOEXEC != 0 {
                libc::F_DUPFD_CLOEXEC
            } else {
                libc::F_DUPFD
            };
            let e = Edits {
                nr: Some(libc::SYS_fcntl as u64),
                args: [Some(fd as u64), Some(cmd as u64), Some(0), None, None, None],
            };
            return Ok(Outcome::edit(e).with_args(text));
        }
        (Err(e), None) => return Err(Outcome::fail(*e)),
    };
    let mut f2 = flags;
    if creat && !t.exists {
        need = need.union(Rights::CREATE);
    }
    if creat && t.exists && !excl {
        // It exists: open it without O_CREAT, so that if it vanishes meanwhile the call fails
        // rather than creating it where the policy may not grant create.
        f2 &= !(libc::O_CREAT as u64);
    }
    let log = checked(c, &canon, need, &text)?;
    let Some(p) = pin(c, 0, &canon)? else {
        return Ok(logged(Outcome::run(), c, log, &canon, text));
    };
    f2 &= if path_only {
        (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64
    } else {
        VALID_OPEN
    };
    let m = if f2 & (libc::O_CREAT | libc::O_TMPFILE) as u64 != 0 {
        mode & 0o7777
    } else {
        0
    };
    let r2 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | (res & libc::RESOLVE_CACHED);
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(&f2.to_le_bytes());
    h[8..16].copy_from_slice(&m.to_le_bytes());
    h[16..].copy_from_slice(&r2.to_le_bytes());
    let hp = pin_raw(c, SLOT_MISC, &h)?.unwrap_or(0);
    let e = Edits {
        nr: Some(libc::SYS_openat2 as u64),
        args: [
            Some(libc::AT_FDCWD as u64),
            Some(p),
            Some(hp),
            Some(24),
            None,
            None,
        ],
    };
    Ok(logged(Outcome::edit(e), c, log, &canon, text))
}

/// `openat2` with `RESOLVE_BENEATH` or `RESOLVE_IN_ROOT`: the path, resolved against the
/// directory fd as the root (`IN_ROOT`) or not allowed to leave it (`BENEATH`); anything that
/// ends outside it fails with `EXDEV`.
fn beneath(c: &Ctx, arg: PathArg, follow: bool, res: u64) -> Result<Target, Outcome> {
    let raw = read_path(c.who.tid, c.args[arg.path]).map_err(Outcome::fail)?;
    let base = resolve::dir_of(&c.view, c.who, dirfd(c, arg)).map_err(Outcome::fail)?;
    let rel: &[u8] = if res & libc::RESOLVE_IN_ROOT != 0 {
        let mut r = raw.as_slice();
        while let [b'/', rest @ ..] = r {
            r = rest;
        }
        r
    } else if raw.starts_with(b"/") {
        return Err(Outcome::fail(libc::EXDEV));
    } else {
        &raw
    };
    let mut abs = base.clone();
    abs.push(b'/');
    abs.extend_from_slice(rel);
    match resolve::resolve(&c.view, c.who, None, &abs, follow) {
        Ok(Resolved::Path { path, exists }) => {
            let inside = path == base
                || base == b"/"
                || (path.starts_with(&base) && path.get(base.len()) == Some(&b'/'));
            if !inside {
                return Err(Outcome::fail(libc::EXDEV));
            }
            Ok(Target {
                raw,
                canon: Ok(path),
                exists,
                fd: None,
            })
        }
        Ok(Resolved::OwnFd(_)) => Err(Outcome::fail(libc::EXDEV)),
        Err(e) => Err(Outcome::fail(e)),
    }
}

fn exec(c: &Ctx, arg: PathArg, flags_i: Option<usize>) -> R {
    let a = &c.args;
    let flags = flags_i.map_or(0, |i| a[i]);
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW as u64 == 0;
    let empty_ok = flags & libc::AT_EMPTY_PATH as u64 != 0;
    let t = target(c, arg, follow, empty_ok)?;
    if !t.exists {
        return Err(Outcome::fail(libc::ENOENT));
    }
    let text = t.text();
    let log = match &t.canon {
        Ok(p) => {
            let log = checked(c, p, Rights::EXEC, &text)?;
            if !c.policy.exec_listed(p) {
                return Err(Outcome::deny(
                    libc::EACCES,
                    format!("[exec] allow-list ({})", c.policy.source),
                )
                .with_args(text));
            }
            interpreters(c, p, 0).map_err(|o| o.with_args(text.clone()))?;
            log
        }
        Err(_) => {
            if c.policy.exec.is_some() || !c.policy.rights(b"/").contains(Rights::EXEC) {
                return Err(Outcome::deny(
                    libc::EACCES,
                    "built in: a program without a path (memfd, deleted file) runs only without \
                     an [exec] list and with exec on /"
                        .into(),
                )
                .with_args(text));
            }
            false
        }
    };
    let canon = t.canon.clone().unwrap_or_default();
    let (argv, envp) = match flags_i {
        Some(_) => (a[2], a[3]),
        None => (a[1], a[2]),
    };
    let mut e = Edits::default();
    if let Some(fd) = t.fd {
        // Run the descriptor itself (what /proc/self/fd/N names), with the empty path pinned.
        let Some(p) = pin(c, 0, b"")? else {
            return Ok(logged(Outcome::run(), c, log, &canon, text));
        };
        e.nr = Some(libc::SYS_execveat as u64);
        e.args = [
            Some(fd as u64),
            Some(p),
            Some(argv),
            Some(envp),
            Some(libc::AT_EMPTY_PATH as u64 | (flags & libc::AT_SYMLINK_NOFOLLOW as u64)),
            None,
        ];
    } else {
        // The program's own name as given when absolute (argv[0]-like uses of the name stay the
        // same); relative names become absolute, so no chdir can redirect them.
        let name = if t.raw.starts_with(b"/") {
            &t.raw
        } else {
            &canon
        };
        let Some(p) = pin(c, 0, name)? else {
            return Ok(logged(Outcome::run(), c, log, &canon, text));
        };
        match flags_i {
            None => e.args[0] = Some(p),
            Some(_) => {
                e.args[0] = Some(libc::AT_FDCWD as u64);
                e.args[1] = Some(p);
            }
        }
    }
    Ok(logged(Outcome::edit(e), c, log, &canon, text))
}

/// `#!` interpreters are run by the kernel without another `execve`: check them too.
fn interpreters(c: &Ctx, path: &[u8], depth: usize) -> Result<(), Outcome> {
    if depth >= 4 {
        return Ok(());
    }
    let Some(head) = c.view.read_head(path) else {
        return Ok(());
    };
    let Some(rest) = head.strip_prefix(b"#!") else {
        return Ok(());
    };
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let Some(interp) = line
        .split(|b| *b == b' ' || *b == b'\t')
        .find(|s| !s.is_empty())
    else {
        return Ok(());
    };
    match resolve::resolve(&c.view, c.who, None, interp, true) {
        Ok(Resolved::Path {
            path: ip,
            exists: true,
        }) => {
            check(c.policy, &ip, Rights::EXEC)?;
            if !c.policy.exec_listed(&ip) {
                return Err(Outcome::deny(
                    libc::EACCES,
                    format!(
                        "[exec] allow-list ({}): interpreter {}",
                        c.policy.source,
                        q(&ip)
                    ),
                ));
            }
            interpreters(c, &ip, depth + 1)
        }
        // The kernel will fail it (ENOENT/ENOEXEC) itself.
        _ => Ok(()),
    }
}

fn single(c: &Ctx, arg: PathArg, rights: Rights, follow: Follow, null_ok: bool) -> R {
    let a = &c.args;
    if null_ok && a[arg.path] == 0 {
        return Ok(Outcome::run());
    }
    let (follow, empty_ok) = match follow {
        Follow::Yes => (true, false),
        Follow::No => (false, false),
        Follow::AtFlags(i) => (
            a[i] & libc::AT_SYMLINK_NOFOLLOW as u64 == 0,
            a[i] & libc::AT_EMPTY_PATH as u64 != 0,
        ),
    };
    let t = target(c, arg, follow, empty_ok)?;
    let text = t.text();
    let mut e = Edits::default();
    if t.raw.is_empty() {
        // The descriptor itself, like the f*() variant of the call: not policed (see the threat
        // model), but the empty path is pinned so it cannot turn into a name.
        if let Some(p) = pin(c, 0, b"")? {
            e.args[arg.path] = Some(p);
        }
        return Ok(Outcome::edit(e).with_args(text));
    }
    let canon = match t.canon {
        Ok(p) => p,
        Err(_) => {
            return Err(Outcome::deny(
                libc::EACCES,
                "built in: a /proc/self/fd link to an object without a path".into(),
            )
            .with_args(text));
        }
    };
    let log = checked(c, &canon, rights, &text)?;
    if let Some(p) = pin(c, 0, &canon)? {
        e.args[arg.path] = Some(p);
        if let Some(d) = arg.dirfd {
            e.args[d] = Some(libc::AT_FDCWD as u64);
        }
    }
    Ok(logged(Outcome::edit(e), c, log, &canon, text))
}

fn below_rule(c: &Ctx, path: &[u8], text: &str) -> Result<(), Outcome> {
    if let Some(r) = c.policy.paths.iter().find(|r| r.pattern.is_below(path)) {
        return Err(Outcome::deny(
            libc::EACCES,
            format!(
                "[[paths]] {} ({}) lies below it: moving it would move the rule's files",
                r.pattern, r.origin
            ),
        )
        .with_args(text.to_string()));
    }
    Ok(())
}

fn two(c: &Ctx, old: PathArg, new: PathArg, link: bool, flags_i: Option<usize>) -> R {
    let flags = flags_i.map_or(0, |i| c.args[i]);
    let old_follow = link && flags & libc::AT_SYMLINK_FOLLOW as u64 != 0;
    let old_empty = link && flags & libc::AT_EMPTY_PATH as u64 != 0;
    let exchange = !link && flags & libc::RENAME_EXCHANGE as u64 != 0;
    let o = target(c, old, old_follow, old_empty)?;
    let n = target(c, new, false, false)?;
    let text = format!("{}, {}", o.text(), n.text());
    let n_canon = n.canon.clone().map_err(Outcome::fail)?;
    let mut need_new = Rights::CREATE;
    if n.exists {
        need_new = need_new.union(Rights::WRITE);
    }
    let mut need_old = if link { Rights::NONE } else { Rights::WRITE };
    if exchange {
        need_old = Rights::WRITE.union(Rights::CREATE);
        need_new = need_old;
    }
    let mut log = checked(c, &n_canon, need_new, &text)?;
    let mut e = Edits::default();
    match &o.canon {
        Ok(op) => {
            log |= checked(c, op, need_old, &text)?;
            let (ro, rn) = (c.policy.rights(op), c.policy.rights(&n_canon));
            if !ro.contains(rn) || (exchange && !rn.contains(ro)) {
                return Err(Outcome::deny(
                    libc::EACCES,
                    format!(
                        "{} grants {rn} but {} only {ro}",
                        path_rule(c.policy, &n_canon),
                        path_rule(c.policy, op)
                    ),
                )
                .with_args(text));
            }
            if !link {
                below_rule(c, op, &text)?;
                if exchange {
                    below_rule(c, &n_canon, &text)?;
                }
            }
            if let Some(p) = pin(c, 0, op)? {
                e.args[old.path] = Some(p);
                if let Some(d) = old.dirfd {
                    e.args[d] = Some(libc::AT_FDCWD as u64);
                }
                if let Some(i) = flags_i
                    && o.raw.is_empty()
                {
                    // Link the file by its checked name rather than by the descriptor.
                    e.args[i] = Some(flags & !(libc::AT_EMPTY_PATH as u64));
                }
            }
        }
        // An O_TMPFILE (or other nameless) descriptor given a name: only its new name matters.
        Err(_) if old_empty && o.raw.is_empty() => {
            if let Some(p) = pin(c, 0, b"")? {
                e.args[old.path] = Some(p);
            }
        }
        Err(err) => return Err(Outcome::fail(*err)),
    }
    if let Some(p) = pin(c, SLOT_PATH2, &n_canon)? {
        e.args[new.path] = Some(p);
        if let Some(d) = new.dirfd {
            e.args[d] = Some(libc::AT_FDCWD as u64);
        }
    }
    Ok(logged(Outcome::edit(e), c, log, &n_canon, text))
}

fn symlink(c: &Ctx, target_i: usize, link: PathArg) -> R {
    let stored = read_path(c.who.tid, c.args[target_i]).map_err(Outcome::fail)?;
    let t = target(c, link, false, false)?;
    let text = format!("{}, {}", q(&stored), t.text());
    let canon = t.canon.map_err(Outcome::fail)?;
    let log = checked(c, &canon, Rights::CREATE, &text)?;
    let mut e = Edits::default();
    if let Some(p) = pin(c, SLOT_PATH2, &canon)? {
        e.args[link.path] = Some(p);
        if let Some(d) = link.dirfd {
            e.args[d] = Some(libc::AT_FDCWD as u64);
        }
    }
    Ok(logged(Outcome::edit(e), c, log, &canon, text))
}

fn mount(c: &Ctx) -> R {
    let a = &c.args;
    let t = target(
        c,
        PathArg {
            dirfd: None,
            path: 1,
        },
        true,
        false,
    )?;
    let tc = t.canon.clone().map_err(Outcome::fail)?;
    let mut text = t.text();
    let mut log = checked(c, &tc, Rights::WRITE, &text)?;
    let mut e = Edits::default();
    if a[3] & (libc::MS_BIND | libc::MS_MOVE) != 0 {
        let s = target(
            c,
            PathArg {
                dirfd: None,
                path: 0,
            },
            true,
            false,
        )?;
        text = format!("{}, {text}, flags={:#x}", s.text(), a[3]);
        let sc = s.canon.map_err(Outcome::fail)?;
        let (rs, rt) = (c.policy.rights(&sc), c.policy.rights(&tc));
        if !rs.contains(rt) {
            return Err(Outcome::deny(
                libc::EACCES,
                format!(
                    "{} grants {rt} but {} only {rs}",
                    path_rule(c.policy, &tc),
                    path_rule(c.policy, &sc)
                ),
            )
            .with_args(text));
        }
        log |= checked(c, &sc, Rights::READ, &text)?;
        below_rule(c, &sc, &text)?;
        if let Some(p) = pin(c, 0, &sc)? {
            e.args[0] = Some(p);
        }
    }
    if let Some(p) = pin(c, SLOT_PATH2, &tc)? {
        e.args[1] = Some(p);
    }
    Ok(logged(Outcome::edit(e), c, log, &tc, text))
}

fn umount(c: &Ctx) -> R {
    let follow = c.args[1] & 8 == 0; // UMOUNT_NOFOLLOW
    let t = target(
        c,
        PathArg {
            dirfd: None,
            path: 0,
        },
        follow,
        false,
    )?;
    let text = t.text();
    let canon = t.canon.map_err(Outcome::fail)?;
    let log = checked(c, &canon, Rights::WRITE, &text)?;
    let mut e = Edits::default();
    if let Some(p) = pin(c, 0, &canon)? {
        e.args[0] = Some(p);
    }
    Ok(logged(Outcome::edit(e), c, log, &canon, text))
}

/// `connect`/`bind`: a Unix socket path needs write (connect) or create (bind); the address is
/// pinned with the canonical path. Other addresses are not policed here (the family was, at
/// `socket`).
fn sock_addr(c: &Ctx, bind: bool) -> R {
    let a = &c.args;
    let len = a[2] as usize;
    if !(3..=std::mem::size_of::<libc::sockaddr_un>()).contains(&len) || a[1] == 0 {
        return Ok(Outcome::run());
    }
    let Ok(b) = read_bytes(c.who.tid, a[1], len) else {
        return Ok(Outcome::run());
    };
    if u16::from_ne_bytes([b[0], b[1]]) != libc::AF_UNIX as u16 || b[2] == 0 {
        return Ok(Outcome::run());
    }
    let raw: Vec<u8> = b[2..].iter().copied().take_while(|x| *x != 0).collect();
    let r = resolve::resolve(&c.view, c.who, None, &raw, !bind).map_err(Outcome::fail)?;
    let Resolved::Path { path, .. } = r else {
        return Err(Outcome::fail(libc::EACCES));
    };
    let text = format!("{} -> {}", q(&raw), q(&path));
    let need = if bind { Rights::CREATE } else { Rights::WRITE };
    let log = checked(c, &path, need, &text)?;
    if path.len() > 107 {
        return Err(Outcome::fail(libc::ENAMETOOLONG));
    }
    let mut addr = Vec::with_capacity(path.len() + 3);
    addr.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    addr.extend_from_slice(&path);
    addr.push(0);
    let mut e = Edits::default();
    if let Some(p) = pin_raw(c, SLOT_MISC, &addr)? {
        e.args[1] = Some(p);
        e.args[2] = Some(addr.len() as u64);
    }
    Ok(logged(Outcome::edit(e), c, log, &path, text))
}
