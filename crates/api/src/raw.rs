//! `RawExtension`: a field holding JSON of any shape (Kubernetes'
//! `runtime.RawExtension`), such as a ControllerRevision's `data`. In JSON
//! and YAML it is the embedded value itself; on the wire it is that value's
//! compact JSON bytes, as in Kubernetes' protobuf.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Same protobuf encoding as Kubernetes' `RawExtension` (raw = 1).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RawExtension {
    #[prost(bytes = "vec", tag = "1")]
    pub raw: Vec<u8>,
}

impl RawExtension {
    /// Holds `value` as its compact JSON.
    pub fn from_value(value: &serde_json::Value) -> Self {
        RawExtension {
            raw: serde_json::to_vec(value).expect("a JSON value always serializes"),
        }
    }

    /// The embedded value; `null` when empty or when the bytes are not
    /// JSON (a client's protobuf may carry anything).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.raw).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for RawExtension {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawExtension {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(|v| RawExtension::from_value(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shape_is_the_embedded_value() {
        let doc = json!({"data": {"spec": {"template": {"$patch": "replace"}}}});
        #[derive(Serialize, Deserialize)]
        struct Holder {
            data: RawExtension,
        }
        let h: Holder = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(h.data.raw, br#"{"spec":{"template":{"$patch":"replace"}}}"#);
        assert_eq!(serde_json::to_value(&h).unwrap(), doc);
        assert_eq!(RawExtension::default().value(), serde_json::Value::Null);
    }
}
