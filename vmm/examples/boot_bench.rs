//! moat-vmm next to QEMU microvm, side by side in one run (medians, runs interleaved):
//!
//! - `floor` (on any host, even PVM): exec -> VM, memory and vCPU set up, kernel and initramfs
//!   loaded -> exit, without running the guest: `moat-vmm --dry-boot` vs QEMU `-M microvm -S` with
//!   `quit` on its monitor. Wall time and peak RSS.
//! - `boot` (where KVM runs Linux guests: hardware KVM, or inside the KVM rig): exec -> agent ready
//!   and exec -> exit for moat's guest (the agent's `uname` self-test, then power-off), moat-vmm vs
//!   QEMU microvm with KVM, same kernel and initramfs; and moat-vmm's own memory overhead at ready
//!   (RSS minus the guest RAM it touched).
//!
//! ```text
//! cargo build --release -p moat-vmm --examples
//! target/release/examples/boot_bench floor [RUNS]
//! moat-rig run --rw ~/.cache/moat -- target/release/examples/boot_bench boot [RUNS]   # PVM hosts
//! ```
//! The guest artifacts must be built (`cargo run --release -p moat-artifacts --example build-guest`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_artifacts::reference_boot::{Accel, QemuBoot, qemu_binary};

const MEM_MIB: u32 = 128;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn vmm() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .map(|d| d.join("moat-vmm"))
        .find(|p| p.is_file())
        .expect("moat-vmm not built: cargo build --release -p moat-vmm")
}

fn artifacts() -> (PathBuf, PathBuf) {
    match (
        moat_artifacts::kernel::status(),
        moat_artifacts::guest::status(),
    ) {
        (moat_artifacts::kernel::Status::Built(k), moat_artifacts::guest::Status::Built(g)) => {
            (k.vmlinux, g.initramfs)
        }
        (k, g) => panic!("guest artifacts not built ({k:?}, {g:?}): run build-guest first"),
    }
}

/// Runs `cmd` to the end, feeding `stdin`; returns (seconds, peak RSS in MiB). Reaped with
/// `wait4` (for the child's own peak RSS), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn timed(cmd: &mut Command, stdin: &[u8]) -> (f64, f64) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, into live buffers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: {status:#x}"
    );
    (secs, ru.ru_maxrss as f64 / 1024.0)
}

fn floor(runs: usize) {
    let (kernel, initramfs) = artifacts();
    let (mut ours, mut qemu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(timed(
            Command::new(vmm())
                .arg("--kernel")
                .arg(&kernel)
                .arg("--initramfs")
                .arg(&initramfs)
                .args(["--memory", &format!("{MEM_MIB}M"), "--dry-boot"]),
            b"",
        ));
        qemu.push(timed(
            Command::new(qemu_binary())
                .args(["-M", "microvm,x-option-roms=off,rtc=off,acpi=off", "-S"])
                .args(["-m", &MEM_MIB.to_string(), "-nodefaults", "-no-user-config"])
                .args(["-display", "none", "-monitor", "stdio", "-kernel"])
                .arg(&kernel)
                .arg("-initrd")
                .arg(&initramfs),
            b"quit\n",
        ));
    }
    let row = |name: &str, v: &[(f64, f64)]| {
        let t = median(v.iter().map(|x| x.0 * 1000.0).collect());
        let m = median(v.iter().map(|x| x.1).collect());
        println!("| {name} | {t:.1} | {m:.1} |");
        (t, m)
    };
    println!("floor: exec -> VM + vCPU + kernel loaded -> exit, median of {runs}");
    println!("| | ms | peak RSS MiB |\n|---|---:|---:|");
    let (ot, om) = row("moat-vmm --dry-boot", &ours);
    let (qt, qm) = row("QEMU microvm -S + quit", &qemu);
    println!(
        "moat-vmm/QEMU: time {:.2}x (target <= 0.2x), RSS {:.2}x (target <= 0.15x)",
        ot / qt,
        om / qm
    );
}

