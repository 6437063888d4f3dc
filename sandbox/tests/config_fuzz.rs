//! Bad input for the config.json path `moat run --bundle` and `moat create` take:
//! [`moat_sandbox::load_spec`] / [`config::parse`] (JSON to a `Spec`) and [`config::build`] (every
//! check, into the plans; opens the namespace files it names, creates nothing). Arbitrary bytes,
//! arbitrary JSON, and containerd's default spec with random parts replaced (negative and huge
//! limits, unknown namespace types, bad mount options, relative paths, absurd id maps, huge strings)
//! give a spec or a clear `config.json: <field>: <message>` naming the field that is wrong, never a
//! panic, a hang or unbounded allocation. No root needed: nothing is created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_sandbox::{Error, config, defaults};
use moat_testkit::bounded::{self, Failure};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Longest a parse plus build may take (release build; a hang or a blow-up trips it).
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Most bytes one parse plus build may allocate in total: a floor plus this much per input byte.
const ALLOC_FLOOR: u64 = 64 << 20;
const ALLOC_PER_BYTE: u64 = 512;

// ---------------------------------------------------------------------------------------------
// Bounded runs: each case runs on its own thread, with a deadline and its allocations counted.

#[global_allocator]
static GLOBAL: moat_testkit::bounded::Counting = moat_testkit::bounded::Counting;

/// How far a config.json got.
#[derive(Debug)]
enum Outcome {
    /// Refused while parsing: (field, message).
    Parse(String, String),
    /// Parsed, refused by the checks: (field, message); the field is `seccomp` for a profile too
    /// large to load.
    Build(String, String),
    /// Parsed and checked.
    Built,
}

impl Outcome {
    fn err(&self) -> Option<(&str, &str)> {
        match self {
            Outcome::Parse(f, m) | Outcome::Build(f, m) => Some((f, m)),
            Outcome::Built => None,
        }
    }
}

/// The field and message of a refusal, checking its shape: `config.json: <field>: <message>`.
fn spec_error(e: Error) -> (String, String) {
    let text = e.to_string();
    let (field, message) = match e {
        Error::Spec { field, message } => {
            assert_eq!(text, format!("config.json: {field}: {message}"));
            (field, message)
        }
        Error::Seccomp(m) => {
            assert!(m.contains("BPF instructions"), "{m}");
            ("seccomp".to_string(), m)
        }
        other => panic!("parse/build gave something other than a spec error: {other}"),
    };
    assert!(!field.is_empty(), "no field named: {text}");
    assert!(!message.trim().is_empty(), "no message: {text}");
    (field, message)
}

/// Parses `json` and, if it parses, checks it against a bundle in `dir` (which holds `rootfs/`),
/// on a thread of its own, within [`TIME_LIMIT`] and the allocation bound.
fn run(json: Vec<u8>, dir: &Path) -> Outcome {
    let len = json.len();
    let head = String::from_utf8_lossy(&json[..len.min(300)]).into_owned();
    let dir: PathBuf = dir.to_path_buf();
    let ran = bounded::run(TIME_LIMIT, move || match config::parse(&json[..]) {
        Err(e) => {
            let (f, m) = spec_error(e);
            Outcome::Parse(f, m)
        }
        Ok(spec) => match config::build(&spec, &dir) {
            Ok(_) => Outcome::Built,
            Err(e) => {
                let (f, m) = spec_error(e);
                Outcome::Build(f, m)
            }
        },
    });
    let (o, used) = match ran {
        Ok(v) => v,
        Err(Failure::TimedOut) => {
            panic!("took longer than {TIME_LIMIT:?} on a {len}-byte config.json: {head}")
        }
        Err(Failure::Panicked) => panic!("panicked on a {len}-byte config.json: {head}"),
    };
    let bound = ALLOC_FLOOR + ALLOC_PER_BYTE * len as u64;
    assert!(
        used <= bound,
        "allocated {used} bytes (bound {bound}) for a {len}-byte config.json: {head}"
    );
    o
}

fn bundle() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("rootfs")).unwrap();
    t
}

