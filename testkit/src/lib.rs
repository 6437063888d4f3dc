//! Shared test infrastructure for moat's crates (a dev-dependency, never shipped).
//!
//! - [`bin`]: the path of a workspace binary next to the running test executable;
//! - [`skip!`]: report `SKIPPED: <reason>` on stderr and return, when the host lacks something;
//! - [`Containerd`]: a private containerd daemon (own root, state, socket, config, temp dir), with
//!   `ctr`, the offline test images, CRI runtime handlers, and a teardown that leaves nothing behind;
//! - [`LeakCheck`]: a before/after snapshot of processes, mounts, cgroups, network devices and
//!   temp/runtime dirs, naming whatever a test leaked.
//!
//! Everything the kit creates carries a marker, `moat-testkit-<pid>-<n>` (in its temp dir, its
//! containerd namespace and its cgroup parent), so teardown finds exactly what is its own and the
//! leak checker can tell it apart from another test process running at the same time.

mod bins;
pub mod bounded;
pub mod containerd;
mod host;
pub mod leak;
mod procfs;
mod teardown;

pub use bins::{bin, bin_dir};
pub use containerd::{Containerd, CtrOutput, Options};
pub use host::{have_cmd, is_root, missing_cmds, python_tool};
pub use leak::LeakCheck;

/// Prints `SKIPPED: <reason>` to stderr and returns from the enclosing test.
///
/// Use it when the host lacks what a test needs (not root, no containerd, no KVM), so the test
/// says why it did not run instead of passing silently:
///
/// ```no_run
/// # fn t() {
/// if !moat_testkit::is_root() {
///     moat_testkit::skip!("needs root to mount");
/// }
/// # }
/// ```
#[macro_export]
macro_rules! skip {
    ($($arg:tt)+) => {{
        ::std::eprintln!("SKIPPED: {}", ::std::format!($($arg)+));
        return;
    }};
}

/// Like [`skip!`], but only when `reason` (an `Option<impl Display>`) is `Some`.
///
/// ```no_run
/// # fn t() {
/// moat_testkit::skip_if!(moat_testkit::containerd::unavailable());
/// # }
/// ```
#[macro_export]
macro_rules! skip_if {
    ($reason:expr) => {
        if let ::std::option::Option::Some(reason) = $reason {
            $crate::skip!("{}", reason);
        }
    };
}
