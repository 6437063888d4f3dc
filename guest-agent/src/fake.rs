//! A recording [`Sys`] for unit tests: it logs every call as one line and answers from a script.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use crate::sys::{Sys, WaitStatus};

/// Records calls; answers reads from `files`, reaps from `children`.
#[derive(Default)]
pub struct Fake {
    pub pid: u32,
    pub calls: Vec<String>,
    pub files: HashMap<String, String>,
    pub initramfs: bool,
    /// What successive `reap_one` calls return; empty = ECHILD.
    pub children: VecDeque<Option<(i32, WaitStatus)>>,
    /// Paths whose writes fail with EINVAL.
    pub failing_writes: Vec<String>,
    /// Writes that fail when they contain this text.
    pub failing_contents: Vec<String>,
}

impl Fake {
    pub fn pid1(cmdline: &str) -> Self {
        let mut f = Self {
            pid: 1,
            initramfs: true,
            ..Self::default()
        };
        f.files.insert("/proc/cmdline".into(), cmdline.into());
        f
    }

    pub fn has(&self, call: &str) -> bool {
        self.calls.iter().any(|c| c == call)
    }

    pub fn index(&self, call: &str) -> usize {
        self.calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no call {call:?} in {:#?}", self.calls))
    }
}

impl Sys for Fake {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn mkdir_all(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.calls.push(format!("mkdir {path} {mode:o}"));
        Ok(())
    }
    fn mount(
        &mut self,
        src: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()> {
        self.calls
            .push(format!("mount {src} {target} {fstype} {flags:#x} {data}"));
        Ok(())
    }
    fn switch_root(&mut self, new_root: &str) -> io::Result<()> {
        self.calls.push(format!("switch_root {new_root}"));
        self.initramfs = false;
        Ok(())
    }
    fn root_is_initramfs(&mut self) -> io::Result<bool> {
        Ok(self.initramfs)
    }
    fn read_file(&mut self, path: &str) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn write_file(&mut self, path: &str, contents: &str) -> io::Result<()> {
        self.calls.push(format!("write {path} {contents}"));
        if self.failing_writes.iter().any(|p| p == path)
            && self
                .failing_contents
                .iter()
                .any(|c| contents.contains(c.as_str()))
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        self.calls.push(format!("symlink {target} {link}"));
        Ok(())
    }
    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.calls.push(format!("hostname {name}"));
        Ok(())
    }
    fn set_clock(&mut self, secs: i64, nanos: u32) -> io::Result<()> {
        self.calls.push(format!("clock {secs}.{nanos:09}"));
        Ok(())
    }
    fn kernel_release(&mut self) -> io::Result<String> {
        Ok("6.12.0-test".into())
    }
    fn console(&mut self, line: &str) -> io::Result<()> {
        self.calls.push(format!("console {line}"));
        Ok(())
    }
    fn outb(&mut self, port: u16, value: u8) -> io::Result<()> {
        self.calls.push(format!("outb {port:#x} {value:#x}"));
        Ok(())
    }
    fn kill_all(&mut self, signal: i32) -> io::Result<()> {
        self.calls.push(format!("kill_all {signal}"));
        Ok(())
    }
    fn reap_one(&mut self) -> io::Result<Option<(i32, WaitStatus)>> {
        match self.children.pop_front() {
            Some(r) => Ok(r),
            None => Err(io::Error::from_raw_os_error(libc::ECHILD)),
        }
    }
    fn sync(&mut self) {
        self.calls.push("sync".into());
    }
    fn sleep(&mut self, duration: Duration) {
        self.calls.push(format!("sleep {}ms", duration.as_millis()));
    }
    fn restart(&mut self) -> io::Error {
        self.calls.push("restart".into());
        io::Error::from_raw_os_error(libc::EPERM)
    }
}
