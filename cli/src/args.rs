//! The command line, as clap parses it. Everything here is data; the verbs live in their modules.
//!
//! The OCI runtime verbs follow runc's spelling (containerd's runc shim drives `moat` through
//! `--runc-binary`, passing runc's global flags), so unknown-but-harmless runc flags are accepted.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// moat: one container runtime, three walls (namespaces, ptrace supervision, microVMs).
#[derive(Debug, Parser)]
#[command(name = "moat", version, about, propagate_version = true)]
pub struct Cli {
    /// Where container state lives (OCI runtime verbs and `moat run`).
    #[arg(long, global = true, value_name = "DIR", default_value = "/run/moat")]
    pub root: PathBuf,

    /// Also write log lines (and errors) to this file, as runc does for containerd.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Format of the --log file: `json` lines carry `level`, `msg` and `time`, as containerd reads.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log debug messages too.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Use systemd to manage cgroups: not supported by moat (it writes cgroupfs directly); turn
    /// `SystemdCgroup` off in containerd's runc options.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,

    /// runc's rootless mode switch; moat runs containers as root only, so only `false`/`auto` work.
    #[arg(long, global = true, value_name = "true|false|auto")]
    pub rootless: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`level`, `msg`, `time`).
    Json,
}

/// A backend name on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Linux namespaces, cgroups, capabilities and seccomp.
    Ns,
    /// A KVM microVM per pod.
    Vm,
    /// Namespaces plus a ptrace syscall supervisor.
    Trace,
}

impl From<BackendArg> for moat_backend::BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Ns => Self::Ns,
            BackendArg::Vm => Self::Vm,
            BackendArg::Trace => Self::Trace,
        }
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one container in the foreground (or, runc-style, a bundle's container by id).
    Run(RunArgs),
    /// Say, per backend, whether it is usable on this host and why.
    Check(CheckArgs),
    /// OCI: create a container and leave it waiting for `start` (runtime-spec "created").
    Create(CreateArgs),
    /// OCI: let a created container run its process.
    Start(IdArg),
    /// OCI: print a container's state as runtime-spec JSON.
    State(IdArg),
    /// OCI: send a signal to a container's init (or, with --all, to all its processes).
    Kill(KillArgs),
    /// OCI: remove a container (its processes, cgroups, mounts and state).
    Delete(DeleteArgs),
    /// OCI: list the host pids of a container's processes.
    Ps(PsArgs),
    /// OCI: run another process in a running container.
    Exec(ExecArgs),
    /// OCI: print a container's resource usage (`--stats`) as runc's event JSON.
    Events(EventsArgs),
    /// OCI: freeze every process of a container.
    Pause(IdArg),
    /// OCI: thaw a paused container.
    Resume(IdArg),
    /// OCI: change a container's resource limits.
    Update(UpdateArgs),
    /// OCI: list the containers under --root.
    List(ListArgs),
    /// OCI: print what this runtime supports (runtime-spec features JSON).
    Features,
    /// Install moat on this node: binaries, guest kernel, handler configs, containerd runtimes.
    Install(InstallArgs),
    /// Undo `moat install`: containerd's config put back byte for byte, moat's files removed.
    Uninstall(UninstallArgs),
    /// Compare runc, crun, moat's walls and QEMU side by side: cost and isolation, with plots.
    Bench(BenchArgs),
}

/// `moat run`.
#[derive(Debug, Args)]
#[command(after_help = "\
EXAMPLES:
  moat run -- sh -c 'echo $$'                 the default busybox image; prints 1
  moat run --memory 32M -- sh -c 'tail /dev/zero'   exits 137 when the limit kills it
  moat run --rootfs /srv/rootfs -- /bin/true
  moat run --bundle B ID                      runc-style: B/config.json's process, container ID
  moat run --bundle B ID -- CMD...            the bundle with another command

With --bundle, a single word is the container id (as in `runc run`); anything after `--` or more
than one word is the command.")]
pub struct RunArgs {
    /// Which wall to run it behind.
    #[arg(long, value_enum, default_value_t = BackendArg::Ns)]
    pub backend: BackendArg,

    /// Root file system directory (never written: the container writes to an overlay on top).
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    pub rootfs: Option<PathBuf>,

    /// OCI bundle directory (holds config.json).
    #[arg(long, short = 'b', value_name = "DIR")]
    pub bundle: Option<PathBuf>,

    /// Memory limit: bytes, or a size such as 32M, 1.5G, 512KiB.
    #[arg(long, short = 'm', value_name = "BYTES|SIZE", value_parser = crate::size::parse_size)]
    pub memory: Option<u64>,

    /// CPU limit, in CPUs (e.g. 0.5).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,

