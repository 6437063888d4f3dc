//! Getting the guest's code into memory: telling kernels from other files, loading a vmlinux (PVH
//! entry when it has one, else its 64-bit ELF entry) or a bzImage through `linux-loader`, a raw
//! payload, the initramfs, and the command line with its `virtio_mmio.device=` entries.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{XLF_KERNEL_64, setup_header};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader, load_cmdline};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::boot_params::Initrd;
use crate::arch::layout;
use crate::arch::regs::{BootProtocol, EntryPoint};

/// Errors loading guest code. Each names the file and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Kernel, payload or initramfs.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a kernel image.
    #[error("{0} is not a kernel image: expected an ELF vmlinux or a bzImage")]
    NotAKernel(PathBuf),
    /// A bzImage without a 64-bit entry point.
    #[error("bzImage {0} has no 64-bit entry point (XLF_KERNEL_64): build an x86_64 kernel")]
    Not64Bit(PathBuf),
    /// linux-loader refused the image.
    #[error("cannot load kernel {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// linux-loader's message.
        reason: String,
    },
    /// The guest is too small for what must go in it.
    #[error(
        "guest memory of {memory_mib} MiB is too small for the {what}: give at least {need_mib} MiB"
    )]
    TooSmall {
        /// Configured memory.
        memory_mib: u64,
        /// What did not fit.
        what: String,
        /// A size that would fit.
        need_mib: u64,
    },
    /// The command line is too long or malformed.
    #[error("kernel command line: {0}")]
    Cmdline(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What kind of image a kernel file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// An ELF file; `linux` when it carries Linux or PVH notes.
    Elf {
        /// Has a Xen PVH entry note.
        pvh: bool,
        /// Looks like a Linux kernel (a PVH entry or a "Linux" ELF note).
        linux: bool,
    },
    /// A bzImage (always Linux).
    BzImage,
}

impl KernelKind {
    /// True for images that are a Linux kernel (what a PVM host cannot run).
    pub fn is_linux(&self) -> bool {
        match self {
            KernelKind::Elf { linux, .. } => *linux,
            KernelKind::BzImage => true,
        }
    }
}

/// Where the loaded code ended up.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// First instruction and entry protocol.
    pub entry: EntryPoint,
    /// First byte past everything the kernel occupies (including what it decompresses into).
    pub end: u64,
    /// The bzImage setup header (Linux boot protocol).
    pub setup_header: Option<setup_header>,
}

fn open(what: &'static str, path: &Path) -> Result<File> {
    File::open(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Notes are small; anything bigger is not a kernel's.
const MAX_NOTES: u64 = 64 << 10;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Scans the ELF's PT_NOTE segments: (has PVH entry, has a Linux note).
fn elf_notes(f: &mut File) -> std::io::Result<(bool, bool)> {
    let mut eh = [0u8; 64];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut eh)?;
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(&eh, 32), u16_at(&eh, 54), u16_at(&eh, 56))
    else {
        return Ok((false, false));
    };
    if phentsize != 56 || phnum > 64 {
        return Ok((false, false));
    }
    let mut ph = vec![0u8; 56 * phnum as usize];
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut ph)?;
    let (mut pvh, mut linux) = (false, false);
    for p in ph.chunks_exact(56) {
        if u32_at(p, 0) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(p, 8), u64_at(p, 32)) else {
            continue;
        };
        let mut notes = vec![0u8; size.min(MAX_NOTES) as usize];
        f.seek(SeekFrom::Start(off))?;
        f.read_exact(&mut notes)?;
        let mut o = 0usize;
        while let (Some(namesz), Some(descsz), Some(kind)) = (
            u32_at(&notes, o),
            u32_at(&notes, o + 4),
            u32_at(&notes, o + 8),
        ) {
            let name_start = o + 12;
            let name = notes
                .get(name_start..name_start + namesz as usize)
                .unwrap_or(&[]);
            let name = name.strip_suffix(b"\0").unwrap_or(name);
            if name == b"Xen" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                pvh = true;
            }
            if name == b"Linux" {
                linux = true;
            }
            let align = |n: u32| (n as usize).div_ceil(4) * 4;
            o = name_start + align(namesz) + align(descsz);
        }
    }
    Ok((pvh, linux || pvh))
}

