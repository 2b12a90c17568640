//! Resource quantities (`500m`, `128Mi`, `2`, `1.5G`, `1e3`), as Kubernetes
//! writes them. In JSON a quantity is a string; a bare number is accepted on
//! input because YAML users write `cpu: 1`.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Same protobuf encoding as Kubernetes' `Quantity` (one string field).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Quantity {
    #[prost(string, tag = "1")]
    pub string: String,
}

/// Nano-units per unit: quantities are held as whole nano-units so that
/// `1n` CPU and `1Ei` of memory both fit exactly.
const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn new(s: impl Into<String>) -> Self {
        Quantity { string: s.into() }
    }

    /// The value in nano-units (`1` is 1_000_000_000, `500m` is 500_000_000).
    pub fn nanos(&self) -> Result<i128, QuantityError> {
        parse_nanos(&self.string)
    }

    /// The value in thousandths, rounded up (CPU millicores).
    pub fn millis(&self) -> Result<i64, QuantityError> {
        let n = self.nanos()?;
        Ok(((n + 999_999).div_euclid(1_000_000)) as i64)
    }

    /// The value in whole units, rounded up (bytes for memory, count for pods).
    pub fn value(&self) -> Result<i64, QuantityError> {
        let n = self.nanos()?;
        Ok(((n + NANO - 1).div_euclid(NANO)) as i64)
    }

    /// A quantity of CPU in millicores, written the way Kubernetes does.
    pub fn from_millis(m: i64) -> Self {
        if m % 1000 == 0 {
            Quantity::new((m / 1000).to_string())
        } else {
            Quantity::new(format!("{m}m"))
        }
    }

    /// A quantity of bytes, written with the largest exact binary suffix.
    pub fn from_bytes(b: i64) -> Self {
        for (suffix, mult) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if b != 0 && b % mult == 0 {
                return Quantity::new(format!("{}{suffix}", b / mult));
            }
        }
        Quantity::new(b.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {0:?}); examples: 500m, 2, 128Mi, 1G")]
pub struct QuantityError(pub String);

fn parse_nanos(s: &str) -> Result<i128, QuantityError> {
    let err = || QuantityError(s.to_string());
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.chars().all(|c| c.is_ascii_digit())
        || !frac_part.chars().all(|c| c.is_ascii_digit())
        || frac_part.len() > 9
    {
        return Err(err());
    }
    // mantissa in nano-units
    let int_v: i128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| err())?
    };
    let mut frac_v: i128 = 0;
    for (i, c) in frac_part.chars().enumerate() {
        frac_v += (c as i128 - '0' as i128) * 10i128.pow(8 - i as u32);
    }
    let base = int_v.checked_mul(NANO).ok_or_else(err)? + frac_v;
    let scaled = match suffix {
        "" => Some(base),
        "n" => Some(base / NANO),
        "u" => Some(base / 1_000_000),
        "m" => Some(base / 1_000),
        "k" => base.checked_mul(1_000),
        "M" => base.checked_mul(1_000_000),
        "G" => base.checked_mul(1_000_000_000),
        "T" => base.checked_mul(1_000_000_000_000),
        "P" => base.checked_mul(1_000_000_000_000_000),
        "E" => base.checked_mul(1_000_000_000_000_000_000),
        "Ki" => base.checked_mul(1 << 10),
        "Mi" => base.checked_mul(1 << 20),
        "Gi" => base.checked_mul(1 << 30),
        "Ti" => base.checked_mul(1 << 40),
        "Pi" => base.checked_mul(1 << 50),
        "Ei" => base.checked_mul(1 << 60),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            if exp >= 0 {
                10i128.checked_pow(exp as u32).and_then(|m| base.checked_mul(m))
            } else {
                10i128.checked_pow((-exp) as u32).map(|d| base / d)
            }
        }
        _ => None,
    };
    let v = scaled.ok_or_else(err)?;
    Ok(if neg { -v } else { v })
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.string)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.string)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quantity such as \"500m\", \"128Mi\" or 2")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::new(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::new(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity::new(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                let q = Quantity::new(v);
                q.nanos().map_err(E::custom)?;
                Ok(q)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_suffixes() {
        assert_eq!(Quantity::new("500m").millis().unwrap(), 500);
        assert_eq!(Quantity::new("2").millis().unwrap(), 2000);
        assert_eq!(Quantity::new("0.5").millis().unwrap(), 500);
        assert_eq!(Quantity::new("128Mi").value().unwrap(), 128 << 20);
        assert_eq!(Quantity::new("1G").value().unwrap(), 1_000_000_000);
        assert_eq!(Quantity::new("1e3").value().unwrap(), 1000);
        assert_eq!(Quantity::new("100n").nanos().unwrap(), 100);
        assert_eq!(Quantity::new("1.5Gi").value().unwrap(), 3 << 29);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "5Q", "m"] {
            assert!(Quantity::new(bad).nanos().is_err(), "{bad}");
        }
    }

    #[test]
    fn yaml_numbers_are_accepted() {
        let q: Quantity = serde_yaml::from_str("1").unwrap();
        assert_eq!(q.string, "1");
        let e = serde_yaml::from_str::<Quantity>("\"12Q\"").unwrap_err();
        assert!(e.to_string().contains("12Q"));
    }

    #[test]
    fn formats_back() {
        assert_eq!(Quantity::from_millis(1500).string, "1500m");
        assert_eq!(Quantity::from_millis(2000).string, "2");
        assert_eq!(Quantity::from_bytes(128 << 20).string, "128Mi");
    }
}
