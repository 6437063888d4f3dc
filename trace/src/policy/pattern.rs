//! Absolute path patterns as policy rules name them: literal components and `*` for exactly one
//! component. A pattern matches a path and everything below it (`/etc` covers `/etc/passwd`).
//!
//! Paths are bytes (Linux paths need not be UTF-8); patterns come from TOML and are UTF-8.

use std::fmt;

/// One component of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Comp {
    /// This exact name.
    Lit(Vec<u8>),
    /// Any single name.
    Any,
}

/// A parsed path pattern.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pattern {
    text: String,
    comps: Vec<Comp>,
}

impl Pattern {
    /// Parses a pattern: absolute, normalised (no `.`/`..`/empty components, no trailing `/`
    /// except for `/` itself), `*` only as a whole component. The error says what is wrong.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "path {text:?} is not absolute: rules name paths as the container sees them, \
                 starting with /"
            ));
        }
        if text.contains('\0') {
            return Err(format!("path {text:?} contains a NUL byte"));
        }
        if text.len() >= libc::PATH_MAX as usize {
            return Err(format!("path {text:?} is longer than PATH_MAX"));
        }
        if text == "/" {
            return Ok(Pattern {
                text: text.into(),
                comps: Vec::new(),
            });
        }
        let mut comps = Vec::new();
        for c in text[1..].split('/') {
            match c {
                "" => {
                    return Err(format!(
                        "path {text:?} has an empty component (a doubled or trailing /): write \
                         it normalised"
                    ));
                }
                "." | ".." => {
                    return Err(format!(
                        "path {text:?} contains {c:?}: write it normalised, without . or .."
                    ));
                }
                "*" => comps.push(Comp::Any),
                c if c.contains('*') => {
                    return Err(format!(
                        "path {text:?}: `*` stands for one whole component (as in /proc/*/mem), \
                         not part of a name"
                    ));
                }
                c => comps.push(Comp::Lit(c.as_bytes().to_vec())),
            }
        }
        Ok(Pattern {
            text: text.into(),
            comps,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if `path` (absolute, normalised) is this pattern or lies below it.
    pub fn matches(&self, path: &[u8]) -> bool {
        let mut it = split(path);
        for c in &self.comps {
            match (c, it.next()) {
                (_, None) => return false,
                (Comp::Any, Some(_)) => {}
                (Comp::Lit(l), Some(p)) if l.as_slice() == p => {}
                _ => return false,
            }
        }
        true
    }

    /// True if some path lies strictly below this pattern's match (e.g. `/etc` for `/etc/x`): used
    /// to refuse renaming a directory that holds a more specific rule.
    pub fn is_below(&self, path: &[u8]) -> bool {
        let n = split(path).count();
        if n >= self.comps.len() {
            return false;
        }
        let mut it = split(path);
        self.comps.iter().take(n).all(|c| match (c, it.next()) {
            (Comp::Any, Some(_)) => true,
            (Comp::Lit(l), Some(p)) => l.as_slice() == p,
            _ => false,
        })
    }

    /// How specific the pattern is: more components first, then more literal ones.
    pub fn specificity(&self) -> (usize, usize) {
        let lits = self
            .comps
            .iter()
            .filter(|c| matches!(c, Comp::Lit(_)))
            .count();
        (self.comps.len(), lits)
    }

    /// True if both patterns can match the same path at the same specificity, so neither would
    /// win: the policy must not contain two such rules that disagree.
    pub fn ambiguous_with(&self, other: &Pattern) -> bool {
        self.specificity() == other.specificity()
            && self.comps.len() == other.comps.len()
            && self
                .comps
                .iter()
                .zip(&other.comps)
                .all(|(a, b)| match (a, b) {
                    (Comp::Lit(x), Comp::Lit(y)) => x == y,
                    _ => true,
                })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The components of an absolute normalised path.
fn split(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_paths() {
        for bad in [
            "etc",
            "",
            "/etc/",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/proc/*x/mem",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pattern::parse("etc").unwrap_err().contains("not absolute"));
    }

    #[test]
    fn matching_is_by_component() {
        let p = Pattern::parse("/etc/secret").unwrap();
        assert!(p.matches(b"/etc/secret"));
        assert!(p.matches(b"/etc/secret/inner"));
        assert!(!p.matches(b"/etc/secrets"));
        assert!(!p.matches(b"/etc"));
        let root = Pattern::parse("/").unwrap();
        assert!(root.matches(b"/"));
        assert!(root.matches(b"/anything"));
        let w = Pattern::parse("/proc/*/mem").unwrap();
        assert!(w.matches(b"/proc/12/mem"));
        assert!(!w.matches(b"/proc/12/maps"));
        assert!(w.is_below(b"/proc"));
        assert!(w.is_below(b"/proc/1"));
        assert!(!w.is_below(b"/proc/1/mem"));
        assert!(!w.is_below(b"/sys"));
    }

    #[test]
    fn ambiguity() {
        let a = Pattern::parse("/proc/*/mem").unwrap();
        let b = Pattern::parse("/proc/1/*").unwrap();
        let c = Pattern::parse("/proc/1/mem").unwrap();
        assert!(a.ambiguous_with(&b));
        assert!(!a.ambiguous_with(&c));
        assert!(c.specificity() > a.specificity());
    }
}
