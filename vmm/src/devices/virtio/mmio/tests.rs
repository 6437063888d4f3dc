use super::*;
use std::sync::Mutex;

/// What the probe device was activated with: (features, queue sizes).
type Activated = Arc<Mutex<Option<(u64, Vec<u16>)>>>;

/// Records what the transport hands it.
#[derive(Default)]
struct Probe {
    activated: Activated,
    resets: Arc<Mutex<u32>>,
}

impl VirtioDevice for Probe {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn features(&self) -> u64 {
        1 << 3
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_bytes(&[0xaa, 0xbb], offset, data);
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        _interrupt: Arc<Interrupt>,
    ) -> Result<(), super::super::ActivateError> {
        *self.activated.lock().unwrap() =
            Some((features, queues.iter().map(|q| q.size()).collect()));
        Ok(())
    }
    fn reset(&mut self) {
        *self.resets.lock().unwrap() += 1;
    }
    fn process_queue(&mut self, _index: usize) {}
}

fn transport() -> (MmioTransport, Activated, Arc<Mutex<u32>>) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let p = Probe::default();
    let (a, r) = (p.activated.clone(), p.resets.clone());
    (
        MmioTransport::new(Box::new(p), mem, EventFd::new(0).unwrap()).unwrap(),
        a,
        r,
    )
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32, base: u64) {
    wr(t, REG_QUEUE_SEL, sel);
    wr(t, REG_QUEUE_NUM, size);
    wr(t, REG_QUEUE_DESC_LOW, base as u32);
    wr(t, REG_QUEUE_DESC_HIGH, (base >> 32) as u32);
    wr(t, REG_QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
    wr(t, REG_QUEUE_DRIVER_HIGH, 0);
    wr(t, REG_QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
    wr(t, REG_QUEUE_DEVICE_HIGH, 0);
    wr(t, REG_QUEUE_READY, 1);
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, REG_STATUS, STATUS_ACKNOWLEDGE);
    wr(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(t, REG_DRIVER_FEATURES_SEL, 0);
    wr(t, REG_DRIVER_FEATURES, features as u32);
    wr(t, REG_DRIVER_FEATURES_SEL, 1);
    wr(t, REG_DRIVER_FEATURES, (features >> 32) as u32);
    wr(
        t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
}

const OK: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;

#[test]
fn identity_registers() {
    let (mut t, _, _) = transport();
    assert_eq!(rd(&mut t, REG_MAGIC), MAGIC);
    assert_eq!(rd(&mut t, REG_VERSION), 2);
    assert_eq!(rd(&mut t, REG_DEVICE_ID), 42);
    wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1, "VERSION_1 is offered");
    wr(&mut t, REG_QUEUE_SEL, 1);
    assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 8);
    wr(&mut t, REG_QUEUE_SEL, 7);
    assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0);
    let mut c = [0u8; 4];
    t.read(CONFIG_START, &mut c);
    assert_eq!(c, [0xaa, 0xbb, 0, 0]);
}

#[test]
fn full_handshake_activates_with_the_guests_queues() {
    let (mut t, act, _) = transport();
    negotiate(&mut t, (1 << 32) | (1 << 3));
    assert_eq!(rd(&mut t, REG_STATUS), OK);
    setup_queue(&mut t, 0, 16, 0x10000);
    setup_queue(&mut t, 1, 4, 0x20000);
    wr(&mut t, REG_STATUS, OK | STATUS_DRIVER_OK);
    assert!(t.is_active());
    assert_eq!(
        *act.lock().unwrap(),
        Some(((1 << 32) | (1 << 3), vec![16, 4]))
    );
    // Queue registers are frozen while running.
    wr(&mut t, REG_QUEUE_SEL, 0);
    wr(&mut t, REG_QUEUE_READY, 0);
    assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
}

#[test]
fn features_the_device_lacks_or_no_version_1_are_refused() {
    let (mut t, _, _) = transport();
    negotiate(&mut t, (1 << 32) | (1 << 5));
    assert_eq!(rd(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
    let (mut t, _, _) = transport();
    negotiate(&mut t, 1 << 3);
    assert_eq!(rd(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
}

#[test]
fn queues_outside_memory_or_bad_sizes_do_not_activate() {
    for (size, base) in [
        (16, 0xfff_0000u64),
        (3, 0x10000),
        (0, 0x10000),
        (1 << 20, 0x10000),
    ] {
        let (mut t, act, _) = transport();
        negotiate(&mut t, 1 << 32);
        setup_queue(&mut t, 0, size, base);
        wr(&mut t, REG_STATUS, OK | STATUS_DRIVER_OK);
        assert!(!t.is_active(), "size {size} base {base:#x}");
        assert!(act.lock().unwrap().is_none());
        assert_ne!(rd(&mut t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
    }
}

#[test]
fn reset_returns_to_the_initial_state() {
    let (mut t, _, resets) = transport();
    negotiate(&mut t, 1 << 32);
    setup_queue(&mut t, 0, 16, 0x10000);
    wr(&mut t, REG_STATUS, OK | STATUS_DRIVER_OK);
    assert!(t.is_active());
    wr(&mut t, REG_STATUS, 0);
    assert!(!t.is_active());
    assert_eq!(*resets.lock().unwrap(), 1);
    assert_eq!(rd(&mut t, REG_STATUS), 0);
    wr(&mut t, REG_QUEUE_SEL, 0);
    assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
}

#[test]
fn odd_accesses_and_status_regressions_are_ignored() {
    let (mut t, _, _) = transport();
    let mut two = [0u8; 2];
    t.read(REG_MAGIC, &mut two);
    assert_eq!(two, [0, 0]);
    t.write(REG_STATUS, &[1, 0]);
    assert_eq!(rd(&mut t, REG_STATUS), 0);
    wr(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(&mut t, REG_STATUS, STATUS_DRIVER);
    assert_eq!(rd(&mut t, REG_STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // DRIVER_OK before FEATURES_OK does nothing.
    wr(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert!(!t.is_active());
}

#[test]
fn notify_without_ioeventfd_reaches_the_queue_eventfd() {
    let (mut t, _, _) = transport();
    wr(&mut t, REG_QUEUE_NOTIFY, 1);
    assert_eq!(t.queue_evts()[1].read().unwrap(), 1);
    wr(&mut t, REG_QUEUE_NOTIFY, 9);
}
