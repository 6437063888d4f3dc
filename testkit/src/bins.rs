//! Finding the workspace's own binaries from a test.

use std::path::PathBuf;

/// The directory cargo put this build's binaries in: `target/<profile>/`, found from the running
/// test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn bin_dir() -> PathBuf {
    let exe =
        std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test executable: {e}"));
    let mut dir = exe
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("test executable {} has no parent directory", exe.display()));
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The package that builds each of moat's binaries, for the hint in [`bin`]'s panic.
fn package_of(name: &str) -> &str {
    match name {
        "moat" => "moat",
        "containerd-shim-moat-v2" => "containerd-shim-moat-v2",
        "moat-agent" => "moat-agent",
        "moat-vmm" => "moat-vmm",
        "moat-rig" => "moat-rig",
        other => other,
    }
}

/// The path of workspace binary `name` (`target/<profile>/<name>`).
///
/// # Panics
/// If it is not built, with the `cargo build` command that builds it: cargo builds a package's
/// binaries for its own integration tests, but not other packages' binaries.
pub fn bin(name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    if !path.is_file() {
        let release = if dir.ends_with("release") {
            " --release"
        } else {
            ""
        };
        panic!(
            "binary {name} is not built at {}: run `cargo build{release} -p {}` first \
             (scripts/test.sh builds the whole workspace before testing)",
            path.display(),
            package_of(name)
        );
    }
    path
}
