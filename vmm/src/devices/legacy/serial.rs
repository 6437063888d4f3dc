//! COM1: a 16550A UART (vm-superio) at port 0x3f8, IRQ 4. The guest's console goes to stdout, a
//! file or nowhere, line by line; every line is also checked for a kernel panic, so that the
//! reboot the panic causes is reported as a crash rather than a power-off.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::metrics::Metrics;
use crate::vstate::control::Control;

/// The port range of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Its length.
pub const COM1_LEN: u64 = 8;

/// What the kernel prints when it panics.
const PANIC_MARKER: &str = "Kernel panic - not syncing";
/// Longest line kept before it is written out anyway.
const MAX_LINE: usize = 1024;

/// An interrupt line backed by an eventfd registered as a KVM irqfd.
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where console lines go.
pub enum Sink {
    /// The VMM's stdout.
    Stdout,
    /// A file (opened for append).
    File(File),
    /// Nowhere.
    None,
}

/// The UART's output side: collects bytes into lines, scans them, writes them out.
pub struct Console {
    sink: Sink,
    line: Vec<u8>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
}

impl Console {
    /// A console writing to `sink`.
    pub fn new(sink: Sink, control: Arc<Control>, metrics: Arc<Metrics>) -> Self {
        Self {
            sink,
            line: Vec::with_capacity(128),
            control,
            metrics,
        }
    }

    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        if let Some(i) = text.find(PANIC_MARKER) {
            self.control
                .note_panic(text[i..].trim_end_matches(['\r', '\n']).to_string());
        }
        // A console that cannot be written to must not stop the guest.
        let _ = match &mut self.sink {
            Sink::Stdout => io::stdout().lock().write_all(&self.line),
            Sink::File(f) => f.write_all(&self.line),
            Sink::None => Ok(()),
        };
        self.line.clear();
    }

    /// Writes out a partial last line (at exit).
    pub fn finish(&mut self) {
        self.emit();
        if let Sink::Stdout = self.sink {
            let _ = io::stdout().flush();
        }
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Metrics::add(&self.metrics.serial_bytes, buf.len() as u64);
        for &b in buf {
            self.line.push(b);
            if b == b'\n' || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
        Ok(buf.len())
    }

    // Lines are written whole; the UART flushes after every byte, which would be a syscall each.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART on the I/O bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, Console>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `console`.
    pub fn new(irq: IrqTrigger, console: Console) -> Self {
        Self {
            uart: Serial::new(irq, console),
        }
    }

    /// Writes out any partial line.
    pub fn finish(&mut self) {
        self.uart.writer_mut().finish();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && offset < COM1_LEN {
            data[0] = self.uart.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && offset < COM1_LEN {
            // An interrupt that cannot be raised is not the guest's fault; nothing to do.
            let _ = self.uart.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn lines_reach_the_file_and_a_panic_is_noticed() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("console");
        let file = File::create(&path).unwrap();
        let control = Arc::new(Control::new(Instant::now()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let console = Console::new(Sink::File(file), control.clone(), metrics.clone());
        let mut s = SerialDevice::new(IrqTrigger(EventFd::new(0).unwrap()), console);
        let text = b"hello\r\n[ 1.0] Kernel panic - not syncing: Attempted to kill init!\npartial";
        for b in text {
            s.write(0, &[*b]);
        }
        s.finish();
        let out = std::fs::read_to_string(&path).unwrap();
        assert!(out.starts_with("hello\r\n"));
        assert!(out.ends_with("partial"));
        control.request_exit(crate::vstate::control::ExitReason::PowerOff);
        let r = control.exit_reason().unwrap();
        assert_eq!(
            r,
            crate::vstate::control::ExitReason::GuestPanic(
                "Kernel panic - not syncing: Attempted to kill init!".into()
            )
        );
        assert_eq!(
            metrics
                .serial_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            text.len() as u64
        );
    }

    #[test]
    fn odd_sized_accesses_are_ignored() {
        let control = Arc::new(Control::new(Instant::now()).unwrap());
        let console = Console::new(Sink::None, control, Arc::new(Metrics::default()));
        let mut s = SerialDevice::new(IrqTrigger(EventFd::new(0).unwrap()), console);
        let mut w = [0u8; 2];
        s.read(0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
        s.write(0, &[1, 2]);
        let mut b = [0u8; 1];
        s.read(5, &mut b); // line status: transmitter empty
        assert_ne!(b[0] & 0x20, 0);
    }
}