/// containerd's default spec with a command: it builds.
fn base() -> Value {
    let mut v = serde_json::to_value(defaults::spec("rootfs")).unwrap();
    v["process"]["args"] = json!(["/bin/sh"]);
    v
}

fn run_value(v: &Value, dir: &Path) -> Outcome {
    run(serde_json::to_vec(v).unwrap(), dir)
}

/// True if a refusal at `field` is about the value at `path` (or something inside it, or the
/// object that holds it).
fn related(field: &str, path: &str) -> bool {
    let within = |long: &str, short: &str| {
        short.is_empty()
            || short == "(document)"
            || (long.starts_with(short)
                && matches!(long.as_bytes().get(short.len()), None | Some(b'.' | b'[')))
    };
    within(field, path) || within(path, field)
}

// ---------------------------------------------------------------------------------------------
// Nasty values.

/// Strings that go where paths, names, enum words and options go.
const WORDS: &[&str] = &[
    "",
    "/",
    "rootfs",
    "relative/path",
    "./x",
    "../../etc",
    "/nonexistent",
    "/a/../../b",
    "\0",
    "/a\0b",
    "a=b",
    "PATH=/bin",
    "noequals",
    "pid",
    "user",
    "mount",
    "network",
    "time",
    "cgroup",
    "bogus",
    "RLIMIT_NOFILE",
    "RLIMIT_BOGUS",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_BOGUS",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_AARCH64",
    "SCMP_CMP_MASKED_EQ",
    "c",
    "b",
    "u",
    "p",
    "a",
    "bind",
    "rbind",
    "idmap",
    "tmpcopyup",
    "ro",
    "rro",
    "shared",
    "sideways",
    "CAP_SYS_ADMIN",
    "CAP_BOGUS",
    "net.ipv4.ip_forward",
    "kernel.panic",
    "1.0.2",
    "0.9",
    "\u{1F980}",
    "\u{feff}",
];

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(WORDS).prop_map(String::from),
        2 => any::<String>(),
        1 => (1usize..200_000).prop_map(|n| "x".repeat(n)),
        1 => (1usize..2000).prop_map(|n| "/a".repeat(n)),
    ]
}

fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(
            &[
                0i128,
                -1,
                1,
                -1000,
                1000,
                1001,
                -1001,
                i32::MAX as i128,
                i32::MIN as i128,
                u32::MAX as i128,
                u32::MAX as i128 + 1,
                i64::MAX as i128,
                i64::MIN as i128,
                u64::MAX as i128,
            ][..]
        )
        .prop_map(|n| serde_json::from_str::<Value>(&n.to_string()).unwrap()),
    ]
}

const KEYS: &[&str] = &[
    "type",
    "path",
    "source",
    "destination",
    "options",
    "uid",
    "gid",
    "size",
    "containerID",
    "hostID",
    "soft",
    "hard",
    "names",
    "action",
    "args",
    "index",
    "value",
    "op",
    "major",
    "minor",
    "bogusField",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => nasty_number(),
        4 => nasty_string().prop_map(Value::String),
    ]
}

/// Any JSON value, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    3 => prop::sample::select(KEYS).prop_map(String::from),
                    1 => any::<String>(),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Random edits anywhere in the default spec.

#[derive(Clone, Debug)]
enum Edit {
    Replace(Value),
    Delete,
    AddKey(String, Value),
    Push(Value),
    DuplicateFirst,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => value().prop_map(Edit::Replace),
        2 => Just(Edit::Delete),
        1 => (
            prop_oneof![prop::sample::select(KEYS).prop_map(String::from), any::<String>()],
            value()
        )
            .prop_map(|(k, v)| Edit::AddKey(k, v)),
        1 => value().prop_map(Edit::Push),
        1 => Just(Edit::DuplicateFirst),
    ]
}

