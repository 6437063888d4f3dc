//! The measurements: one module per kind, each taking samples from every backend in turn
//! (interleaved, so that the machine's noise hits all of them alike).

pub mod boot;
pub mod catalogue;
pub mod containerd;
pub mod density;
pub mod io;
pub mod memory;
pub mod start;
pub mod syscall;

/// The number after `key ` on the first line of `out` that has it (`ns/call 152.3`).
pub fn value(out: &str, key: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_found_by_key() {
        let out = "noise\nns/call 152.5\nwrite_mib_s 900\n";
        assert_eq!(super::value(out, "ns/call"), Some(152.5));
        assert_eq!(super::value(out, "write_mib_s"), Some(900.0));
        assert_eq!(super::value(out, "read_mib_s"), None);
    }
}
