//! VM boot, moat-vmm beside QEMU microvm with the same kernel, initramfs, command line and 128 MiB:
//!
//! - `boot.ready` (where KVM runs Linux guests: hardware, or inside the rig): VMM exec to the
//!   agent's ready line; at that moment, `memory.vmm_overhead` (the VMM's RSS minus the guest RAM it
//!   touched) and, for QEMU, `memory.rss`/`memory.pss` (moat-vm's come from a whole `moat run` in
//!   [`super::memory`]).
//! - `boot.floor` and `boot.floor_rss` (on any host with `/dev/kvm`): exec to VM, memory and vCPU
//!   set up and the kernel loaded, then exit without running the guest (`moat-vmm --dry-boot`;
//!   QEMU `-S` and `quit` on its monitor): wall time and peak RSS.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_artifacts::reference_boot::{Accel, QemuBoot, qemu_binary};

use crate::exec;
use crate::results::{Place, Unit};
use crate::run::Bench;
use crate::walls::Kind;

/// Guest memory of every boot here.
pub const MEM_MIB: u32 = 128;

/// The guest's kernel and initramfs, or why they are missing.
fn artifacts() -> Result<(PathBuf, PathBuf), String> {
    use moat_artifacts::{guest, kernel};
    match (kernel::status(), guest::status()) {
        (kernel::Status::Built(k), guest::Status::Built(g)) => Ok((k.vmlinux, g.initramfs)),
        (kernel::Status::NotBuilt { reason, .. }, _) | (_, guest::Status::NotBuilt { reason }) => {
            Err(format!("the guest is not built ({reason})"))
        }
    }
}

/// moat-vmm, beside the moat binary.
fn vmm(b: &Bench) -> Result<PathBuf, String> {
    let p = b
        .opts
        .moat
        .parent()
        .map(|d| d.join("moat-vmm"))
        .unwrap_or_default();
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} is not built", p.display()))
    }
}

/// `moat-vmm --kernel K --initramfs I --memory 128M`.
fn vmm_command(vmm: &Path, kernel: &Path, initramfs: &Path) -> Command {
    let mut c = Command::new(vmm);
    c.arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initramfs)
        .args(["--memory", &format!("{MEM_MIB}M")]);
    c
}

fn qemu_boot() -> QemuBoot {
    let mut q = QemuBoot::new(Accel::Kvm);
    q.mem_mib = MEM_MIB;
    q.timeout = Duration::from_secs(300);
    q
}

/// `boot.ready` for `vm` and `qemu`, interleaved; only where this process's KVM runs guests.
pub fn measure(b: &mut Bench) {
    let vm = b.walls.iter().any(|w| w.kind == Kind::Vm);
    if !vm && !b.qemu {
        return;
    }
    let (kernel, initramfs) = match artifacts() {
        Ok(a) => a,
        Err(e) => {
            for k in ["vm", "qemu"] {
                b.results.fail("boot.ready", k, e.clone());
            }
            return;
        }
    };
    let vmm = vmm(b);
    let q = qemu_boot();
    let cmdline = q.cmdline();
    let runs = b.plan.boot_runs;
    b.progress
        .add(runs * (usize::from(vm) + usize::from(b.qemu)));
    for _ in 0..runs {
        if vm {
            let got = vmm.clone().and_then(|v| {
                let mut c = vmm_command(&v, &kernel, &initramfs);
                boot_once(c.args(["--cmdline", &cmdline]), b.place)
            });
            record(b, "vm", got, false);
            b.progress.step("boot.ready vm");
        }
        if b.qemu {
            let got = boot_once(&mut q.command(&kernel, &initramfs), b.place);
            record(b, "qemu", got, true);
            b.progress.step("boot.ready qemu");
        }
    }
}

fn record(b: &mut Bench, backend: &str, got: Result<Boot, String>, memory: bool) {
    match got {
        Ok(boot) => {
            let place = b.place;
            let r = &mut b.results;
            r.add_samples("boot.ready", backend, place, Unit::Ms, &[boot.ready_ms]);
            r.add_samples(
                "memory.vmm_overhead",
                backend,
                place,
                Unit::Mib,
                &[boot.overhead_mib],
            );
            if memory {
                r.add_samples(
                    "memory.rss",
                    backend,
                    place,
                    Unit::Mib,
                    &[boot.memory.rss_mib],
                );
                r.add_samples(
                    "memory.pss",
                    backend,
                    place,
                    Unit::Mib,
                    &[boot.memory.pss_mib],
                );
            }
        }
        Err(e) => b.results.fail("boot.ready", backend, e),
    }
}

/// One boot's numbers.
struct Boot {
    ready_ms: f64,
    overhead_mib: f64,
    memory: exec::Memory,
}

