//! `IntOrString`: a field that holds either an integer or a string, written
//! in JSON/YAML as a bare number (`targetPort: 8080`) or a bare string
//! (`targetPort: http`, `maxSurge: 25%`).

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Same protobuf encoding as Kubernetes' `IntOrString` (type, intVal, strVal).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct IntOrString {
    /// 0 = int, 1 = string
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(int32, tag = "2")]
    pub int_val: i32,
    #[prost(string, tag = "3")]
    pub str_val: String,
}

impl IntOrString {
    pub fn int(v: i32) -> Self {
        IntOrString {
            r#type: 0,
            int_val: v,
            str_val: String::new(),
        }
    }

    pub fn string(v: impl Into<String>) -> Self {
        IntOrString {
            r#type: 1,
            int_val: 0,
            str_val: v.into(),
        }
    }

    pub fn is_string(&self) -> bool {
        self.r#type == 1
    }

    /// The integer, when this holds one.
    pub fn as_int(&self) -> Option<i32> {
        (!self.is_string()).then_some(self.int_val)
    }

    /// The string, when this holds one.
    pub fn as_str(&self) -> Option<&str> {
        self.is_string().then_some(self.str_val.as_str())
    }

    /// Resolves an absolute number or a percentage of `total`
    /// (`maxSurge: 25%` of 10 replicas). Percentages round up or down as
    /// Kubernetes does for surge (up) and unavailable (down).
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self.as_str() {
            None => Ok(self.int_val),
            Some(s) => {
                let pct = s
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| {
                        format!("invalid value {s:?}: must be an integer or a percentage like \"25%\"")
                    })?;
                // i128: no percentage of any i32 total overflows on the way
                let v = i128::from(pct) * i128::from(total);
                let r = if round_up {
                    (v + 99).div_euclid(100)
                } else {
                    v.div_euclid(100)
                };
                i32::try_from(r).map_err(|_| {
                    format!("invalid value {s:?}: {r} is out of range for a count; use a smaller percentage")
                })
            }
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => f.write_str(s),
            None => write!(f, "{}", self.int_val),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(v) => s.serialize_str(v),
            None => s.serialize_i32(self.int_val),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::int)
                    .map_err(|_| E::custom(format!("{v} is out of range for a 32-bit integer")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::int)
                    .map_err(|_| E::custom(format!("{v} is out of range for a 32-bit integer")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::string(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_bare_number_or_string() {
        let n: IntOrString = serde_json::from_str("8080").unwrap();
        assert_eq!(n.as_int(), Some(8080));
        let s: IntOrString = serde_json::from_str("\"http\"").unwrap();
        assert_eq!(s.as_str(), Some("http"));
        assert_eq!(serde_json::to_string(&n).unwrap(), "8080");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"http\"");
        assert!(serde_json::from_str::<IntOrString>("[1]").is_err());
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let p = IntOrString::string("25%");
        assert_eq!(p.scaled_value(10, true).unwrap(), 3);
        assert_eq!(p.scaled_value(10, false).unwrap(), 2);
        assert_eq!(IntOrString::int(2).scaled_value(10, true).unwrap(), 2);
        assert!(IntOrString::string("x%").scaled_value(10, true).is_err());
    }
}