    /// Most processes (and threads) the container may have.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,

    /// Syscall policy file (trace backend only).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Set an environment variable in the container (repeatable).
    #[arg(long, short = 'e', value_name = "K=V")]
    pub env: Vec<String>,

    /// The container's hostname.
    #[arg(long, value_name = "H")]
    pub hostname: Option<String>,

    /// Working directory inside the container.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub cwd: Option<String>,

    /// Run as UID[:GID] inside the container.
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// Container id (default: a fresh one).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// runc: write the init's host pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// runc: send the pseudo-terminal master to this Unix socket.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,

    /// runc: start the container and return without waiting for it.
    #[arg(long, short = 'd')]
    pub detach: bool,

    /// runc: accepted and ignored (moat always uses pivot_root).
    #[arg(long)]
    pub no_pivot: bool,

    /// runc: accepted and ignored.
    #[arg(long)]
    pub no_new_keyring: bool,

    /// `[ID] [--] CMD [ARGS...]`: the command to run (see below).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub args: Vec<String>,
}

/// `moat check`.
#[derive(Debug, Args)]
#[command(after_help = "\
EXIT STATUS:
Without --backend, moat reports every backend and exits 0 when each one is usable or cannot be used
for a reason that is a fact about this machine or this build (e.g. `vm` where /dev/kvm is PVM, or a
backend not available yet): those lines are information. With --backend (repeatable), moat exits 0
only when every backend named is usable, 1 otherwise, so `moat check --backend vm` fails on a PVM
host.")]
pub struct CheckArgs {
    /// Print JSON instead of one line per backend.
    #[arg(long)]
    pub json: bool,

    /// Ask only about these backends (repeatable).
    #[arg(long, value_enum)]
    pub backend: Vec<BackendArg>,
}

/// `moat install`.
#[derive(Debug, Args)]
#[command(after_help = "\
WHAT IT WRITES (under --prefix DIR when given, and the configs then point there):
  /usr/local/bin/{moat,containerd-shim-moat-v2,moat-trace,moat-vmm}   from beside this moat
  /usr/local/share/moat/{vmlinux,initramfs.cpio}   the guest, from ../share/moat beside this moat
                                                   or moat's build cache (else moat-vm is left out)
  /etc/moat/{ns,vm,trace}.toml, /etc/moat/trace-policy.toml   handler configs (your edits are kept)
  /etc/containerd/config.toml   the moat-ns, moat-vm, moat-trace runtimes merged in; the original is
                                kept as config.toml.moat-backup and `moat uninstall` restores it
  /usr/local/share/moat/install-record.json   what was installed, for `moat uninstall`

Installing twice changes nothing. containerd reads its config only when it starts: restart it
afterwards, or pass --restart-containerd.")]
pub struct InstallArgs {
    /// Install below DIR instead of / (DIR/usr/local/bin, DIR/etc/moat, DIR/usr/local/share/moat,
    /// DIR/etc/containerd/config.toml); the configs written point at those paths.
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,

    /// containerd's config file to merge moat's runtimes into (default:
    /// <prefix>/etc/containerd/config.toml); created if missing.
    #[arg(long, value_name = "FILE")]
    pub containerd_config: Option<PathBuf>,

    /// Print a diff of every file install would write, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Restart containerd when its config changed (systemd only; otherwise moat says how).
    #[arg(long)]
    pub restart_containerd: bool,
}

/// `moat uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The --prefix moat was installed with.
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,

    /// Print a diff of every file uninstall would write or remove, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Restart containerd when its config changed (systemd only; otherwise moat says how).
    #[arg(long)]
    pub restart_containerd: bool,
}

/// A container id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The container id.
    pub id: String,
}

/// `moat create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// OCI bundle directory (holds config.json).
    #[arg(long, short = 'b', value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's host pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Send the pseudo-terminal master to this Unix socket (when process.terminal is true).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted and ignored (moat always uses pivot_root).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted and ignored.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (from 3 up) to the container; only 0 is supported.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id.
    pub id: String,
}

/// `moat kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container, not just its init.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// Signal name (TERM, SIGKILL) or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// `moat delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The container id.
    pub id: String,
}

/// `moat ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// `json` prints the pids as a JSON array; `table` a list.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// The container id.
    pub id: String,
    /// ps(1) options (table format only; ignored).
    pub ps_args: Vec<String>,
}

/// `moat exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A runtime-spec `process` JSON file describing what to run.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Return once the process has started.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Write the process's host pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Send the pseudo-terminal master to this Unix socket.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Working directory (without --process).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Environment variable K=V (without --process; repeatable).
    #[arg(long, short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// UID[:GID] (without --process).
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// The container id.
    pub id: String,
    /// The command (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `moat events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the container's stats once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Without --stats: print stats this often (e.g. 5s).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// The container id.
    pub id: String,
}