/// Walks into `v` along `choices` (stopping where a choice says so or at a leaf), applies `e`
/// there, and returns the JSON path (as the error messages spell it) of what changed.
fn apply(v: &mut Value, choices: &[usize], e: &Edit) -> String {
    let mut path = String::new();
    let mut pointer = String::new();
    let mut cur: &Value = v;
    for &c in choices {
        // A choice divisible by 4 stops here.
        if c % 4 == 0 {
            break;
        }
        cur = match cur {
            Value::Object(m) if !m.is_empty() => {
                let (k, next) = m.iter().nth(c % m.len()).unwrap();
                let sep = if path.is_empty() { "" } else { "." };
                path = format!("{path}{sep}{k}");
                pointer = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                next
            }
            Value::Array(a) if !a.is_empty() => {
                let i = c % a.len();
                path = format!("{path}[{i}]");
                pointer = format!("{pointer}/{i}");
                &a[i]
            }
            _ => break,
        };
    }
    let cur = v.pointer_mut(&pointer).unwrap();
    match e {
        Edit::Replace(x) => *cur = x.clone(),
        Edit::Delete => *cur = Value::Null,
        Edit::AddKey(k, x) => {
            if let Value::Object(m) = cur {
                m.insert(k.clone(), x.clone());
                let sep = if path.is_empty() { "" } else { "." };
                return format!("{path}{sep}{k}");
            }
            *cur = x.clone();
        }
        Edit::Push(x) => {
            if let Value::Array(a) = cur {
                a.push(x.clone());
                return format!("{path}[{}]", a.len() - 1);
            }
            *cur = x.clone();
        }
        Edit::DuplicateFirst => {
            if let Value::Array(a) = cur
                && let Some(f) = a.first().cloned()
            {
                a.push(f);
            }
        }
    }
    path
}

// ---------------------------------------------------------------------------------------------

