//! Kernel modules of the L1 kernel: which files to load, in which order.
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at install time), so the
//! dependencies are read where depmod reads them: the `depends=` field of each module's ELF
//! `.modinfo` section. The modules to load are the closure of a short wanted list, ordered so that
//! every module comes after the modules it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Errors while resolving modules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A module file is not a well-formed ELF64 little-endian object with a `.modinfo` section.
    #[error("kernel module {path}: {reason}")]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A wanted module, or a dependency of one, is neither in `modules.order` nor built in.
    #[error(
        "kernel module {name:?} (needed by {needed_by}) is not in this kernel package's modules.order \
         or modules.builtin"
    )]
    Missing {
        /// The module name.
        name: String,
        /// Who needs it.
        needed_by: String,
    },
    /// Reading the module tree failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Canonical module name: `kvm-amd` and `kvm_amd` are the same module.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The `key=value` strings of an ELF kernel module's `.modinfo` section.
pub fn modinfo(path: &Path, elf: &[u8]) -> Result<Vec<(String, String)>> {
    let bad = |reason| Error::BadModule {
        path: path.to_path_buf(),
        reason,
    };
    let u16_at = |off: usize| -> Option<u64> {
        Some(u16::from_le_bytes(elf.get(off..off + 2)?.try_into().ok()?).into())
    };
    let u32_at = |off: usize| -> Option<u64> {
        Some(u32::from_le_bytes(elf.get(off..off + 4)?.try_into().ok()?).into())
    };
    let u64_at = |off: usize| -> Option<u64> {
        Some(u64::from_le_bytes(elf.get(off..off + 8)?.try_into().ok()?))
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad("not an ELF64 little-endian file"));
    }
    let header = (|| {
        let shoff = usize::try_from(u64_at(0x28)?).ok()?;
        let shentsize = usize::try_from(u16_at(0x3a)?).ok()?;
        let shnum = usize::try_from(u16_at(0x3c)?).ok()?;
        let shstrndx = usize::try_from(u16_at(0x3e)?).ok()?;
        Some((shoff, shentsize, shnum, shstrndx))
    })();
    let (shoff, shentsize, shnum, shstrndx) = header.ok_or_else(|| bad("truncated ELF header"))?;
    if shentsize < 64 || shstrndx >= shnum {
        return Err(bad("malformed section header table"));
    }
    let section = |i: usize| -> Option<(u64, &[u8])> {
        let sh = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(sh)?;
        let off = usize::try_from(u64_at(sh + 24)?).ok()?;
        let size = usize::try_from(u64_at(sh + 32)?).ok()?;
        Some((name, elf.get(off..off.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx).ok_or_else(|| bad("section names out of bounds"))?;
    for i in 0..shnum {
        let (name_off, data) = section(i).ok_or_else(|| bad("section out of bounds"))?;
        let name = usize::try_from(name_off)
            .ok()
            .and_then(|o| names.get(o..))
            .and_then(|n| n.split(|b| *b == 0).next())
            .ok_or_else(|| bad("section name out of bounds"))?;
        if name == b".modinfo" {
            return Ok(data
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    Err(bad("has no .modinfo section"))
}

/// The modules of one kernel's `lib/modules/<release>` directory.
#[derive(Debug)]
pub struct Tree {
    dir: PathBuf,
    /// Canonical name -> path relative to `dir` as listed in `modules.order`.
    files: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
}

impl Tree {
    /// Indexes `dir` (which holds `modules.order` and `modules.builtin`).
    pub fn open(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
        };
        let stem = |rel: &str| {
            let file = rel.rsplit('/').next().unwrap_or(rel);
            canonical(file.split('.').next().unwrap_or(file))
        };
        let files = read("modules.order")?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|rel| (stem(rel), rel.trim().to_string()))
            .collect();
        let builtin = read("modules.builtin")
            .unwrap_or_default()
            .lines()
            .map(stem)
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            builtin,
        })
    }

    /// The file holding module `name`: as listed, or compressed beside it (`.xz`, `.zst`).
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let rel = self.files.get(&canonical(name))?;
        ["", ".xz", ".zst"]
            .iter()
            .map(|ext| self.dir.join(format!("{rel}{ext}")))
            .find(|p| p.is_file())
    }

    /// The dependencies of module `name` (from its `.modinfo`), or `None` when it is built in.
    /// `read` turns a module file into ELF bytes (decompressing it where needed).
    pub fn deps(
        &self,
        name: &str,
        needed_by: &str,
        read: &mut dyn FnMut(&Path) -> Result<Vec<u8>>,
    ) -> Result<Option<Vec<String>>> {
        if self.builtin.contains(name) {
            return Ok(None);
        }
        let path = self.file(name).ok_or_else(|| Error::Missing {
            name: name.to_string(),
            needed_by: needed_by.to_string(),
        })?;
        let elf = read(&path)?;
        Ok(Some(
            modinfo(&path, &elf)?
                .into_iter()
                .filter(|(k, _)| k == "depends")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .filter(|d| !d.is_empty())
                        .map(canonical)
                        .collect::<Vec<_>>()
                })
                .collect(),
        ))
    }
}

