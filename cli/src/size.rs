//! Memory sizes as users type them: `33554432`, `32M`, `32MiB`, `1.5G`, `512k`. Binary units
//! (K = 1024), as docker and runc read them.

/// Parses a size in bytes; the error says what is accepted.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad(s)),
    };
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad(s))?;
        let b = v * (1u64 << shift) as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(bad(s));
        }
        b as u64
    } else {
        let v: u64 = num.parse().map_err(|_| bad(s))?;
        v.checked_shl(shift)
            .filter(|b| b >> shift == v)
            .ok_or_else(|| bad(s))?
    };
    if bytes == 0 {
        return Err(format!(
            "size {s:?} is zero: give a positive size such as 32M"
        ));
    }
    Ok(bytes)
}

fn bad(s: &str) -> String {
    format!(
        "bad size {s:?}: use bytes or a number with K, M, G or T (binary units), e.g. 32M or 1.5G"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("33554432"), Ok(32 << 20));
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        for bad in [
            "",
            "M",
            "32Q",
            "-1",
            "0",
            "99999999999999999999",
            "18446744073709551615G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
