//! The four rights a path rule grants: read, write, exec and create.

use std::fmt;

/// A set of rights on a path.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Rights(u8);

impl Rights {
    /// No rights at all.
    pub const NONE: Rights = Rights(0);
    /// Read file contents, list a directory, open with `O_PATH`.
    pub const READ: Rights = Rights(1);
    /// Change contents or metadata: write, truncate, chmod/chown, unlink, rename away, mount on.
    pub const WRITE: Rights = Rights(2);
    /// Run it as a program (`execve`).
    pub const EXEC: Rights = Rights(4);
    /// Make a new name there: create a file, directory, node, symlink or link, rename onto it.
    pub const CREATE: Rights = Rights(8);
    /// Every right.
    pub const ALL: Rights = Rights(15);

    const NAMES: [(&'static str, Rights); 4] = [
        ("read", Rights::READ),
        ("write", Rights::WRITE),
        ("exec", Rights::EXEC),
        ("create", Rights::CREATE),
    ];

    /// Parses one right's name (`read`, `write`, `exec`, `create`, or `all`).
    pub fn from_name(name: &str) -> Option<Rights> {
        if name == "all" {
            return Some(Rights::ALL);
        }
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
    }

    /// True if every right in `other` is in `self`.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in either set.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// The rights in `self` that are not in `other`.
    pub fn minus(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for (name, r) in Self::NAMES {
            if self.contains(r) {
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sets() {
        let rw = Rights::READ.union(Rights::WRITE);
        assert_eq!(rw.to_string(), "read+write");
        assert!(Rights::ALL.contains(rw));
        assert!(!rw.contains(Rights::EXEC));
        assert_eq!(Rights::ALL.minus(rw), Rights::EXEC.union(Rights::CREATE));
        assert_eq!(Rights::from_name("all"), Some(Rights::ALL));
        assert_eq!(Rights::from_name("append"), None);
        assert_eq!(Rights::NONE.to_string(), "none");
    }
}
