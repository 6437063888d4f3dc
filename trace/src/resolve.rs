//! Paths as the tracee would resolve them, made canonical: absolute in the container's view, with
//! every symlink, `.` and `..` resolved. The policy is checked against the canonical path, and
//! the call then runs on it, so what was checked is what the kernel opens.
//!
//! The fast way is one `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the tracee's root
//! and a `readlink` of the resulting descriptor (the kernel's own resolution, with the tracee's
//! root as `/`). procfs needs the slow way, a component walk: there `self` must mean the tracee,
//! not the supervisor, and the "magic" links (`/proc/<pid>/fd/N`, `cwd`, `root`, `exe`) are
//! resolved here, for the tracee's own process only.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sys::{self, PROC_SUPER_MAGIC};

/// An errno.
pub(crate) type Errno = i32;

/// Symlinks followed before `ELOOP`, as the kernel does.
const MAX_LINKS: usize = 40;

/// A tracee's file-system view: its root, and that root's path as the supervisor sees it.
#[derive(Debug)]
pub(crate) struct View {
    root: OwnedFd,
    prefix: Vec<u8>,
}

impl View {
    /// The view of thread `tid`.
    pub(crate) fn of(tid: i32) -> Result<View, Errno> {
        let link = CString::new(format!("/proc/{tid}/root")).map_err(|_| libc::EINVAL)?;
        let root = sys::openat(libc::AT_FDCWD, &link, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let prefix = sys::readlinkat(libc::AT_FDCWD, &link)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        Ok(View { root, prefix })
    }

    /// The first bytes of the regular file at canonical `path` (for `#!` lines), if readable.
    pub(crate) fn read_head(&self, path: &[u8]) -> Option<Vec<u8>> {
        let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
        let fd = sys::openat2(self.root.as_raw_fd(), &cstr(path).ok()?, flags, resolve).ok()?;
        let st = sys::fstat(fd.as_raw_fd()).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let link = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes()).ok()?;
        let file = sys::openat(libc::AT_FDCWD, &link, libc::O_RDONLY | libc::O_NONBLOCK).ok()?;
        let mut buf = vec![0u8; 256];
        // SAFETY: read writes at most buf.len() bytes into `buf`.
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(usize::try_from(n).ok()?);
        Some(buf)
    }

    /// A path the supervisor got from the kernel (`readlink` of a descriptor or of a tracee's
    /// `cwd`), in the tracee's view.
    fn strip(&self, p: Vec<u8>) -> Result<Vec<u8>, Errno> {
        if !p.starts_with(b"/") {
            // pipe:[..], socket:[..], anon_inode:..: not a directory.
            return Err(libc::ENOTDIR);
        }
        if p.ends_with(b" (deleted)") {
            return Err(libc::ENOENT);
        }
        if self.prefix == b"/" {
            return Ok(p);
        }
        if p == self.prefix {
            return Ok(b"/".to_vec());
        }
        if p.starts_with(&self.prefix) && p.get(self.prefix.len()) == Some(&b'/') {
            return Ok(p[self.prefix.len()..].to_vec());
        }
        // Outside the container's tree (a descriptor passed in from outside).
        Err(libc::EACCES)
    }

    /// The canonical path of a descriptor the supervisor opened through this view.
    fn path_of(&self, fd: RawFd) -> Result<Vec<u8>, Errno> {
        let link = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| libc::EINVAL)?;
        self.strip(readlink(&link)?)
    }
}

fn readlink(link: &std::ffi::CStr) -> Result<Vec<u8>, Errno> {
    sys::readlinkat(libc::AT_FDCWD, link).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

fn err(e: std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn cstr(b: &[u8]) -> Result<CString, Errno> {
    CString::new(b).map_err(|_| libc::EINVAL)
}

/// Which tracee is asking: its host tid, and its ids in its own pid namespace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who {
    /// Host thread id.
    pub tid: i32,
    /// Process id in the tracee's pid namespace.
    pub ns_pid: i32,
    /// Thread id in the tracee's pid namespace.
    pub ns_tid: i32,
}

/// What a path resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// A canonical path (absolute, in the container's view), and whether it exists.
    Path {
        /// The path.
        path: Vec<u8>,
        /// False if the last component does not exist (yet).
        exists: bool,
    },
    /// `/proc/self/fd/N` (or the same through the tracee's own pid): the tracee's descriptor N.
    OwnFd(i32),
}

