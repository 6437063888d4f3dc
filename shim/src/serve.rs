//! The long-lived shim: serves the Task API on the socket `start` handed over as fd 3 until
//! containerd's `Shutdown` (or SIGTERM/SIGINT), then flushes its events, removes its socket and
//! exits.

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::address;
use crate::args::Args;
use crate::error::{Error, Result};
use crate::events::{Publisher, Sink};
use crate::logging;
use crate::pod::Pod;
use crate::pump;
use crate::task::TaskService;

/// Where the signal handler writes.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write is async-signal-safe; one byte from a local.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

fn listener_fd(args: &Args) -> Result<RawFd> {
    if let Some(sock) = &args.socket {
        return match address::bind_or_join(sock)? {
            address::Bound::New(l) => Ok(l.into_raw_fd()),
            address::Bound::Existing => Err(Error::FailedPrecondition(format!(
                "another shim already serves {sock}"
            ))),
        };
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes into `st`, which is large enough.
    let rc = unsafe { libc::fstat(3, st.as_mut_ptr()) };
    // SAFETY: fstat returned 0, so `st` is filled.
    if rc != 0 || unsafe { st.assume_init() }.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Error::InvalidArgument(
            "no listening socket at fd 3: the shim is started by `containerd-shim-moat-v2 start`"
                .into(),
        ));
    }
    // SAFETY: F_SETFD takes no pointer; fd 3 is ours from here on.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(3)
}

fn install_signals(tx: mpsc::Sender<()>) -> Result<()> {
    let (r, w) = pump::pipe().map_err(|e| Error::io("creating the signal pipe", e))?;
    SIGNAL_PIPE.store(w.into_raw_fd(), Ordering::Relaxed);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls write(2); the sigaction struct is local.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(Error::last_os("installing a signal handler"));
            }
        }
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut b = 0u8;
            // SAFETY: reads one byte into a local from our pipe.
            let n = unsafe { libc::read(r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
            if n == 1 {
                tracing::info!("signal {b}: shutting down");
                let _ = tx.send(());
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    Ok(())
}

/// Serves until shutdown.
pub fn run(args: &Args) -> Result<()> {
    let bundle = std::env::current_dir().map_err(|e| Error::io("finding the bundle (cwd)", e))?;
    logging::init(logging::open_log_fifo(&bundle), args.debug);
    let own_address = address::read_address_file(&bundle).ok();
    let fd = listener_fd(args)?;

    let sink = match std::env::var("TTRPC_ADDRESS") {
        Ok(a) if !a.is_empty() => Sink::Ttrpc(a),
        _ if !args.address.is_empty() => Sink::Binary {
            publish_binary: args.publish_binary.clone(),
            address: args.address.clone(),
        },
        _ => Sink::Discard,
    };
    let publisher = Publisher::start(&args.namespace, sink);
    let (tx, rx) = mpsc::channel();
    let root = crate::backends::state_root(&args.address, &args.namespace);
    let pod = Pod::new(&args.namespace, root.clone(), publisher.clone(), tx.clone());
    install_signals(tx)?;

    let service: Arc<dyn containerd_shim_protos::Task + Send + Sync> =
        Arc::new(TaskService::new(pod.clone()));
    let mut server = ttrpc::Server::new()
        .add_listener(fd)
        .map_err(|e| Error::InvalidArgument(format!("serving fd {fd}: {e}")))?
        .register_service(containerd_shim_protos::create_task(service));
    server
        .start()
        .map_err(|e| Error::InvalidArgument(format!("starting the ttrpc server: {e}")))?;
    tracing::info!(id = %args.id, namespace = %args.namespace, pid = std::process::id(), "shim serving");

    let _ = rx.recv();
    // Signals and a Shutdown with containers left: take the pod down (a no-op after a clean
    // Shutdown, which already did).
    let _ = pod.shutdown(true);
    publisher.flush(Duration::from_secs(5));
    if let Some(a) = own_address {
        let _ = address::remove_socket(&a);
    }
    // The state root is shared by the namespace's pods: removed only if empty.
    crate::backends::remove_state_root(&root);
    tracing::info!("shim exiting");
    Ok(())
}
