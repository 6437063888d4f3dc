//! Cgroup layout detection and file writes, on fake trees (plain directories and files).

use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};

use super::*;

const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 35 0:32 /docker/x /mnt/memory\\040copy rw - cgroup cgroup rw,memory
";

#[test]
fn hybrid_mountinfo() {
    let Layout::V1 {
        hierarchies,
        unified,
    } = Layout::from_mountinfo(HYBRID)
    else {
        panic!("not v1");
    };
    assert_eq!(
        unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    let opts: Vec<Vec<String>> = hierarchies.iter().map(|h| h.options.clone()).collect();
    assert_eq!(
        opts,
        vec![
            vec!["cpu".to_string(), "cpuacct".into()],
            vec!["memory".into()],
            vec!["name=systemd".into()]
        ]
    );
    assert_eq!(
        hierarchies[0].mountpoint,
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(unescape("a\\040b"), "a b");
}

fn res() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(128i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn text(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn v2_writes_and_controllers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .unwrap();
    fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    let layout = Layout::V2 { root: root.clone() };
    let cg = Cgroup::create(&layout, Path::new("/moat/c1"), Some(&res())).unwrap();
    let dir = root.join("moat/c1");
    assert_eq!(cg.dirs.len(), 1);
    assert!(cg.dirs[0].created);
    assert_eq!(
        text(&root.join("cgroup.subtree_control")),
        "+memory +pids +cpu +cpuset"
    );
    assert_eq!(
        text(&root.join("moat/cgroup.subtree_control")),
        "+memory +pids +cpu +cpuset"
    );
    assert_eq!(text(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(
        text(&dir.join("memory.swap.max")),
        (64u64 << 20).to_string()
    );
    assert_eq!(text(&dir.join("pids.max")), "10");
    assert_eq!(text(&dir.join("cpu.weight")), "39");
    assert_eq!(text(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(text(&dir.join("cpuset.cpus")), "0");
    assert_eq!(cg.procs_files(), vec![dir.join("cgroup.procs")]);

    fs::write(dir.join("memory.current"), "4096\n").unwrap();
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    )
    .unwrap();
    fs::write(
        dir.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    )
    .unwrap();
    fs::write(dir.join("pids.current"), "2\n").unwrap();
    fs::write(dir.join("pids.max"), "max\n").unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(
        (
            s.memory_usage,
            s.memory_limit,
            s.memory_failcnt,
            s.oom_kills
        ),
        (4096, Some(64 << 20), 3, 1)
    );
    assert_eq!(
        (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns),
        (1_500_000, 1_000_000, 500_000)
    );
    assert_eq!((s.pids_current, s.pids_limit), (2, None));
    assert_eq!(cg.oom_kills(), 1);

    for f in fs::read_dir(&dir).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    cg.remove().unwrap();
    assert!(!dir.exists());
    assert!(
        root.join("moat").exists(),
        "parents are kept (other containers may use them)"
    );
    // Removed by someone else first (cleanup after a dead shim): nothing to kill, nothing to do.
    cg.kill_all(std::time::Duration::from_millis(10)).unwrap();
    cg.remove().unwrap();
}

#[test]
fn v2_missing_controller_is_a_spec_error_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    fs::write(root.join("cgroup.controllers"), "hugetlb\n").unwrap();
    let layout = Layout::V2 { root: root.clone() };
    let e = Cgroup::create(&layout, Path::new("/moat/c2"), Some(&res()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linux.resources.memory") && e.contains("does not offer"),
        "{e}"
    );
    assert!(!root.join("moat").exists());
}

#[test]
fn v1_writes_cpuset_and_devices() {
    let t = tempfile::tempdir().unwrap();
    let mk = |name: &str, opts: &[&str]| {
        let m = t.path().join(name);
        fs::create_dir(&m).unwrap();
        Hierarchy {
            mountpoint: m,
            options: opts.iter().map(|s| s.to_string()).collect(),
        }
    };
    let hierarchies = vec![
        mk("memory", &["memory"]),
        mk("pids", &["pids"]),
        mk("cpu,cpuacct", &["cpu", "cpuacct"]),
        mk("cpuset", &["cpuset"]),
        mk("devices", &["devices"]),
    ];
    fs::write(t.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
    // A new cpuset cgroup has empty cpus/mems files.
    let layout = Layout::V1 {
        hierarchies,
        unified: None,
    };
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(0).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(-1i64)
                .build()
                .unwrap(),
        )
        .devices(vec![
            oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    // Pre-create the cpuset leaf's files the way cgroupfs shows them (empty).
    let leaf = t.path().join("cpuset/c3");
    fs::create_dir(&leaf).unwrap();
    fs::write(leaf.join("cpuset.cpus"), "").unwrap();
    fs::write(leaf.join("cpuset.mems"), "").unwrap();
    let cg = Cgroup::create(&layout, Path::new("/c3"), Some(&r)).unwrap();
    assert_eq!(text(&leaf.join("cpuset.cpus")), "0-1");
    assert_eq!(text(&leaf.join("cpuset.mems")), "0");
    assert!(
        !cg.dirs
            .iter()
            .find(|d| d.options == ["cpuset"])
            .unwrap()
            .created,
        "existing dir is joined, not owned"
    );
    assert_eq!(
        text(&t.path().join("memory/c3/memory.limit_in_bytes")),
        (32u64 << 20).to_string()
    );
    assert_eq!(text(&t.path().join("pids/c3/pids.max")), "max");
    assert_eq!(text(&t.path().join("cpu,cpuacct/c3/cpu.shares")), "512");
    assert_eq!(
        text(&t.path().join("cpu,cpuacct/c3/cpu.cfs_quota_us")),
        "-1"
    );
    assert_eq!(text(&t.path().join("devices/c3/devices.deny")), "a");
    // Each write replaces the fake file: the last default rule is what remains.
    assert_eq!(
        text(&t.path().join("devices/c3/devices.allow")),
        "c 136:* rwm"
    );
    assert_eq!(
        cg.dir_of("cpuacct"),
        Some(t.path().join("cpu,cpuacct/c3").as_path())
    );

    let swap = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32i64 << 20)
                .swap(64i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = cg.update(&swap).unwrap_err().to_string();
    assert!(
        e.contains("linux.resources.memory.swap") && e.contains("swapaccount"),
        "{e}"
    );

    let unified = LinuxResourcesBuilder::default()
        .unified(std::collections::HashMap::from([(
            "memory.high".to_string(),
            "1M".to_string(),
        )]))
        .build()
        .unwrap();
    let e = Cgroup::create(&layout, Path::new("/c4"), Some(&unified))
        .unwrap_err()
        .to_string();
    assert!(e.contains("linux.resources.unified"), "{e}");
    assert!(!t.path().join("memory/c4").exists());
}
