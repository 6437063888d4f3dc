//! errno names a policy may use (`errno = "ENOENT"`, `keyctl = "EPERM"`), and their numbers.

const NAMES: &[(&str, i32)] = &[
    ("E2BIG", libc::E2BIG),
    ("EACCES", libc::EACCES),
    ("EADDRINUSE", libc::EADDRINUSE),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EAGAIN", libc::EAGAIN),
    ("EBADF", libc::EBADF),
    ("EBUSY", libc::EBUSY),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("EEXIST", libc::EEXIST),
    ("EFAULT", libc::EFAULT),
    ("EINVAL", libc::EINVAL),
    ("EIO", libc::EIO),
    ("EISDIR", libc::EISDIR),
    ("ELOOP", libc::ELOOP),
    ("EMFILE", libc::EMFILE),
    ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ENODEV", libc::ENODEV),
    ("ENOENT", libc::ENOENT),
    ("ENOEXEC", libc::ENOEXEC),
    ("ENOMEM", libc::ENOMEM),
    ("ENOSPC", libc::ENOSPC),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTDIR", libc::ENOTDIR),
    ("ENOTSUP", libc::ENOTSUP),
    ("ENXIO", libc::ENXIO),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EPERM", libc::EPERM),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
    ("EROFS", libc::EROFS),
    ("ETXTBSY", libc::ETXTBSY),
];

/// The number of an errno name (`"EPERM"` -> 1).
pub fn from_name(name: &str) -> Option<i32> {
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
}

/// The name of an errno number, or the number itself.
pub fn name(errno: i32) -> String {
    NAMES
        .iter()
        .find(|(_, e)| *e == errno)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| errno.to_string())
}

/// Every name, for error messages.
pub fn all() -> String {
    NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::from_name("EACCES"), Some(13));
        assert_eq!(super::name(13), "EACCES");
        assert_eq!(super::name(4000), "4000");
        assert_eq!(super::from_name("eacces"), None);
    }
}