/// Tells what `path` is, reading only its headers.
pub fn detect(path: &Path) -> Result<KernelKind> {
    let mut f = open("kernel", path)?;
    let mut head = [0u8; 0x210];
    let n = read_up_to(&mut f, &mut head).map_err(|source| Error::Read {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    })?;
    let head = &head[..n];
    if head.starts_with(ELF_MAGIC) {
        let (pvh, linux) = elf_notes(&mut f).map_err(|_| Error::NotAKernel(path.to_path_buf()))?;
        return Ok(KernelKind::Elf { pvh, linux });
    }
    if head.get(0x1fe..0x200) == Some(&[0x55, 0xaa]) && head.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(KernelKind::BzImage);
    }
    Err(Error::NotAKernel(path.to_path_buf()))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn too_small(mem_bytes: u64, what: impl Into<String>, need: u64) -> Error {
    Error::TooSmall {
        memory_mib: mem_bytes >> 20,
        what: what.into(),
        need_mib: need.div_ceil(1 << 20).max(1),
    }
}

/// Loads a kernel of `kind` from `path`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    path: &Path,
    kind: KernelKind,
) -> Result<Loaded> {
    let mut f = open("kernel", path)?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let load_err = |e: linux_loader::loader::Error| match e {
        linux_loader::loader::Error::MemoryOverflow
        | linux_loader::loader::Error::Elf(linux_loader::loader::elf::Error::ReadKernelImage)
        | linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::ReadBzImageCompressedKernel,
        ) => too_small(
            mem_bytes,
            "kernel",
            layout::HIMEM_START + 2 * size + (16 << 20),
        ),
        e => Error::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    };
    match kind {
        KernelKind::Elf { .. } => {
            let r = Elf::load(mem, None, &mut f, himem).map_err(load_err)?;
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => EntryPoint {
                    addr,
                    protocol: BootProtocol::Pvh,
                },
                _ => EntryPoint {
                    addr: r.kernel_load,
                    protocol: BootProtocol::Linux64,
                },
            };
            Ok(Loaded {
                entry,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        KernelKind::BzImage => {
            let r = BzImage::load(mem, None, &mut f, himem).map_err(load_err)?;
            let hdr = r
                .setup_header
                .ok_or_else(|| Error::NotAKernel(path.to_path_buf()))?;
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(Error::Not64Bit(path.to_path_buf()));
            }
            // The kernel decompresses itself in place and needs init_size bytes from its load
            // address.
            let end = r.kernel_end.max(r.kernel_load.0 + u64::from(hdr.init_size));
            if end > mem_bytes.min(layout::MMIO_HOLE_START) {
                return Err(too_small(
                    mem_bytes,
                    "decompressed kernel",
                    end + (16 << 20),
                ));
            }
            Ok(Loaded {
                entry: EntryPoint {
                    addr: GuestAddress(r.kernel_load.0 + 0x200),
                    protocol: BootProtocol::Linux64,
                },
                end,
                setup_header: Some(hdr),
            })
        }
    }
}

/// Loads raw 64-bit code at 1 MiB and enters it there.
pub fn load_payload(mem: &GuestMemoryMmap, mem_bytes: u64, path: &Path) -> Result<Loaded> {
    let code = std::fs::read(path).map_err(|source| Error::Read {
        what: "payload",
        path: path.to_path_buf(),
        source,
    })?;
    let end = layout::HIMEM_START + code.len() as u64;
    if end > mem_bytes.min(layout::MMIO_HOLE_START) {
        return Err(too_small(mem_bytes, "payload", end));
    }
    mem.write_slice(&code, GuestAddress(layout::HIMEM_START))
        .map_err(|_| too_small(mem_bytes, "payload", end))?;
    Ok(Loaded {
        entry: EntryPoint {
            addr: GuestAddress(layout::HIMEM_START),
            protocol: BootProtocol::Linux64,
        },
        end,
        setup_header: None,
    })
}

