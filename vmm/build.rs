//! Compiles the per-thread seccomp filters in `resources/seccomp/x86_64.json` to BPF at build time,
//! so the VMM only has to install them (and a broken filter file breaks the build, not a VM).
//!
//! Output: `$OUT_DIR/seccomp.bin`: for each thread (sorted by name) a u32 name length, the name,
//! a u32 instruction count and the instructions (`u16 code, u8 jt, u8 jf, u32 k`, little endian).

use std::fs::File;
use std::path::PathBuf;

fn main() {
    let src = "resources/seccomp/x86_64.json";
    println!("cargo:rerun-if-changed={src}");
    let file = File::open(src).unwrap_or_else(|e| panic!("cannot open {src}: {e}"));
    let map = seccompiler::compile_from_json(file, seccompiler::TargetArch::x86_64)
        .unwrap_or_else(|e| panic!("{src} does not compile: {e}"));
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let prog = &map[name];
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(prog.len() as u32).to_le_bytes());
        for ins in prog {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.push(ins.jt);
            out.push(ins.jf);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    std::fs::write(dir.join("seccomp.bin"), out)
        .unwrap_or_else(|e| panic!("write seccomp.bin: {e}"));
}