/// `cases` cases (`PROPTEST_CASES` overrides), no regression files (this is not a lib crate).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Checks done on a refusal of a spec whose only change is at `path`. Cross-field checks name
/// the field they need changed, which may be another one: those pairs are listed here.
fn check_related(o: &Outcome, path: &str, doc: &Value) {
    let Some((field, message)) = o.err() else {
        return;
    };
    // Checks that name the other half of a pair of fields.
    const PAIRS: &[(&str, &str)] = &[
        ("linux.namespaces", "linux.uidMappings"),
        ("linux.namespaces", "linux.gidMappings"),
        ("linux.namespaces", "linux.timeOffsets"),
        ("linux.namespaces", "linux.sysctl"),
        ("linux.namespaces", "hostname"),
        ("linux.namespaces", "domainname"),
        ("linux.uidMappings", "linux.gidMappings"),
        ("linux.gidMappings", "linux.uidMappings"),
    ];
    let ok = related(field, path)
        || field == "seccomp" && related("linux.seccomp", path)
        || PAIRS
            .iter()
            .any(|(changed, named)| related(path, changed) && related(field, named));
    assert!(
        ok,
        "changed {path:?} but the refusal names {field:?}: {message}\n{}",
        serde_json::to_string(doc)
            .unwrap()
            .chars()
            .take(2000)
            .collect::<String>()
    );
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary bytes as config.json: a spec, or a refusal naming a field.
    #[test]
    fn arbitrary_bytes(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        any::<String>().prop_map(String::into_bytes),
    ]) {
        let b = bundle();
        let _ = run(bytes, b.path());
    }

    /// Arbitrary JSON documents (objects with the spec's keys and nasty values).
    #[test]
    fn arbitrary_json(doc in proptest::collection::btree_map(
        prop_oneof![
            prop::sample::select(&["ociVersion", "process", "root", "mounts", "linux", "hooks",
                "hostname", "annotations", "domainname", "bogus"][..]).prop_map(String::from),
            any::<String>(),
        ],
        value(),
        0..8,
    )) {
        let b = bundle();
        let v = Value::Object(doc.into_iter().collect());
        let o = run_value(&v, b.path());
        if let Some((field, _)) = o.err() {
            // A refusal names a key of the document (or the document itself).
            let top = field.split(['.', '[']).next().unwrap();
            prop_assert!(
                field == "(document)" || field == "seccomp" || v.get(top).is_some()
                    || ["process", "root", "linux", "ociVersion"].contains(&top),
                "{field} {o:?}"
            );
        }
    }

    /// The default spec with one random value replaced, removed, added or duplicated anywhere:
    /// a spec, or a refusal that names the changed field (or the field a cross-check needs).
    #[test]
    fn default_spec_edited_anywhere(
        choices in proptest::collection::vec(any::<usize>(), 0..8),
        e in edit(),
    ) {
        let b = bundle();
        let mut v = base();
        let path = apply(&mut v, &choices, &e);
        let o = run_value(&v, b.path());
        check_related(&o, &path, &v);
    }

    /// `process.oomScoreAdj`: any number; refused outside -1000..=1000, naming the field.
    #[test]
    fn oom_score_adj(n in nasty_number()) {
        let b = bundle();
        let mut v = base();
        v["process"]["oomScoreAdj"] = n.clone();
        let o = run_value(&v, b.path());
        let ok = n.as_i64().is_some_and(|x| (-1000..=1000).contains(&x));
        match (&o, ok) {
            (Outcome::Built, true) => {}
            (Outcome::Parse(f, _) | Outcome::Build(f, _), false) => {
                prop_assert_eq!(f.as_str(), "process.oomScoreAdj");
            }
            _ => panic!("oomScoreAdj {n}: {o:?}"),
        }
    }

    /// `process.rlimits`: any soft/hard numbers and types; soft above hard and duplicates refused.
    #[test]
    fn rlimits(
        limits in proptest::collection::vec(
            (
                prop::sample::select(&["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_BOGUS", ""][..]),
                nasty_number(),
                nasty_number(),
            ),
            0..4,
        ),
    ) {
        let b = bundle();
        let mut v = base();
        v["process"]["rlimits"] = limits
            .iter()
            .map(|(t, s, h)| json!({"type": t, "soft": s, "hard": h}))
            .collect();
        let o = run_value(&v, b.path());
        // The model: the first entry that does not parse, then the first bad one.
        let mut want: Option<(String, &str)> = None;
        // (serde_json objects keep their keys sorted: hard, soft, type is the order they are read.)
        for (i, (t, s, h)) in limits.iter().enumerate() {
            if h.as_u64().is_none() {
                want = Some((format!("process.rlimits[{i}].hard"), ""));
                break;
            }
            if s.as_u64().is_none() {
                want = Some((format!("process.rlimits[{i}].soft"), ""));
                break;
            }
            if !t.starts_with("RLIMIT_") || *t == "RLIMIT_BOGUS" {
                want = Some((format!("process.rlimits[{i}].type"), ""));
                break;
            }
        }
        if want.is_none() {
            let mut seen = std::collections::HashSet::new();
            for (i, (t, s, h)) in limits.iter().enumerate() {
                if !seen.insert(*t) {
                    want = Some((format!("process.rlimits[{i}]"), "appears twice"));
                    break;
                }
                if s.as_u64() > h.as_u64() {
                    want = Some((format!("process.rlimits[{i}]"), "above hard limit"));
                    break;
                }
            }
        }
        match (&o, want) {
            (Outcome::Built, None) => {}
            (o, Some((field, words))) if o.err().is_some() => {
                let (f, m) = o.err().unwrap();
                prop_assert_eq!(f, field.as_str(), "{:?}", o);
                prop_assert!(m.contains(words), "{:?}", o);
            }
            (o, want) => panic!("{limits:?}: got {o:?}, want {want:?}"),
        }
    }

    /// `linux.devices`: any path, type and numbers; refused with the field named.
    #[test]
    fn devices(
        path in prop_oneof![
            nasty_string(),
            prop::sample::select(&["/dev", "/dev/", "/dev/null", "/dev/x/y", "/dev/../etc/shadow",
                "/dev/x/../../../etc", "/dev/./x", "/devx", "/dev//x", "dev/x"][..]).prop_map(String::from),
        ],
        typ in prop::sample::select(&["c", "b", "u", "p", "a", "x", ""][..]),
        major in nasty_number(),
        minor in nasty_number(),
    ) {
        let b = bundle();
        let mut v = base();
        v["linux"]["devices"] = json!([{"path": path, "type": typ, "major": major, "minor": minor}]);
        let o = run_value(&v, b.path());
        // Read in key order (major, minor, path, type), then checked.
        let want: Option<&str> = if major.as_i64().is_none() {
            Some("linux.devices[0].major")
        } else if minor.as_i64().is_none() {
            Some("linux.devices[0].minor")
        } else if !["c", "b", "u", "p", "a"].contains(&typ) {
            Some("linux.devices[0].type")
        } else if !below_dev(&path) {
            Some("linux.devices[0].path")
        } else if typ == "a" {
            Some("linux.devices[0].type")
        } else if u32::try_from(major.as_i64().unwrap()).is_err() {
            Some("linux.devices[0].major")
        } else if u32::try_from(minor.as_i64().unwrap()).is_err() {
            Some("linux.devices[0].minor")
        } else {
            None
        };
        match (o.err(), want) {
            (None, None) => {}
            (Some((f, _)), Some(w)) => prop_assert_eq!(f, w, "{:?}", o),
            (got, want) => panic!("{path:?} {typ} {major} {minor}: got {got:?}, want {want:?}"),
        }
    }
}