/// Resolves `path` as tracee `who` would, relative to `dirfd` (`None` or `AT_FDCWD`: the working
/// directory), following a symlink in the last component if `follow`.
pub(crate) fn resolve(
    view: &View,
    who: Who,
    dirfd: Option<i32>,
    path: &[u8],
    follow: bool,
) -> Result<Resolved, Errno> {
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let abs = absolute(view, who, dirfd, path)?;
    let r = resolve_abs(view, who, abs, follow, 0)?;
    if let Resolved::Path { path, .. } = &r
        && path.len() >= libc::PATH_MAX as usize
    {
        return Err(libc::ENAMETOOLONG);
    }
    Ok(r)
}

/// The directory a relative path starts from, in the tracee's view.
pub(crate) fn dir_of(view: &View, who: Who, dirfd: Option<i32>) -> Result<Vec<u8>, Errno> {
    let link = match dirfd {
        None | Some(libc::AT_FDCWD) => format!("/proc/{}/cwd", who.tid),
        Some(fd) if fd >= 0 => format!("/proc/{}/fd/{fd}", who.tid),
        Some(_) => return Err(libc::EBADF),
    };
    let base = match readlink(&cstr(link.as_bytes())?) {
        Err(libc::ENOENT) => return Err(libc::EBADF),
        r => r?,
    };
    view.strip(base)
}

fn absolute(view: &View, who: Who, dirfd: Option<i32>, path: &[u8]) -> Result<Vec<u8>, Errno> {
    if path.starts_with(b"/") {
        return Ok(path.to_vec());
    }
    let mut base = dir_of(view, who, dirfd)?;
    if !base.ends_with(b"/") {
        base.push(b'/');
    }
    base.extend_from_slice(path);
    Ok(base)
}

fn resolve_abs(
    view: &View,
    who: Who,
    abs: Vec<u8>,
    follow: bool,
    depth: usize,
) -> Result<Resolved, Errno> {
    if depth > MAX_LINKS {
        return Err(libc::ELOOP);
    }
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let flags = (libc::O_PATH | libc::O_CLOEXEC | nofollow) as u64;
    match sys::openat2(view.root.as_raw_fd(), &cstr(&abs)?, flags, resolve) {
        Ok(fd) => {
            if sys::fs_type(fd.as_raw_fd()).map_err(err)? == PROC_SUPER_MAGIC {
                return walk(view, who, &abs, follow);
            }
            Ok(Resolved::Path {
                path: view.path_of(fd.as_raw_fd())?,
                exists: true,
            })
        }
        Err(e) => match err(e) {
            libc::ENOENT => missing_last(view, who, abs, follow, depth),
            libc::ELOOP | libc::EXDEV => walk(view, who, &abs, follow),
            e => Err(e),
        },
    }
}

/// Splits off the last component (trailing slashes ignored).
fn split_last(abs: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut end = abs.len();
    while end > 1 && abs[end - 1] == b'/' {
        end -= 1;
    }
    let p = &abs[..end];
    let i = p.iter().rposition(|b| *b == b'/')?;
    let parent = if i == 0 { &p[..1] } else { &p[..i] };
    Some((parent, &p[i + 1..]))
}

/// The whole path did not resolve: if its parent does, the last component is missing (or is a
/// dangling symlink to follow).
fn missing_last(
    view: &View,
    who: Who,
    abs: Vec<u8>,
    follow: bool,
    depth: usize,
) -> Result<Resolved, Errno> {
    let Some((parent, last)) = split_last(&abs) else {
        return Err(libc::ENOENT);
    };
    if last.is_empty() || last == b"." || last == b".." {
        return Err(libc::ENOENT);
    }
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    let pfd = match sys::openat2(view.root.as_raw_fd(), &cstr(parent)?, flags, resolve) {
        Ok(fd) => fd,
        Err(e) => {
            return match err(e) {
                libc::ENOENT | libc::ELOOP | libc::EXDEV => walk(view, who, &abs, follow),
                e => Err(e),
            };
        }
    };
    if sys::fs_type(pfd.as_raw_fd()).map_err(err)? == PROC_SUPER_MAGIC {
        return walk(view, who, &abs, follow);
    }
    let mut canon = view.path_of(pfd.as_raw_fd())?;
    let last_c = cstr(last)?;
    match sys::lstatat(pfd.as_raw_fd(), &last_c, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            if canon != b"/" {
                canon.push(b'/');
            }
            canon.extend_from_slice(last);
            Ok(Resolved::Path {
                path: canon,
                exists: false,
            })
        }
        Err(e) => Err(err(e)),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK && follow => {
            let target = sys::readlinkat(pfd.as_raw_fd(), &last_c).map_err(err)?;
            let next = if target.starts_with(b"/") {
                target
            } else {
                if canon != b"/" {
                    canon.push(b'/');
                }
                canon.extend_from_slice(&target);
                canon
            };
            resolve_abs(view, who, next, follow, depth + 1)
        }
        // It appeared meanwhile: start over.
        Ok(_) => resolve_abs(view, who, abs, follow, depth + 1),
    }
}

