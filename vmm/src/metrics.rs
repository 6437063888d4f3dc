//! Counters the control API reports: boot time, VM exits per reason, and device activity. Plain
//! relaxed atomics, written from any thread, read as a JSON snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fm])* pub $field: AtomicU64,)*
        }
        impl $name {
            /// The counters as a JSON object.
            pub fn snapshot(&self) -> Value {
                let mut m = serde_json::Map::new();
                $(m.insert(stringify!($field).into(), self.$field.load(Ordering::Relaxed).into());)*
                Value::Object(m)
            }
        }
    };
}

counters!(
    /// VM exits by reason (summed over vCPUs).
    Exits {
        /// Port-I/O reads.
        io_in,
        /// Port-I/O writes.
        io_out,
        /// MMIO reads.
        mmio_read,
        /// MMIO writes.
        mmio_write,
        /// HLT with no in-kernel irqchip.
        hlt,
        /// Triple faults.
        shutdown,
        /// Interrupted by a signal (pause, stop).
        intr,
        /// System events.
        system_event,
        /// Failed VM entries.
        fail_entry,
        /// KVM internal errors.
        internal_error,
        /// Anything else.
        other,
        /// Port-I/O to a port no device claims.
        unclaimed_io,
        /// MMIO to an address no device claims.
        unclaimed_mmio,
    }
);

counters!(
    /// The vsock device.
    Vsock {
        /// Packets delivered to the guest.
        rx_packets,
        /// Payload bytes delivered to the guest.
        rx_bytes,
        /// Packets taken from the guest.
        tx_packets,
        /// Payload bytes taken from the guest.
        tx_bytes,
        /// Connections established (either direction).
        connections,
        /// Connections reset.
        resets,
        /// Malformed packets or descriptor chains rejected.
        bad_packets,
    }
);

counters!(
    /// All virtio-blk devices.
    Block {
        /// Read requests.
        reads,
        /// Bytes read.
        read_bytes,
        /// Write requests.
        writes,
        /// Bytes written.
        write_bytes,
        /// Flushes.
        flushes,
        /// GET_ID requests.
        get_id,
        /// Requests failed or rejected.
        errors,
    }
);

/// Everything.
#[derive(Debug, Default)]
pub struct Metrics {
    /// VM exits.
    pub exits: Exits,
    /// vsock.
    pub vsock: Vsock,
    /// virtio-blk.
    pub block: Block,
    /// Bytes the guest wrote to the serial console.
    pub serial_bytes: AtomicU64,
    /// Microseconds from process start to the guest's ready write on the boot-timer port (0: not yet).
    pub boot_ready_us: AtomicU64,
    /// Microseconds from process start to the first `KVM_RUN`.
    pub vcpu_start_us: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The whole snapshot as JSON.
    pub fn snapshot(&self) -> Value {
        let ready = self.boot_ready_us.load(Ordering::Relaxed);
        json!({
            "boot_ready_us": if ready == 0 { Value::Null } else { ready.into() },
            "vcpu_start_us": self.vcpu_start_us.load(Ordering::Relaxed),
            "exits": self.exits.snapshot(),
            "serial_bytes": self.serial_bytes.load(Ordering::Relaxed),
            "vsock": self.vsock.snapshot(),
            "block": self.block.snapshot(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_has_every_counter() {
        let m = Metrics::default();
        Metrics::inc(&m.exits.io_out);
        Metrics::add(&m.vsock.rx_bytes, 10);
        let s = m.snapshot();
        assert_eq!(s["exits"]["io_out"], 1);
        assert_eq!(s["vsock"]["rx_bytes"], 10);
        assert_eq!(s["boot_ready_us"], Value::Null);
        assert_eq!(s["block"]["errors"], 0);
    }
}