/// moat-vmm's RSS without the guest RAM mapping (the one of the guest's size), in MiB.
fn overhead_mib(pid: u32) -> Option<f64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut guest) = (0u64, 0u64);
    let mut size = 0u64;
    for l in smaps.lines() {
        let kb = |l: &str| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if l.starts_with("Size:") {
            size = kb(l);
        } else if l.starts_with("Rss:") {
            total += kb(l);
            if size >= u64::from(MEM_MIB) * 1024 - 1024 {
                guest += kb(l);
            }
        }
    }
    Some((total - guest) as f64 / 1024.0)
}

/// One moat-vmm boot: (exec -> ready, exec -> exit, overhead MiB at ready).
fn ours_once(kernel: &Path, initramfs: &Path, cmdline: &str) -> (f64, f64, f64) {
    let start = Instant::now();
    let mut child = Command::new(vmm())
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initramfs)
        .args(["--memory", &format!("{MEM_MIB}M"), "--cmdline", cmdline])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut ready = None;
    let mut overhead = 0.0;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if ready.is_none() && line.contains(moat_abi::READY_LINE) {
            ready = Some(start.elapsed().as_secs_f64());
            overhead = overhead_mib(pid).unwrap_or(0.0);
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "moat-vmm: {status}");
    (
        ready.expect("no ready line"),
        start.elapsed().as_secs_f64(),
        overhead,
    )
}

fn boot(runs: usize) {
    let kvm = moat_host::kvm::probe();
    assert!(
        kvm.runs_linux_guests(),
        "boot needs KVM that runs Linux guests ({}); on this host run it inside the rig: \
         moat-rig run --rw ~/.cache/moat -- {} boot",
        kvm.flavour,
        std::env::current_exe().unwrap().display()
    );
    let (kernel, initramfs) = artifacts();
    let q = {
        let mut q = QemuBoot::new(Accel::Kvm);
        q.mem_mib = MEM_MIB;
        q.timeout = Duration::from_secs(300);
        q
    };
    let cmdline = q.cmdline();
    let (mut ours, mut qemu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(ours_once(&kernel, &initramfs, &cmdline));
        let r = q.run(&kernel, &initramfs).unwrap();
        qemu.push((
            r.ready.expect("QEMU: no ready line").as_secs_f64(),
            r.exited.unwrap().as_secs_f64(),
        ));
    }
    let med = |f: &dyn Fn(usize) -> f64, n: usize| median((0..n).map(f).collect());
    let (or, oe) = (
        med(&|i| ours[i].0 * 1000.0, runs),
        med(&|i| ours[i].1 * 1000.0, runs),
    );
    let (qr, qe) = (
        med(&|i| qemu[i].0 * 1000.0, runs),
        med(&|i| qemu[i].1 * 1000.0, runs),
    );
    let inside = std::env::var_os("MOAT_RIG").is_some();
    println!(
        "boot: exec -> agent ready / exec -> exit, median of {runs}{}",
        if inside {
            ", inside the KVM rig (compare only these rows)"
        } else {
            ""
        }
    );
    println!("| | ready ms | exit ms |\n|---|---:|---:|");
    println!("| moat-vmm | {or:.0} | {oe:.0} |");
    println!("| QEMU microvm (KVM) | {qr:.0} | {qe:.0} |");
    println!(
        "moat-vmm/QEMU to ready: {:.2}x (target <= 0.5x); moat-vmm overhead RSS at ready \
         (guest RAM excluded): {:.1} MiB (target <= 5 MiB)",
        or / qr,
        med(&|i| ours[i].2, runs)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
    match args.first().map(String::as_str) {
        Some("floor") => floor(runs),
        Some("boot") => boot(runs),
        _ => {
            eprintln!("usage: boot_bench floor|boot [RUNS]");
            std::process::exit(2);
        }
    }
}