/// Gives a module's dependencies (`name`, `needed_by`), or `None` for one that needs no loading.
pub type DepsFn<'a> = dyn FnMut(&str, &str) -> Result<Option<Vec<String>>> + 'a;

/// Every module `wanted` needs, each after its dependencies, without duplicates. `deps(name,
/// needed_by)` gives a module's dependencies, or `None` for a module that needs no loading.
pub fn closure(wanted: &[&str], deps: &mut DepsFn<'_>) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        needed_by: &str,
        deps: &mut DepsFn<'_>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(needs) = deps(name, needed_by)? else {
            return Ok(());
        };
        for dep in needs {
            visit(&dep, name, deps, seen, order)?;
        }
        order.push(name.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(&canonical(name), "the rig", deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object: null section, `.shstrtab`, `.modinfo`.
    fn fake_module(modinfo: &str) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let info_off = elf.len();
        elf.extend_from_slice(modinfo.as_bytes());
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut s = [0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            s[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&s);
        };
        sh(0, 0, 0);
        sh(1, strtab_off, shstrtab.len());
        sh(11, info_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_modinfo_fields() {
        let elf = fake_module("license=GPL\0depends=kvm,ccp\0name=kvm_amd\0");
        let info = modinfo(Path::new("kvm-amd.ko"), &elf).unwrap();
        assert!(info.contains(&("depends".into(), "kvm,ccp".into())));
        assert!(info.contains(&("name".into(), "kvm_amd".into())));
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        let err = modinfo(Path::new("x.ko"), b"not an elf").unwrap_err();
        assert!(err.to_string().contains("not an ELF64"), "{err}");
        let elf = fake_module("depends=\0");
        let err = modinfo(Path::new("x.ko"), &elf[..elf.len() - 40]).unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
    }

    #[test]
    fn closure_orders_dependencies_first_and_skips_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let mods = [
            ("kernel/kvm/kvm-amd.ko", "depends=kvm,ccp"),
            ("kernel/kvm/kvm.ko", "depends=irqbypass"),
            ("kernel/virt/irqbypass.ko", "depends="),
            ("kernel/fs/9p.ko", "depends=9pnet,netfs"),
            ("kernel/net/9pnet.ko", "depends="),
        ];
        let mut order = String::new();
        for (rel, info) in mods {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, fake_module(info)).unwrap();
            order += &format!("{rel}\n");
        }
        fs::write(dir.path().join("modules.order"), order).unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/crypto/ccp.ko\nkernel/fs/netfs.ko\n",
        )
        .unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let mut read = |p: &Path| {
            fs::read(p).map_err(|source| Error::Io {
                path: p.into(),
                source,
            })
        };
        let mut deps = |n: &str, by: &str| tree.deps(n, by, &mut read);
        let got = closure(&["kvm-amd", "9p", "kvm"], &mut deps).unwrap();
        assert_eq!(got, ["irqbypass", "kvm", "kvm_amd", "9pnet", "9p"]);

        let err = closure(&["vhost_vsock"], &mut deps).unwrap_err();
        assert!(err.to_string().contains("\"vhost_vsock\""), "{err}");
    }
}
