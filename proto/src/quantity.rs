//! Kubernetes resource quantities (`100m`, `0.5`, `64Mi`, `1G`, `1e3`), read as numbers of
//! base units. Both sides need them: the cloud for QoS classes, the edge for limits.

/// The value of a quantity in base units (cores, bytes), or `None` if it is not one.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let v = n * mult;
    v.is_finite().then_some(v)
}

/// A non-negative quantity as a whole number of base units (`millis`: of thousandths),
/// rounded up as Kubernetes rounds (`1.0001` cores is 1001 millicores).
pub fn units(s: &str, millis: bool) -> Option<u64> {
    let v = parse(s)? * if millis { 1000.0 } else { 1.0 };
    (v >= 0.0).then(|| (v - 1e-9).ceil().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(units("100m", true), Some(100));
        assert_eq!(units("0.5", true), Some(500));
        assert_eq!(units("2", true), Some(2000));
        assert_eq!(units("1.0001", true), Some(1001));
        assert_eq!(units("64Mi", false), Some(64 << 20));
        assert_eq!(units("1G", false), Some(1_000_000_000));
        assert_eq!(units("1e3", false), Some(1000));
        assert_eq!(units("12x", false), None);
        assert_eq!(units("-1", false), None);
        assert_eq!(parse("0"), Some(0.0));
    }
}