/// Spawns a VMM whose serial console is its stdout; waits for the ready line, measures, then
/// lets the guest's self-test power it off (or kills it).
fn boot_once(cmd: &mut Command, place: Place) -> Result<Boot, String> {
    // stderr is not read while the guest runs: a pipe nobody drains could stall the VMM.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id();
    let Some(out) = child.stdout.take() else {
        exec::kill_tree(pid);
        let _ = child.wait();
        return Err("no console".into());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        let mut sent = false;
        while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            if !sent && String::from_utf8_lossy(&buf).contains(moat_abi::READY_LINE) {
                let _ = tx.send(start.elapsed());
                sent = true;
            }
            buf.clear();
        }
    });
    // A boot takes seconds even in the rig; a VMM silent for this long is stuck.
    let boot_limit = match place {
        Place::Host => Duration::from_secs(60),
        Place::Rig => Duration::from_secs(180),
    };
    let result = match rx.recv_timeout(boot_limit) {
        Ok(t) => Ok(Boot {
            ready_ms: t.as_secs_f64() * 1e3,
            overhead_mib: overhead_mib(pid).unwrap_or(0.0),
            memory: exec::memory(&[pid]),
        }),
        Err(_) => {
            exec::kill_tree(pid);
            Err(format!(
                "no ready line within {} s (the VMM was killed)",
                boot_limit.as_secs()
            ))
        }
    };
    // The self-test powers the guest off right after ready; a VMM still there is killed. A VMM
    // that even SIGKILL cannot end (stuck in the kernel) is left, not waited for forever.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut killed = false;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            if killed {
                return result.and(Err(format!("the VMM (pid {pid}) does not die")));
            }
            exec::kill_tree(pid);
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    result
}

/// A VMM's RSS without its largest mapping (the guest's RAM), MiB.
pub fn overhead_mib(pid: u32) -> Option<f64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut largest) = (0.0f64, (0.0f64, 0.0f64));
    let mut size = 0.0;
    for l in smaps.lines() {
        if l.starts_with("Size:") {
            size = exec::field_kib(l, "Size:");
        } else if l.starts_with("Rss:") {
            let rss = exec::field_kib(l, "Rss:");
            total += rss;
            if size > largest.0 {
                largest = (size, rss);
            }
        }
    }
    Some((total - largest.1) / 1024.0)
}

/// `boot.floor` and `boot.floor_rss` for the `vm` and `qemu` backends asked for.
pub fn floor(b: &mut Bench) {
    let backends = b.opts.backends.clone();
    let want = |k: Kind| backends.contains(&k);
    if !want(Kind::Vm) && !want(Kind::Qemu) {
        return;
    }
    let (kernel, initramfs) = match artifacts() {
        Ok(a) => a,
        Err(e) => {
            for k in [Kind::Vm, Kind::Qemu].into_iter().filter(|k| want(*k)) {
                b.results.fail("boot.floor", k.name(), e.clone());
            }
            return;
        }
    };
    let vmm = vmm(b);
    let runs = b.plan.boot_runs;
    b.progress.add(runs * 2);
    for _ in 0..runs {
        if want(Kind::Vm) {
            let got = vmm.clone().and_then(|v| {
                let mut c = vmm_command(&v, &kernel, &initramfs);
                peak(c.arg("--dry-boot"), b"")
            });
            floor_record(b, "vm", got);
            b.progress.step("boot.floor vm");
        }
        if want(Kind::Qemu) {
            let mut c = Command::new(qemu_binary());
            c.args(["-M", "microvm,x-option-roms=off,rtc=off,acpi=off", "-S"])
                .args(["-m", &MEM_MIB.to_string(), "-nodefaults", "-no-user-config"])
                .args(["-display", "none", "-monitor", "stdio", "-kernel"])
                .arg(&kernel)
                .arg("-initrd")
                .arg(&initramfs);
            let got = peak(&mut c, b"quit\n");
            floor_record(b, "qemu", got);
            b.progress.step("boot.floor qemu");
        }
    }
}

fn floor_record(b: &mut Bench, backend: &str, got: Result<(f64, f64), String>) {
    match got {
        Ok((ms, rss)) => {
            b.results
                .add_samples("boot.floor", backend, Place::Host, Unit::Ms, &[ms]);
            b.results
                .add_samples("boot.floor_rss", backend, Place::Host, Unit::Mib, &[rss]);
        }
        Err(e) => b.results.fail("boot.floor", backend, e),
    }
}

/// Runs `cmd` to its end, feeding `stdin`; returns (ms, peak RSS MiB) from `wait4`.
fn peak(cmd: &mut Command, stdin: &[u8]) -> Result<(f64, f64), String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid buffer for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child into live, writable buffers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(format!("exit status {status:#x}: {}", exec::tail(&err, "")));
    }
    Ok((ms, ru.ru_maxrss as f64 / 1024.0))
}
