//! The `vm` wall: each pod is a KVM microVM (`moat-vmm`) booting moat's guest kernel, whose PID 1
//! (`moat-agent`) runs the pod's containers with the same `moat-sandbox` code the `ns` wall uses,
//! each in its own namespaces and cgroup inside the guest.
//!
//! The VM boots when the pod's first container is created. Its root file system goes in as a
//! read-only erofs image on virtio-blk (`vda`), built from the container's rootfs directory and
//! cached by content hash (`moat_artifacts::rootfs_image`); the agent lays a tmpfs overlay on
//! it. Requests go over vsock (protocol: `moat-agent-proto`), one connection per request, and each
//! standard stream of a process has a connection of its own, so a slow reader holds back only its
//! own stream (vsock credit), nothing is buffered without bound, and nothing is lost.
//!
//! Containers created after the VM booted get their root file system on one of the spare disks the
//! VM booted with (empty until moat-vmm's `disk N` puts an image in; containers with the same
//! image share its disk). Limits of this version: at most `spare_disks` further images per pod,
//! and terminals, pause/resume and live resource updates are refused with an error that says so.

pub mod check;
mod client;
mod instance;
mod machine;
mod process;
mod spec;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_agent_proto::{self as proto, CreateContainer, Request, Response, Rootfs};
use moat_artifacts::rootfs_image::{self, Format};

use crate::{Backend, BackendKind, ContainerConfig, Error, Instance, Result};

pub use instance::VmInstance;
use machine::{BootConfig, Machine};
use process::{Io, Proc};

/// How a [`VmBackend`] is set up.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Where the pod's VM keeps its sockets and logs (`<root>/<pod>.vm/`).
    pub root: PathBuf,
    /// The pod's name, for its state directory and the guest's hostname.
    pub pod: String,
    /// Guest kernel (vmlinux or bzImage).
    pub kernel: PathBuf,
    /// Initramfs with `moat-agent` as `/init`.
    pub initramfs: PathBuf,
    /// The `moat-vmm` binary ([`vmm_binary`] finds one).
    pub vmm: PathBuf,
    /// Guest memory in MiB when the container sets no memory limit.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// MiB added to a container's memory limit for the guest kernel and agent.
    pub overhead_mib: u32,
    /// How long the guest may take to boot to its agent.
    pub boot_timeout: Duration,
    /// Empty disks the VM boots with, for containers created later whose root file system
    /// differs from the first one's (a pod's). `moat run` needs none.
    pub spare_disks: u32,
}

impl VmOptions {
    /// Options for pod `pod` under `root` with moat's built guest artifacts (kernel and initramfs
    /// from moat's cache) and the default size: 128 MiB, 1 vCPU. Fails, saying what to build,
    /// if an artifact is missing.
    pub fn with_built_artifacts(root: PathBuf, pod: &str) -> Result<Self> {
        let guest = check::built_artifacts().map_err(Error::Unavailable)?;
        Ok(Self {
            root,
            pod: pod.to_string(),
            kernel: guest.0,
            initramfs: guest.1,
            vmm: vmm_binary()?,
            memory_mib: 128,
            vcpus: 1,
            overhead_mib: 64,
            boot_timeout: Duration::from_secs(120),
            spare_disks: 0,
        })
    }
}

/// The `moat-vmm` binary: `$MOAT_VMM_BIN`, next to this executable, or on `PATH`.
pub fn vmm_binary() -> Result<PathBuf> {
    crate::binary::find(
        "moat-vmm",
        "MOAT_VMM_BIN",
        "build it (cargo build --release -p moat-vmm)",
    )
}

/// One pod on the `vm` wall: at most one VM.
#[derive(Debug)]
pub struct VmBackend {
    opts: VmOptions,
    vm: Mutex<Option<Pod>>,
}

#[derive(Debug)]
struct Pod {
    machine: Arc<Machine>,
    /// What each disk holds, `vda` first; `None`: a spare disk not filled yet.
    disks: Vec<Option<PathBuf>>,
}

impl VmBackend {
    /// A backend for one pod. Checks that KVM can run a Linux guest here; boots nothing yet.
    pub fn new(opts: VmOptions) -> Result<Self> {
        let kvm = moat_host::kvm::probe();
        if !kvm.runs_linux_guests() {
            return Err(Error::Unavailable(format!(
                "{}; `moat check --backend vm` says more",
                check::availability(&kvm).reason
            )));
        }
        proto::validate_id("pod name", &opts.pod).map_err(Error::InvalidArgument)?;
        Ok(Self {
            opts,
            vm: Mutex::new(None),
        })
    }

    /// The VM's state directory: `<root>/<pod>.vm`, the pod's name cut to 24 characters so the
    /// sockets inside stay within the 108 bytes a Unix socket path may have.
    fn vm_dir(&self) -> PathBuf {
        let pod: String = self.opts.pod.chars().take(24).collect();
        self.opts.root.join(format!("{pod}.vm"))
    }

