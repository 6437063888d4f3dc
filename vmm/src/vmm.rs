//! Putting a VM together and running it: every check first, then memory, kernel and vCPUs, then
//! (after jailing) the sockets and devices, then one thread per vCPU, the API thread, and the
//! device event loop on the main thread until the guest powers off or something ends it.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use crate::api::{ApiSocket, Target};
use crate::arch::{boot_params, cpuid, layout, mptable, regs};
use crate::config::{self, SerialOutput, VmConfig};
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::boot_timer::{BOOT_TIMER_LEN, BootTimer};
use crate::devices::legacy::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::legacy::serial::{
    COM1_BASE, COM1_LEN, Console, IrqTrigger, SerialDevice, Sink,
};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::vsock::{Muxer, Vsock};
use crate::event_loop::EventLoop;
use crate::loader::{self, KernelKind, MmioSlot};
use crate::metrics::Metrics;
use crate::seccomp::{self, ThreadKind};
use crate::vstate::control::{Control, ExitReason};
use crate::vstate::vcpu::{self, Context, Vcpu};
use crate::vstate::vm::Vm;
use crate::{jail, memory};

/// Errors before the guest runs. Each is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// A Linux guest on a PVM host.
    #[error("{0}")]
    Pvm(String),
    /// Loading guest code.
    #[error(transparent)]
    Loader(#[from] loader::Error),
    /// /dev/kvm.
    #[error(transparent)]
    Kvm(#[from] crate::vstate::kvm::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// The VM.
    #[error(transparent)]
    Vm(#[from] crate::vstate::vm::Error),
    /// A vCPU.
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    /// CPUID.
    #[error(transparent)]
    Cpuid(#[from] cpuid::Error),
    /// Boot structures.
    #[error(transparent)]
    Regs(#[from] regs::Error),
    /// Boot parameters.
    #[error(transparent)]
    BootParams(#[from] boot_params::Error),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::Error),
    /// A device.
    #[error("{0}")]
    Device(String),
    /// The jail.
    #[error(transparent)]
    Jail(#[from] jail::Error),
    /// The API socket.
    #[error(transparent)]
    Api(#[from] crate::api::Error),
    /// The vsock socket.
    #[error(transparent)]
    Vsock(#[from] crate::devices::virtio::vsock::muxer::Error),
    /// Seccomp.
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
    /// Anything else the host refused.
    #[error("{0}")]
    Host(String),
}

fn host(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Host(format!("{what}: {e}"))
}

/// Where virtio device `i` lives.
fn slot(i: usize) -> MmioSlot {
    MmioSlot {
        base: layout::VIRTIO_MMIO_START + i as u64 * layout::VIRTIO_MMIO_SIZE,
        irq: layout::VIRTIO_IRQ_START + i as u32,
    }
}

/// Refuses a Linux guest where `/dev/kvm` cannot run one.
fn check_flavour(cfg: &VmConfig, kind: Option<KernelKind>) -> Result<(), Error> {
    let linux = kind.is_some_and(|k| k.is_linux());
    if !linux || cfg.dry_boot || cfg.force_pvm {
        return Ok(());
    }
    let p = moat_host::kvm::probe();
    if p.flavour == moat_host::kvm::Flavour::Pvm {
        return Err(Error::Pvm(format!(
            "this host's /dev/kvm is PVM ({}): it cannot run a Linux guest; run inside the KVM rig \
             (moat-rig run -- moat-vmm ...) or on a host with hardware KVM (kvm_intel/kvm_amd)",
            p.module.as_deref().unwrap_or("no vmx/svm")
        )));
    }
    Ok(())
}

/// Builds and runs the VM described by `cfg`; `started` is when the process started. Returns why
/// the VM ended (the process exit status is [`ExitReason::code`]).
pub fn run(cfg: VmConfig, started: Instant) -> Result<ExitReason, Error> {
    config::validate(&cfg)?;
    let kind = cfg.kernel.as_deref().map(loader::detect).transpose()?;
    check_flavour(&cfg, kind)?;

    let kvm = crate::vstate::kvm::open(&cfg.kvm_device)?;
    let mem_bytes = cfg.memory_bytes();
    let ram = memory::ram_ranges(mem_bytes);
    let mem = memory::create(&ram)?;
    let loaded = match (&cfg.kernel, kind, &cfg.payload) {
        (Some(k), Some(kind), _) => loader::load_kernel(&mem, mem_bytes, k, kind)?,
        (_, _, Some(p)) => loader::load_payload(&mem, mem_bytes, p)?,
        _ => return Err(Error::Host("no kernel".into())),
    };
    let low_end = memory::low_ram_end(&ram);
    let initrd = match &cfg.initramfs {
        Some(p) => Some(loader::load_initrd(
            &mem, mem_bytes, low_end, loaded.end, p,
        )?),
        None => None,
    };
    let n_virtio = cfg.block.len() + usize::from(cfg.vsock.is_some());
    let slots: Vec<MmioSlot> = (0..n_virtio).map(slot).collect();
    let cmdline = loader::build_cmdline(&cfg.cmdline, &slots)?;
    let cmdline_len = loader::write_cmdline(&mem, &cmdline)?;
    regs::write_boot_tables(&mem, loaded.entry.protocol)?;
    boot_params::write(
        &mem,
        loaded.entry.protocol,
        &boot_params::BootInfo {
            ram: &ram,
            cmdline_len,
            initrd,
            setup_header: loaded.setup_header,
        },
    )?;
    mptable::setup(&mem, cfg.vcpus)?;

    let vm = Vm::new(&kvm, &mem)?;
    let supported = cpuid::supported(&kvm)?;
    let vcpus = (0..cfg.vcpus)
        .map(|i| Vcpu::new(vm.fd(), i, cfg.vcpus, &supported, &cfg.cpuid, loaded.entry))
        .collect::<Result<Vec<_>, _>>()?;
    if cfg.dry_boot {
        return Ok(ExitReason::DryBoot);
    }

    // Everything the jailed VMM needs is opened now.
    let sink = match &cfg.serial {
        SerialOutput::Stdout => Sink::Stdout,
        SerialOutput::None => Sink::None,
        SerialOutput::File(p) => Sink::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    Error::Host(format!("cannot open serial output {}: {e}", p.display()))
                })?,
        ),
    };
    let metrics = Arc::new(Metrics::default());
    let mut blocks = Vec::new();
    for (i, b) in cfg.block.iter().enumerate() {
        let id = b.id.clone().unwrap_or_else(|| format!("moat-blk{i}"));
        blocks.push(
            Block::open(&b.path, b.read_only, &id, metrics.clone())
                .map_err(|e| Error::Device(e.to_string()))?,
        );
    }
    let (vsock_path, api_path) = match &cfg.jail {
        Some(j) => {
            jail::enter(j)?;
            (
                cfg.vsock.as_ref().map(|v| jail::inside(&j.dir, &v.socket)),
                cfg.api_socket.as_ref().map(|a| jail::inside(&j.dir, a)),
            )
        }
        None => (
            cfg.vsock.as_ref().map(|v| v.socket.clone()),
            cfg.api_socket.clone(),
        ),
    };

    let control = Arc::new(Control::new(started).map_err(|e| Error::Host(e.to_string()))?);
    let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for b in blocks {
        virtio.push(Box::new(b));
    }
    if let (Some(v), Some(path)) = (&cfg.vsock, &vsock_path) {
        let muxer = Muxer::new(path, v.cid, metrics.clone())?;
        virtio.push(Box::new(Vsock::new(v.cid, muxer, metrics.clone())));
    }
    let mut cleanup: Vec<PathBuf> = vsock_path.iter().cloned().collect();
    let api = match &api_path {
        Some(p) => Some(Arc::new(ApiSocket::bind(p)?)),
        None => None,
    };
    cleanup.extend(api_path.iter().cloned());

    // Buses.
    let serial_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?;
    vm.register_irqfd(&serial_evt, layout::SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        IrqTrigger(serial_evt),
        Console::new(sink, control.clone(), metrics.clone()),
    )));
    let mut pio = Bus::new();
    let overlap = |e: crate::devices::bus::Overlap| Error::Device(e.to_string());
    pio.insert(serial.clone(), COM1_BASE, COM1_LEN)
        .map_err(overlap)?;
    pio.insert(
        Arc::new(Mutex::new(I8042::new(control.clone()))),
        I8042_BASE,
        I8042_LEN,
    )
    .map_err(overlap)?;
    if cfg.boot_timer {
        let t: Arc<Mutex<dyn BusDevice>> =
            Arc::new(Mutex::new(BootTimer::new(control.clone(), metrics.clone())));
        pio.insert(t, u64::from(moat_abi::BOOT_TIMER_PORT), BOOT_TIMER_LEN)
            .map_err(overlap)?;
    }
    let n_blocks = cfg.block.len();
    let mut mmio = Bus::new();
    let mut transports = Vec::new();
    for (i, dev) in virtio.into_iter().enumerate() {
        let s = slot(i);
        let irq_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?;
        vm.register_irqfd(&irq_evt, s.irq)?;
        let t = MmioTransport::new(dev, mem.clone(), irq_evt)
            .map_err(|e| Error::Device(e.to_string()))?;
        for (q, evt) in t.queue_evts().iter().enumerate() {
            vm.register_mmio_ioevent(evt, s.base + QUEUE_NOTIFY_OFFSET, q as u32)?;
        }
        let t = Arc::new(Mutex::new(t));
        mmio.insert(t.clone(), s.base, layout::VIRTIO_MMIO_SIZE)
            .map_err(overlap)?;
        transports.push(t);
    }
    let mut event_loop = EventLoop::new(transports.clone(), control.clone())
        .map_err(|e| Error::Host(e.to_string()))?;

    seccomp::install_sigsys_handler().map_err(host("SIGSYS handler"))?;
    vcpu::install_kick_handler().map_err(host("signal handler"))?;
    let ctx = Context {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        control: control.clone(),
        metrics: metrics.clone(),
    };
    let use_seccomp = cfg.seccomp;
    let mut threads = Vec::new();
    for v in vcpus {
        let ctx = ctx.clone();
        let name = format!("vcpu{}", v.id());
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                if use_seccomp && let Err(e) = seccomp::apply(ThreadKind::Vcpu) {
                    ctx.control
                        .request_exit(ExitReason::VmmError(e.to_string()));
                    return;
                }
                vcpu::note_start(&ctx);
                v.run(&ctx);
                // The VM is over and the process is about to exit: stay parked rather than drop
                // shared devices here (their teardown is the main thread's job, under its filter).
                loop {
                    std::thread::park();
                }
            })
            .map_err(host("starting a vCPU thread"))?;
        threads.push(h);
    }
    use std::os::unix::thread::JoinHandleExt;
    let tids: Vec<libc::pthread_t> = threads.iter().map(|h| h.as_pthread_t()).collect();
    if let Some(api) = api {
        let kick_tids = tids.clone();
        let target = Target {
            control: control.clone(),
            metrics: metrics.clone(),
            kick: Box::new(move || {
                for t in &kick_tids {
                    // SAFETY: the threads are joinable and never detached, so the ids stay valid.
                    unsafe { libc::pthread_kill(*t, vcpu::kick_signal()) };
                }
            }),
            vcpus: tids.len(),
            disks: transports[..n_blocks].to_vec(),
        };
        let c = control.clone();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                if use_seccomp && let Err(e) = seccomp::apply(ThreadKind::Api) {
                    c.request_exit(ExitReason::VmmError(e.to_string()));
                    return;
                }
                api.serve(&target);
            })
            .map_err(host("starting the API thread"))?;
    }
    if use_seccomp && let Err(e) = seccomp::apply(ThreadKind::Vmm) {
        control.request_exit(ExitReason::VmmError(e.to_string()));
    }
    let reason = event_loop.run();
    if let Ok(mut s) = serial.lock() {
        s.finish();
    }
    for p in cleanup {
        let _ = std::fs::remove_file(p);
    }
    // Keep guest memory mapped until the process exits: vCPU threads may still be in KVM_RUN.
    std::mem::forget(mem);
    Ok(reason)
}
