//! Helpers shared by moat-vmm's integration tests: the binary, tiny guest payloads, and checks that
//! a test can run here.

#![allow(dead_code)]

pub mod elf;
pub mod guest;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The moat-vmm binary cargo built for these tests.
pub fn vmm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moat-vmm"))
}

/// True when `/dev/kvm` can be opened read-write (tiny payloads run on PVM too); otherwise prints
/// `SKIPPED: <reason>` and returns false.
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: {test}: /dev/kvm cannot be opened ({e})");
            false
        }
    }
}

/// Assembles payload bytes from pieces.
pub struct Asm(pub Vec<u8>);

impl Asm {
    /// Empty program.
    pub fn new() -> Self {
        Self(Vec::new())
    }
    /// `mov dx, port; mov al, byte; out dx, al` for each byte.
    pub fn out_bytes(mut self, port: u16, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(&[0x66, 0xba]);
        self.0.extend_from_slice(&port.to_le_bytes());
        for b in bytes {
            self.0.extend_from_slice(&[0xb0, *b, 0xee]);
        }
        self
    }
    /// Announces a deliberate power-off on the boot-timer port.
    pub fn announce_poweroff(self) -> Self {
        self.out_bytes(moat_abi::BOOT_TIMER_PORT, &[moat_abi::BOOT_POWEROFF_MAGIC])
    }
    /// Writes the ready byte on the boot-timer port.
    pub fn ready(self) -> Self {
        self.out_bytes(moat_abi::BOOT_TIMER_PORT, &[moat_abi::BOOT_READY_MAGIC])
    }
    /// Prints `s` on COM1.
    pub fn print(self, s: &str) -> Self {
        self.out_bytes(0x3f8, s.as_bytes())
    }
    /// Resets through the keyboard controller (0xfe to port 0x64), then halts.
    pub fn reset(mut self) -> Self {
        self.0.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4]);
        self
    }
    /// `jmp $`: spins forever.
    pub fn spin(mut self) -> Self {
        self.0.extend_from_slice(&[0xeb, 0xfe]);
        self
    }
    /// `ud2` with no IDT: #UD -> #GP -> #DF -> triple fault.
    pub fn ud2(mut self) -> Self {
        self.0.extend_from_slice(&[0x0f, 0x0b]);
        self
    }
    /// Reads 4 bytes at `addr` (`mov edx, addr; mov eax, [rdx]`) and prints them on COM1.
    pub fn print_u32_at(mut self, addr: u32) -> Self {
        self.0.push(0xba);
        self.0.extend_from_slice(&addr.to_le_bytes()); // mov edx, imm32 (zero-extends)
        self.0.extend_from_slice(&[0x8b, 0x02]); // mov eax, [rdx]
        self.0.extend_from_slice(&[0x89, 0xc1]); // mov ecx, eax
        self.0.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        for _ in 0..4 {
            self.0.extend_from_slice(&[0x88, 0xc8, 0xee]); // mov al, cl; out dx, al
            self.0.extend_from_slice(&[0xc1, 0xe9, 0x08]); // shr ecx, 8
        }
        self
    }
}

/// Writes `bytes` to `dir/name`.
pub fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs moat-vmm with `args` to completion (with a deadline).
pub fn run(args: &[&str]) -> Output {
    let child = Command::new(vmm())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_deadline(child, std::time::Duration::from_secs(60))
}

/// Waits for `child`, killing it after `limit`.
pub fn wait_with_deadline(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    let until = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "moat-vmm did not exit within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