    /// The root directory of the container's image, as the spec names it.
    fn rootfs_dir(config: &ContainerConfig) -> Result<PathBuf> {
        let root = config
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::InvalidArgument("the spec has no root.path".into()))?;
        let dir = if root.is_absolute() {
            root
        } else {
            config.bundle.join(root)
        };
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "root.path {} is not a directory",
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// Guest memory for a container: the default, or its limit plus the overhead if larger.
    fn memory_mib(&self, config: &ContainerConfig) -> u32 {
        let limit = config
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|&l| l > 0)
            .map_or(0, |l| (l as u64).div_ceil(1 << 20));
        let want = limit.saturating_add(u64::from(self.opts.overhead_mib));
        self.opts
            .memory_mib
            .max(u32::try_from(want).unwrap_or(u32::MAX))
    }

    /// The running VM and the device of `image` in it, booting the VM with `image` if needed.
    fn machine_for(&self, image: &Path, memory_mib: u32) -> Result<(Arc<Machine>, String)> {
        let mut vm = self.vm.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pod) = vm.as_mut() {
            if pod.machine.ended() {
                return Err(Error::Unavailable(format!(
                    "the pod's VM has ended: {}",
                    pod.machine.last_words()
                )));
            }
            if let Some(i) = pod.disks.iter().position(|d| d.as_deref() == Some(image)) {
                return Ok((pod.machine.clone(), disk_name(i)));
            }
            let Some(i) = pod.disks.iter().position(Option::is_none) else {
                return Err(Error::Unavailable(format!(
                    "the pod's VM has no spare disk left for another root file system (it \
                     booted with {} disks): give the handler more spare_disks",
                    pod.disks.len()
                )));
            };
            pod.machine.fill_disk(i, image)?;
            pod.disks[i] = Some(image.to_path_buf());
            return Ok((pod.machine.clone(), disk_name(i)));
        }
        let cfg = BootConfig {
            vmm: self.opts.vmm.clone(),
            kernel: self.opts.kernel.clone(),
            initramfs: self.opts.initramfs.clone(),
            memory_mib,
            vcpus: self.opts.vcpus,
            disks: vec![image.to_path_buf()],
            spare_disks: self.opts.spare_disks,
            hostname: self.opts.pod.clone(),
            boot_timeout: self.opts.boot_timeout,
        };
        let dir = self.vm_dir();
        let machine = Arc::new(Machine::boot(&dir, &cfg)?);
        let mut disks: Vec<Option<PathBuf>> = cfg.disks.into_iter().map(Some).collect();
        disks.extend((0..cfg.spare_disks).map(|_| None));
        *vm = Some(Pod {
            machine: machine.clone(),
            disks,
        });
        Ok((machine, disk_name(0)))
    }
}

/// `vda`, `vdb`, ...
fn disk_name(i: usize) -> String {
    format!("vd{}", (b'a' + (i % 26) as u8) as char)
}

impl Backend for VmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    fn create(&self, config: ContainerConfig) -> Result<Box<dyn Instance>> {
        // Everything is checked before the VM is touched.
        proto::validate_id("container id", &config.id).map_err(Error::InvalidArgument)?;
        let dir = Self::rootfs_dir(&config)?;
        let memory = self.memory_mib(&config);
        let mut guest_spec = config.spec.clone();
        let dropped = spec::for_guest(&mut guest_spec);
        if dropped != spec::Dropped::default() {
            tracing::debug!(
                "container {}: left out for the guest: {dropped:?}",
                config.id
            );
        }
        let spec = serde_json::to_value(&guest_spec)
            .map_err(|e| Error::InvalidArgument(format!("the spec: {e}")))?;
        let io = Io::from_process_io(config.io)?;
        let t = std::time::Instant::now();
        let image = rootfs_image::build(&dir, Format::Erofs).map_err(|e| {
            Error::internal(
                format!("building the root file system image of {}", dir.display()),
                e,
            )
        })?;
        tracing::debug!("rootfs image {} in {:?}", image.path.display(), t.elapsed());
        let (machine, device) = self.machine_for(&image.path, memory)?;
        let t = std::time::Instant::now();
        let r = machine.call(&Request::Create(CreateContainer {
            id: config.id.clone(),
            spec,
            rootfs: Rootfs::Block {
                device,
                fstype: Format::Erofs.fstype().to_string(),
            },
            stdio: io.plan(),
        }))?;
        let guest_pid = match r {
            Response::Created { pid } => pid,
            other => return Err(client::unexpected("create", other)),
        };
        tracing::debug!(
            "container {} created in the guest in {:?}",
            config.id,
            t.elapsed()
        );
        match Proc::attach(&machine, &config.id, None, io, guest_pid) {
            Ok(init) => Ok(Box::new(VmInstance::new(config.id, machine, init))),
            Err(e) => {
                let _ = machine.call(&Request::Delete {
                    id: config.id.clone(),
                    exec_id: None,
                });
                Err(e)
            }
        }
    }

    fn shutdown(&self) -> Result<()> {
        let pod = self.vm.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(pod) = pod {
            pod.machine.shutdown(Duration::from_secs(10));
        }
        Ok(())
    }

    fn cleanup_orphan(&self, _id: &str, _bundle: &Path) -> Result<()> {
        // Whatever the dead process left of this pod: its VMM (if still running) and directory.
        machine::kill_orphan(&self.vm_dir());
        Ok(())
    }
}

impl Drop for VmBackend {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