/// One directory on the walk: its descriptor, its name, and whether it is a procfs root.
struct Step {
    fd: OwnedFd,
    name: Vec<u8>,
    proc_root: bool,
}

fn canon(stack: &[Step]) -> Vec<u8> {
    let mut p = Vec::new();
    for s in &stack[1..] {
        p.push(b'/');
        p.extend_from_slice(&s.name);
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}

fn comps(p: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

fn dup_root(view: &View) -> Result<OwnedFd, Errno> {
    view.root.try_clone().map_err(err)
}

/// The component walk: every symlink read and followed here, procfs's `self` and magic links
/// resolved for the tracee.
fn walk(view: &View, who: Who, abs: &[u8], follow: bool) -> Result<Resolved, Errno> {
    let mut stack = vec![Step {
        fd: dup_root(view)?,
        name: Vec::new(),
        proc_root: false,
    }];
    let mut queue: std::collections::VecDeque<Vec<u8>> = comps(abs).collect();
    let mut links = 0usize;
    while let Some(c) = queue.pop_front() {
        let last = queue.is_empty();
        if c == b"." {
            continue;
        }
        if c == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let cur = stack.last().map_or(-1, |s| s.fd.as_raw_fd());
        let cc = cstr(&c)?;
        let fd = match sys::openat(cur, &cc, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && last => {
                let mut p = canon(&stack);
                if p != b"/" {
                    p.push(b'/');
                }
                p.extend_from_slice(&c);
                return Ok(Resolved::Path {
                    path: p,
                    exists: false,
                });
            }
            Err(e) => return Err(err(e)),
        };
        let st = sys::fstat(fd.as_raw_fd()).map_err(err)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            let in_proc = sys::fs_type(cur).map_err(err)? == PROC_SUPER_MAGIC;
            let parent_is_proc_root = stack.last().is_some_and(|s| s.proc_root);
            if in_proc && parent_is_proc_root && (c == b"self" || c == b"thread-self") {
                let mut sub = vec![who.ns_pid.to_string().into_bytes()];
                if c == b"thread-self" {
                    sub.push(b"task".to_vec());
                    sub.push(who.ns_tid.to_string().into_bytes());
                }
                for s in sub.into_iter().rev() {
                    queue.push_front(s);
                }
                continue;
            }
            if last && !follow {
                let mut p = canon(&stack);
                if p != b"/" {
                    p.push(b'/');
                }
                p.extend_from_slice(&c);
                return Ok(Resolved::Path {
                    path: p,
                    exists: true,
                });
            }
            if in_proc && !parent_is_proc_root {
                // A magic link: only the tracee's own, and only these.
                match magic(view, who, &stack, &c, last)? {
                    Magic::Fd(n) => return Ok(Resolved::OwnFd(n)),
                    Magic::Path(target) => {
                        stack.truncate(1);
                        for s in comps(&target).collect::<Vec<_>>().into_iter().rev() {
                            queue.push_front(s);
                        }
                        continue;
                    }
                }
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(libc::ELOOP);
            }
            let target = sys::readlinkat(fd.as_raw_fd(), c"").map_err(err)?;
            if target.starts_with(b"/") {
                stack.truncate(1);
            }
            for s in comps(&target).collect::<Vec<_>>().into_iter().rev() {
                queue.push_front(s);
            }
            continue;
        }
        if !last && kind != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        let proc_root = kind == libc::S_IFDIR
            && st.st_ino == 1
            && sys::fs_type(fd.as_raw_fd()).map_err(err)? == PROC_SUPER_MAGIC;
        stack.push(Step {
            fd,
            name: c,
            proc_root,
        });
    }
    Ok(Resolved::Path {
        path: canon(&stack),
        exists: true,
    })
}

enum Magic {
    Fd(i32),
    Path(Vec<u8>),
}

/// A procfs magic link `name` under `stack`'s directory: `<proc>/<pid>[/task/<tid>]/{fd/N, cwd,
/// root, exe}` of the tracee's own process resolves; anything else is refused (`EACCES`), so a
/// workload can neither reach other processes' descriptors nor what they point at.
fn magic(view: &View, who: Who, stack: &[Step], name: &[u8], last: bool) -> Result<Magic, Errno> {
    let base = stack
        .iter()
        .rposition(|s| s.proc_root)
        .ok_or(libc::EACCES)?;
    let rel: Vec<&[u8]> = stack[base + 1..]
        .iter()
        .map(|s| s.name.as_slice())
        .collect();
    let pid = who.ns_pid.to_string().into_bytes();
    let own = match rel.as_slice() {
        [p, rest @ ..] if *p == pid.as_slice() => match rest {
            [b"task", _tid, rest @ ..] => rest.to_vec(),
            rest => rest.to_vec(),
        },
        _ => return Err(libc::EACCES),
    };
    match (own.as_slice(), name) {
        ([b"fd"], n) if last => {
            let n = std::str::from_utf8(n)
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .ok_or(libc::ENOENT)?;
            Ok(Magic::Fd(n))
        }
        ([], b"root") => Ok(Magic::Path(b"/".to_vec())),
        ([], b"cwd") => Ok(Magic::Path(dir_of(view, who, None)?)),
        ([], b"exe") => {
            let link = cstr(format!("/proc/{}/exe", who.tid).as_bytes())?;
            Ok(Magic::Path(view.strip(readlink(&link)?)?))
        }
        _ => Err(libc::EACCES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (View, Who) {
        let tid = std::process::id() as i32;
        (
            View::of(tid).unwrap(),
            Who {
                tid,
                ns_pid: tid,
                ns_tid: tid,
            },
        )
    }

    fn path(r: Resolved) -> (String, bool) {
        match r {
            Resolved::Path { path, exists } => (String::from_utf8(path).unwrap(), exists),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn canonical_paths() {
        let (v, w) = me();
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        let b = base.to_str().unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        std::fs::write(base.join("real/f"), "x").unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("abs")).unwrap();
        std::os::unix::fs::symlink("real/f", base.join("rel")).unwrap();
        std::os::unix::fs::symlink("real/g", base.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        let r = |p: &str, follow| resolve(&v, w, None, p.as_bytes(), follow);
        assert_eq!(
            path(r(&format!("{b}/abs/f"), true).unwrap()),
            (format!("{b}/real/f"), true)
        );
        assert_eq!(
            path(r(&format!("{b}/rel"), true).unwrap()),
            (format!("{b}/real/f"), true)
        );
        assert_eq!(
            path(r(&format!("{b}/rel"), false).unwrap()),
            (format!("{b}/rel"), true)
        );
        assert_eq!(
            path(r(&format!("{b}/real/../real/./new"), true).unwrap()),
            (format!("{b}/real/new"), false)
        );
        assert_eq!(
            path(r(&format!("{b}/dangling"), true).unwrap()),
            (format!("{b}/real/g"), false)
        );
        assert_eq!(r(&format!("{b}/nowhere/x/y"), true), Err(libc::ENOENT));
        assert_eq!(r(&format!("{b}/real/f/x"), true), Err(libc::ENOTDIR));
        assert_eq!(r(&format!("{b}/loop"), true), Err(libc::ELOOP));
        // `..` never leaves the root.
        assert_eq!(
            path(r("/../../etc/./passwd", true).unwrap()).0,
            "/etc/passwd"
        );
        // Relative to a directory descriptor of the caller.
        let dir = std::fs::File::open(base.join("real")).unwrap();
        use std::os::fd::AsRawFd;
        let rel = resolve(&v, w, Some(dir.as_raw_fd()), b"f", true).unwrap();
        assert_eq!(path(rel), (format!("{b}/real/f"), true));
    }

    #[test]
    fn procfs_self_and_magic_links() {
        let (v, w) = me();
        let r = |p: &str| resolve(&v, w, None, p.as_bytes(), true);
        assert_eq!(
            path(r("/proc/self/status").unwrap()).0,
            format!("/proc/{}/status", w.tid)
        );
        assert_eq!(r("/proc/self/fd/1").unwrap(), Resolved::OwnFd(1));
        assert_eq!(r("/dev/stdout").unwrap(), Resolved::OwnFd(1));
        assert_eq!(
            path(r("/proc/self/root/etc/passwd").unwrap()).0,
            "/etc/passwd"
        );
        // Another process's magic links are refused.
        assert_eq!(r("/proc/1/root/etc/passwd"), Err(libc::EACCES));
        assert_eq!(r("/proc/1/fd/0"), Err(libc::EACCES));
        // But its ordinary files are not magic.
        assert_eq!(path(r("/proc/1/status").unwrap()).0, "/proc/1/status");
    }
}