/// True for a path strictly below `/dev` that never climbs out of it.
fn below_dev(p: &str) -> bool {
    Path::new(p).strip_prefix("/dev").is_ok_and(|rest| {
        !rest.as_os_str().is_empty()
            && rest
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// A new user namespace with any number of mappings of any numbers: 1 to 340 mappings of
    /// non-zero size are taken, the rest refused naming the list or the entry.
    #[test]
    fn id_mappings(
        maps in proptest::collection::vec((nasty_number(), nasty_number(), nasty_number()), 0..400),
        with_user in any::<bool>(),
    ) {
        let b = bundle();
        let mut v = base();
        let list: Vec<Value> = maps
            .iter()
            .map(|(c, h, s)| json!({"containerID": c, "hostID": h, "size": s}))
            .collect();
        v["linux"]["uidMappings"] = Value::Array(list.clone());
        v["linux"]["gidMappings"] = Value::Array(list);
        if with_user {
            v["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        }
        let o = run_value(&v, b.path());
        let u32_ok = |n: &Value| n.as_u64().is_some_and(|x| x <= u64::from(u32::MAX));
        let want: Option<String> = if let Some(i) = maps.iter().position(|(c, h, s)| !(u32_ok(c) && u32_ok(h) && u32_ok(s))) {
            // gidMappings is read first (keys in sorted order); both lists are the same.
            Some(format!("linux.gidMappings[{i}]"))
        } else if !with_user && !maps.is_empty() {
            Some("linux.uidMappings".into())
        } else if !with_user {
            None
        } else if maps.is_empty() || maps.len() > 340 {
            Some("linux.uidMappings".into())
        } else {
            maps.iter()
                .position(|(_, _, s)| s.as_u64() == Some(0))
                .map(|i| format!("linux.uidMappings[{i}].size"))
        };
        match (o.err(), &want) {
            (None, None) => {}
            (Some((f, _)), Some(w)) => prop_assert!(related(f, w), "got {o:?}, want {w}"),
            (got, want) => panic!("{} maps, user {with_user}: got {got:?}, want {want:?}", maps.len()),
        }
    }

    /// Mount options of any kind: unsupported and malformed ones refused, naming the list; a
    /// bind option turns the mount into a bind mount whose source must exist.
    #[test]
    fn mount_options(
        which in 0usize..7,
        options in proptest::collection::vec(nasty_string(), 0..8),
        dest in proptest::option::of(nasty_string()),
    ) {
        let b = bundle();
        let mut v = base();
        v["mounts"][which]["options"] = json!(options);
        if let Some(d) = &dest {
            v["mounts"][which]["destination"] = json!(d);
        }
        let o = run_value(&v, b.path());
        let field = format!("mounts[{which}]");
        let bad_opt = options.iter().find(|o| {
            ["idmap", "ridmap", "tmpcopyup"].contains(&o.as_str()) || o.is_empty() || o.contains('\0')
        });
        let want: Option<(String, String)> = if dest.as_ref().is_some_and(|d| !d.starts_with('/')) {
            Some((format!("{field}.destination"), "is not an absolute path".into()))
        } else if let Some(opt) = bad_opt {
            Some((format!("{field}.options"), if opt.is_empty() || opt.contains('\0') {
                "is not valid".into()
            } else {
                "not supported".into()
            }))
        } else if options.iter().any(|o| o == "bind" || o == "rbind") {
            // The default mounts' sources (proc, tmpfs, ...) are not files in the bundle.
            Some((format!("{field}.source"), "does not exist".into()))
        } else {
            None
        };
        match (o.err(), &want) {
            (None, None) => {}
            (Some((f, m)), Some((wf, wm))) => {
                prop_assert_eq!(f, wf.as_str(), "{:?}", o);
                prop_assert!(m.contains(wm.as_str()), "{:?}", o);
            }
            (got, want) => panic!("{options:?} {dest:?}: got {got:?}, want {want:?}"),
        }
    }

    /// `process.args`, `env` and `cwd`: empty, NUL bytes, no `=`, relative, huge.
    #[test]
    fn process_strings(
        args in proptest::collection::vec(nasty_string(), 0..4),
        env in proptest::collection::vec(nasty_string(), 0..4),
        cwd in nasty_string(),
    ) {
        let b = bundle();
        let mut v = base();
        v["process"]["args"] = json!(args);
        v["process"]["env"] = json!(env);
        v["process"]["cwd"] = json!(cwd);
        let o = run_value(&v, b.path());
        let want: Option<String> = if args.first().is_none_or(String::is_empty) {
            Some("process.args".into())
        } else if let Some(i) = env.iter().position(|e| !e.contains('=')) {
            Some(format!("process.env[{i}]"))
        } else if !cwd.starts_with('/') {
            Some("process.cwd".into())
        } else if let Some(i) = args.iter().position(|a| a.contains('\0')) {
            Some(format!("process.args[{i}]"))
        } else {
            env.iter()
                .position(|e| e.contains('\0'))
                .map(|i| format!("process.env[{i}]"))
        };
        match (o.err(), &want) {
            (None, None) => {}
            (Some((f, _)), Some(w)) => prop_assert_eq!(f, w.as_str(), "{:?}", o),
            (got, want) => panic!("{args:?} {env:?} {cwd:?}: got {got:?}, want {want:?}"),
        }
    }

    /// `linux.namespaces`: any list of types (known or not) with or without paths. Unknown types,
    /// duplicates, unopenable or wrong-type paths and a missing mount namespace are refused with
    /// the entry named; a new user namespace without mappings names the mappings.
    #[test]
    fn namespaces(
        list in proptest::collection::vec(
            (
                prop::sample::select(&["pid", "ipc", "uts", "mount", "network", "user", "cgroup", "time", "bogus", "net", "mnt"][..]),
                proptest::option::of(prop::sample::select(&["", "/nonexistent/ns", "relative/ns", "/dev/null", "/proc/self/ns/net", "/proc/self/ns/uts", "/proc/self/ns/mnt", "/proc/self/ns/user"][..])),
            ),
            0..8,
        ),
    ) {
        let b = bundle();
        let mut v = base();
        v["linux"]["namespaces"] = list
            .iter()
            .map(|(t, p)| match p {
                Some(p) => json!({"type": t, "path": p}),
                None => json!({"type": t}),
            })
            .collect();
        let o = run_value(&v, b.path());
        fn proc_name(t: &str) -> &str {
            match t {
                "mount" => "mnt",
                "network" => "net",
                t => t,
            }
        }
        let mut want: Option<String> = list
            .iter()
            .position(|(t, _)| ["bogus", "net", "mnt"].contains(t))
            .map(|i| format!("linux.namespaces[{i}].type"));
        if want.is_none() {
            let mut seen = std::collections::HashSet::new();
            let mut new_user = false;
            for (i, (t, p)) in list.iter().enumerate() {
                if !seen.insert(*t) {
                    want = Some(format!("linux.namespaces[{i}]"));
                    break;
                }
                match p {
                    Some(p) if !p.is_empty() => {
                        let ok = p.strip_prefix("/proc/self/ns/").is_some_and(|n| n == proc_name(t));
                        if !ok {
                            want = Some(format!("linux.namespaces[{i}].path"));
                            break;
                        }
                    }
                    _ => new_user |= *t == "user",
                }
            }
            if want.is_none() {
                if new_user {
                    want = Some("linux.uidMappings".into());
                } else if !seen.contains("mount") {
                    want = Some("linux.namespaces".into());
                }
            }
        }
        match (o.err(), &want) {
            (None, None) => {}
            (Some((f, _)), Some(w)) => prop_assert_eq!(f, w.as_str(), "{:?}", o),
            (got, want) => panic!("{list:?}: got {got:?}, want {want:?}"),
        }
    }

    /// `linux.sysctl`: any keys; only namespaced ones the spec's namespaces cover are taken.
    #[test]
    fn sysctls(key in prop_oneof![
        nasty_string(),
        prop::sample::select(&["net.ipv4.ip_forward", "kernel.shmmax", "fs.mqueue.msg_max",
            "kernel.domainname", "kernel.hostname", "vm.swappiness", "net/../../x", ".net.x",
            "net..x", "net.a b", "net.\u{e9}"][..]).prop_map(String::from),
    ], value in nasty_string()) {
        let b = bundle();
        let mut v = base();
        v["linux"]["sysctl"] = json!({ key.clone(): value });
        let o = run_value(&v, b.path());
        let name_ok = !key.is_empty()
            && !key.contains("..")
            && !key.starts_with(['.', '/'])
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        const IPC: [&str; 8] = [
            "kernel.msgmax",
            "kernel.msgmnb",
            "kernel.msgmni",
            "kernel.sem",
            "kernel.shmall",
            "kernel.shmmax",
            "kernel.shmmni",
            "kernel.shm_rmid_forced",
        ];
        let namespaced = key.starts_with("net.")
            || key.starts_with("fs.mqueue.")
            || key == "kernel.domainname"
            || IPC.contains(&key.as_str());
        match o.err() {
            None => prop_assert!(name_ok && namespaced, "{key:?} taken"),
            Some((f, m)) => {
                prop_assert!(!(name_ok && namespaced), "{key:?} refused: {m}");
                prop_assert_eq!(f, format!("linux.sysctl.{key}"), "{:?}", o);
                let words = if name_ok { "is not namespaced" } else { "is not a sysctl name" };
                prop_assert!(m.contains(words), "{:?}", o);
            }
        }
    }

    /// `linux.cgroupsPath` (resolved when the container is created): any string gives a clean
    /// absolute path below the root, or a refusal naming the field.
    #[test]
    fn cgroups_path(p in prop_oneof![
        nasty_string(),
        "[a-z./:-]{0,30}",
        prop::sample::select(&["a:b:c", "machine.slice:docker:x", "::", "a-b-c.slice:p:n", "/", "..", "x/../..", ":a:"][..]).prop_map(String::from),
    ]) {
        match moat_sandbox::cgroups::path::resolve(Some(Path::new(&p)), "c1") {
            Ok(r) => {
                prop_assert!(r.is_absolute() && r != Path::new("/"), "{p:?} -> {r:?}");
                prop_assert!(!r.components().any(|c| matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)), "{p:?} -> {r:?}");
                prop_assert!(!r.as_os_str().as_encoded_bytes().contains(&0));
            }
            Err(e) => {
                let (f, _) = spec_error(e);
                prop_assert_eq!(f, "linux.cgroupsPath");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Seccomp profiles of any size and content: compiled within the kernel's instruction limit,
    /// or refused naming the entry (or saying the profile is too large).
    #[test]
    fn seccomp_profiles(
        default_action in prop::sample::select(&["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "SCMP_ACT_NOTIFY", "SCMP_ACT_LOG", "SCMP_ACT_BOGUS"][..]),
        entries in proptest::collection::vec(
            (
                proptest::collection::vec(prop_oneof![
                    prop::sample::select(&["read", "write", "openat", "mount", "clone", "not_a_call", ""][..]).prop_map(String::from),
                    "[a-z_0-9]{1,16}",
                ], 0..4),
                prop::sample::select(&["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY", "SCMP_ACT_KILL_PROCESS"][..]),
                proptest::collection::vec((0u64..8, any::<u64>(), proptest::option::of(any::<u64>()), prop::sample::select(&["SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_GT", "SCMP_CMP_BOGUS"][..])), 0..3),
            ),
            0..600,
        ),
        arches in proptest::collection::vec(prop::sample::select(&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_BOGUS"][..]), 0..3),
    ) {
        let b = bundle();
        let mut v = base();
        let syscalls: Vec<Value> = entries
            .iter()
            .map(|(names, action, args)| {
                let args: Vec<Value> = args
                    .iter()
                    .map(|(i, val, two, op)| match two {
                        Some(t) => json!({"index": i, "value": val, "valueTwo": t, "op": op}),
                        None => json!({"index": i, "value": val, "op": op}),
                    })
                    .collect();
                json!({"names": names, "action": action, "args": args})
            })
            .collect();
        v["linux"]["seccomp"] = json!({
            "defaultAction": default_action,
            "architectures": arches,
            "syscalls": syscalls,
        });
        let o = run_value(&v, b.path());
        if let Some((f, m)) = o.err() {
            prop_assert!(f == "seccomp" || f.starts_with("linux.seccomp"), "{f}: {m}");
        }
    }
}

/// Huge documents: a million-entry env, 100k gids, a 16 MiB argument: bounded time and memory.
#[test]
fn huge_values() {
    let b = bundle();
    let mut v = base();
    v["process"]["env"] = Value::Array((0..1_000_000).map(|i| json!(format!("K{i}=v"))).collect());
    v["process"]["user"]["additionalGids"] =
        Value::Array((0..100_000u32).map(Value::from).collect());
    v["process"]["args"] = json!(["/bin/sh", "x".repeat(16 << 20)]);
    assert!(matches!(run_value(&v, b.path()), Outcome::Built));
    let mut v = base();
    v["mounts"] = Value::Array(
        (0..50_000)
            .map(|i| json!({"destination": format!("/m{i}"), "type": "tmpfs", "options": ["nosuid"]}))
            .collect(),
    );
    assert!(matches!(run_value(&v, b.path()), Outcome::Built));
    // Deep nesting, where the spec ignores a key (skipped without recursion) and where it wants a
    // map: refused (here for the missing root), never a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for key in ["bogus", "annotations", "hooks"] {
        let json = format!("{{\"ociVersion\": \"1.0.2\", \"{key}\": {deep}}}");
        let o = run(json.into_bytes(), b.path());
        assert!(o.err().is_some(), "{key}: {o:?}");
    }
}

/// `load_spec` (what `moat run --bundle` and `moat create` call) on files: the same refusals,
/// plus a clear one for a bundle without config.json.
#[test]
fn load_spec_on_files() {
    let b = bundle();
    let e = moat_sandbox::load_spec(b.path()).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("OCI bundle"), "{e}");
    for (bytes, field) in [
        (&b""[..], "(document)"),
        (b"\xff\xfe{", "(document)"),
        (b"{\"ociVersion\": 1}", "ociVersion"),
        (b"{\"ociVersion\": \"1.0.2\", \"linux\": {\"namespaces\": [{\"type\": \"bogus\"}]}}", "linux.namespaces[0].type"),
        (b"{\"ociVersion\": \"1.0.2\", \"process\": {\"cwd\": \"/\", \"user\": {\"uid\": -1, \"gid\": 0}}}", "process.user.uid"),
    ] {
        std::fs::write(b.path().join("config.json"), bytes).unwrap();
        match moat_sandbox::load_spec(b.path()) {
            Err(Error::Spec { field: f, .. }) => assert_eq!(f, field, "{bytes:?}"),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    std::fs::write(
        b.path().join("config.json"),
        serde_json::to_vec(&base()).unwrap(),
    )
    .unwrap();
    let spec = moat_sandbox::load_spec(b.path()).unwrap();
    config::build(&spec, b.path()).unwrap();
}
