//! The few legacy PC devices a Linux guest without ACPI or PCI still needs: the serial console,
//! the keyboard controller (its reset is the power-off path) and moat's boot-timer port.

pub mod boot_timer;
pub mod i8042;
pub mod serial;