/// Loads the initramfs at the top of low RAM (page aligned), above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    low_end: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<Initrd> {
    let mut f = open("initramfs", path)?;
    let read_err = |source| Error::Read {
        what: "initramfs",
        path: path.to_path_buf(),
        source,
    };
    let size = f.metadata().map_err(read_err)?.len();
    let need = kernel_end + size + (16 << 20);
    let addr = low_end.checked_sub(size).map(|a| a & !0xfff);
    let Some(addr) = addr.filter(|a| *a >= kernel_end) else {
        return Err(too_small(mem_bytes, "kernel and initramfs", need));
    };
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|e| Error::Read {
            what: "initramfs",
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(Initrd { addr, size })
}

/// A virtio-mmio device as the kernel command line announces it.
#[derive(Clone, Copy, Debug)]
pub struct MmioSlot {
    /// Base address of its register window.
    pub base: u64,
    /// Its IRQ.
    pub irq: u32,
}

/// Checks `base` the way the kernel will split it (`next_arg` in lib/cmdline.c): the entries the
/// VMM appends must stay words of their own, seen by the kernel.
fn check_words(base: &str) -> Result<()> {
    if !base.matches('"').count().is_multiple_of(2) {
        return Err(Error::Cmdline(
            "unbalanced double quote: the kernel would read the rest of the line, including the \
             virtio_mmio.device= entries moat-vmm appends, as one quoted value"
                .into(),
        ));
    }
    let mut in_quote = false;
    let mut word = String::new();
    for ch in base.chars().chain(std::iter::once(' ')) {
        // The kernel's isspace().
        if matches!(ch, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r') && !in_quote {
            // A word that starts with a quote loses it, and then its closing one.
            let w = word
                .strip_prefix('"')
                .map_or(word.as_str(), |w| w.strip_suffix('"').unwrap_or(w));
            if w == "--" {
                return Err(Error::Cmdline(
                    "`--` would hand the rest of the line, including the virtio_mmio.device= \
                     entries moat-vmm appends, to init instead of the kernel: remove it"
                        .into(),
                ));
            }
            word.clear();
        } else {
            if ch == '"' {
                in_quote = !in_quote;
            }
            word.push(ch);
        }
    }
    Ok(())
}

/// Builds the command line: `base` plus one `virtio_mmio.device=` entry per device.
pub fn build_cmdline(base: &str, devices: &[MmioSlot]) -> Result<Cmdline> {
    let mut c =
        Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline(e.to_string()))?;
    let bad = |e: linux_loader::cmdline::Error| match e {
        linux_loader::cmdline::Error::TooLarge => Error::Cmdline(format!(
            "longer than the kernel's limit of {} bytes (counting the virtio_mmio.device= \
             entries moat-vmm appends): shorten it",
            layout::CMDLINE_MAX_SIZE - 1
        )),
        linux_loader::cmdline::Error::InvalidAscii => Error::Cmdline(
            "contains a character other than printable ASCII and space (tabs and newlines \
             included)"
                .into(),
        ),
        e => Error::Cmdline(e.to_string()),
    };
    let base = base.trim();
    check_words(base)?;
    if !base.is_empty() {
        c.insert_str(base).map_err(bad)?;
    }
    for d in devices {
        c.add_virtio_mmio_device(layout::VIRTIO_MMIO_SIZE, GuestAddress(d.base), d.irq, None)
            .map_err(bad)?;
    }
    Ok(c)
}

/// Writes the command line at its fixed place; returns its length including the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, c: &Cmdline) -> Result<usize> {
    load_cmdline(mem, GuestAddress(layout::CMDLINE_START), c)
        .map_err(|e| Error::Cmdline(e.to_string()))?;
    let len = c
        .as_cstring()
        .map_err(|e| Error::Cmdline(e.to_string()))?
        .as_bytes_with_nul()
        .len();
    Ok(len)
}

#[cfg(test)]
mod tests;
