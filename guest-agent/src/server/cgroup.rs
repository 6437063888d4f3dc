//! The guest's `/moat` cgroup, parent of every container's. `moat-sandbox` enables a controller
//! for a container only when its spec limits that resource, which would leave a container without
//! limits with no `memory.current` or `pids.current`, and its [`moat_agent_proto::Stats`] at zero.
//! The guest exists to run containers, so the agent enables every controller it booted with
//! ([`crate::init::CGROUP_CONTROLLERS`]) for `/moat`'s children: all of them are accounted.

use std::path::Path;

use crate::init::{CGROUP_CONTROLLERS, CGROUP_ROOT};

/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` writable; both outlive the call.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC }
}

/// Makes `<cgroup2 root>/moat` and enables the guest's controllers in its `subtree_control`.
/// Best effort (a failure is logged; containers then run with what `moat-sandbox` enables), and
/// nothing at all where `/sys/fs/cgroup` is not cgroup2 (the unit tests' hosts).
pub fn prepare_parent() {
    let root = Path::new(CGROUP_ROOT);
    if !is_cgroup2(root) {
        return;
    }
    let parent = root.join("moat");
    if let Err(e) = std::fs::create_dir_all(&parent) {
        tracing::warn!("cannot create {}: {e}", parent.display());
        return;
    }
    let file = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&file).unwrap_or_default();
    for c in CGROUP_CONTROLLERS {
        if enabled.split_whitespace().any(|e| e == c) {
            continue;
        }
        if let Err(e) = std::fs::write(&file, format!("+{c}")) {
            tracing::warn!(
                "cannot enable the {c} controller in {}: {e}",
                file.display()
            );
        }
    }
}