/// `moat update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// runtime-spec `linux.resources` JSON: a file, or `-` for stdin.
    #[arg(long, short = 'r', value_name = "FILE|-")]
    pub resources: Option<String>,
    /// New memory limit (bytes or size).
    #[arg(long, short = 'm', value_parser = crate::size::parse_size)]
    pub memory: Option<u64>,
    /// New pids limit.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// The container id.
    pub id: String,
}

/// `moat list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// `json` or `table`.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Print only the ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("moat").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn run_takes_the_command_after_its_flags() {
        let cli = parse(&["run", "--memory", "32M", "--", "sh", "-c", "tail /dev/zero"]);
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.memory, Some(32 << 20));
        assert_eq!(r.args, ["sh", "-c", "tail /dev/zero"]);
        let cli = parse(&["run", "/bin/true"]);
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.args, ["/bin/true"]);
    }

    #[test]
    fn runc_global_flags_before_the_verb() {
        let cli = parse(&[
            "--root",
            "/run/x",
            "--log",
            "/tmp/l.json",
            "--log-format",
            "json",
            "kill",
            "--all",
            "c1",
            "9",
        ]);
        assert_eq!(cli.root, PathBuf::from("/run/x"));
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Kill(k) = cli.command else {
            panic!()
        };
        assert!(k.all);
        assert_eq!((k.id.as_str(), k.signal.as_str()), ("c1", "9"));
    }

    #[test]
    fn go_runc_spellings_parse() {
        parse(&["update", "--resources=-", "c1"]);
        parse(&["ps", "--format", "json", "c1"]);
        parse(&["events", "--stats", "c1"]);
        parse(&["delete", "--force", "c1"]);
        parse(&[
            "exec",
            "--process",
            "/tmp/p.json",
            "--detach",
            "--pid-file",
            "/tmp/p",
            "c1",
        ]);
        parse(&[
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--no-pivot",
            "c1",
        ]);
        let bad = Cli::try_parse_from(["moat", "run", "--rootfs", "/r", "--bundle", "/b", "x"]);
        assert!(bad.is_err());
    }

    #[test]
    fn install_and_uninstall_flags() {
        let cli = parse(&[
            "install",
            "--prefix",
            "/tmp/p",
            "--containerd-config",
            "/tmp/p/c.toml",
            "--dry-run",
            "--restart-containerd",
        ]);
        let Command::Install(i) = cli.command else {
            panic!()
        };
        assert_eq!(i.prefix.as_deref(), Some(std::path::Path::new("/tmp/p")));
        assert_eq!(
            i.containerd_config.as_deref(),
            Some(std::path::Path::new("/tmp/p/c.toml"))
        );
        assert!(i.dry_run && i.restart_containerd);
        let Command::Uninstall(u) = parse(&["uninstall", "--prefix", "/tmp/p"]).command else {
            panic!()
        };
        assert!(!u.dry_run && !u.restart_containerd);
    }
}

/// `moat bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
WHAT IT MEASURES (each repeated and interleaved across backends; median, p10, p90, n):
  start latency (`/bin/true` through each runtime's CLI), syscall cost (getpid, openat+close),
  sequential file I/O (rootfs, tmpfs), host memory per idle sandbox, density (K at once), VM boot
  (moat-vmm vs QEMU microvm, same kernel and initramfs), and an isolation probe matrix.

Where /dev/kvm cannot run a Linux guest, the vm and qemu rows are measured inside the KVM rig
(moat-rig) and labelled `rig`: compare them only with each other. A backend that cannot run here
is listed with the reason. Needs root.

OUTPUT (in --out): results.json (schema moat-bench/1, see docs/benchmarks.md), results.md,
*.svg plots; rig/results.json holds the rig's half.")]
pub struct BenchArgs {
    /// Backends to compare, comma-separated: runc,crun,ns,trace,vm,qemu.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "runc,crun,ns,trace,vm,qemu"
    )]
    pub backends: String,

    /// Fewer repetitions and smaller sizes (minutes instead of tens of minutes).
    #[arg(long)]
    pub quick: bool,

    /// Directory for results.json, results.md and the plots (created if missing).
    #[arg(long, value_name = "DIR", default_value = "moat-bench")]
    pub out: PathBuf,

    /// Repetitions of every metric (overrides the --quick or full counts).
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,

    /// Internal: this is the rig's half of a run (measure here, write results.json only).
    #[arg(long, hide = true)]
    pub inside_rig: bool,
}
