//! Kubernetes' protobuf bodies (`application/vnd.kubernetes.protobuf`, what
//! kubectl's typed clients send: `kubectl create deployment`, `create
//! secret`, `create token`, `auth can-i`, `drain`) transcoded into the
//! Kubernetes JSON the REST face already reads, so validation, unknown and
//! unsupported fields, admission and the answers stay the JSON path's.
//!
//! rkube's own protos do not use Kubernetes' field numbers, so the wire
//! schema is a table (`protobuf/fields.txt`, written by `protobuf/fields.py`
//! from Kubernetes' `generated.proto` files): for each message reachable from
//! the served kinds, field number → JSON name and type. Fields Kubernetes has
//! and rkube does not are listed by name only (`-`): a zero value there is
//! Go's "unset" (Kubernetes' Go structs always encode their non-pointer
//! fields), so it is dropped, as JSON's `omitempty` would; any other value
//! becomes that JSON key, and `fieldValidation` and rkube's unsupported-field
//! reasons name it exactly as for a JSON body. A field number the table does
//! not have at all (a newer Kubernetes' field) is dropped when zero, for the
//! same reason, and otherwise refused with a BadRequest naming the message and
//! number whatever `fieldValidation` says: rkube cannot name it, and silently
//! dropping a field the user set would run something else than asked.

use super::Call;
use crate::error::ApiError;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Kubernetes' protobuf content type, which kubectl's typed clients send.
pub(super) const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The magic before Kubernetes' protobuf envelope.
const MAGIC: &[u8] = b"k8s\0";

/// A field's type in Kubernetes' wire schema.
#[derive(Debug, Clone, PartialEq)]
enum Type {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    /// `resource.Quantity` {string=1}: a JSON string.
    Quantity,
    /// `intstr.IntOrString` {type=1, intVal=2, strVal=3}: a number or a string.
    IntOrString,
    /// `metav1.Time` {seconds=1, nanos=2}: RFC 3339 to the second.
    Time,
    /// `metav1.MicroTime`: RFC 3339 to the microsecond.
    MicroTime,
    /// `runtime.RawExtension` and `metav1.FieldsV1` {raw=1}: embedded JSON.
    RawJson,
    Message(&'static str),
    /// An embedded Go struct (`json:",inline"`, such as a Volume's
    /// VolumeSource): a message on the wire, its fields the parent's in JSON.
    Embedded(&'static str),
    /// A field Kubernetes has and rkube does not.
    Absent,
}

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Single,
    Repeated,
    /// `map<string, T>`: entries {key=1, value=2}.
    Map,
}

#[derive(Debug)]
struct Field {
    json: &'static str,
    shape: Shape,
    ty: Type,
}

type Schema = HashMap<&'static str, HashMap<u64, Field>>;

/// The table, parsed once; `fields.txt` is checked by the unit tests.
fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse_table(include_str!("protobuf/fields.txt")).expect("protobuf/fields.txt"))
}

fn parse_table(text: &'static str) -> Result<Schema, String> {
    let mut schema = Schema::new();
    let mut current: Option<&'static str> = None;
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("fields.txt line {}: {what}: {line:?}", n + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            current = Some(line.trim());
            schema.entry(line.trim()).or_default();
            continue;
        }
        let message = current.ok_or_else(|| bad("a field before any message"))?;
        let mut parts = line.split_whitespace();
        let (Some(number), Some(json), Some(ty), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("want NUMBER NAME TYPE"));
        };
        let number = number.parse().map_err(|_| bad("not a field number"))?;
        let (shape, ty) = if let Some(t) = ty.strip_prefix("[]") {
            (Shape::Repeated, t)
        } else if let Some(t) = ty.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            (Shape::Map, t)
        } else {
            (Shape::Single, ty)
        };
        let ty = match ty {
            "string" => Type::String,
            "bytes" => Type::Bytes,
            "bool" => Type::Bool,
            "int32" => Type::Int32,
            "int64" => Type::Int64,
            "double" => Type::Double,
            "Quantity" => Type::Quantity,
            "IntOrString" => Type::IntOrString,
            "Time" => Type::Time,
            "MicroTime" => Type::MicroTime,
            "RawJSON" => Type::RawJson,
            "-" => Type::Absent,
            m if m.starts_with("...") => Type::Embedded(&m[3..]),
            m if m.contains('.') => Type::Message(m),
            _ => return Err(bad("unknown type")),
        };
        let field = Field { json, shape, ty };
        if schema.entry(message).or_default().insert(number, field).is_some() {
            return Err(bad("field number listed twice"));
        }
    }
    for fields in schema.values() {
        for f in fields.values() {
            if let Type::Message(m) | Type::Embedded(m) = f.ty {
                if !schema.contains_key(m) {
                    return Err(format!(
                        "fields.txt: {} names message {m}, which is not listed",
                        f.json
                    ));
                }
            }
        }
    }
    Ok(schema)
}

/// A request body as JSON: a protobuf body (other than a PATCH's, whose
/// content type names the patch format) transcoded, any other unchanged.
pub(super) fn json_body(call: &Call, body: Bytes) -> Result<Bytes, ApiError> {
    if !call.content_type().starts_with(PROTOBUF)
        || call.parts.method == http::Method::PATCH
        || body.is_empty()
    {
        return Ok(body);
    }
    let v = to_json(&body)?;
    Ok(Bytes::from(
        serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// A protobuf body (`k8s\0` + `runtime.Unknown`) as the Kubernetes JSON
/// object it encodes, with the envelope's apiVersion and kind.
pub(super) fn to_json(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |e: String| ApiError::bad_request(format!("the protobuf body cannot be decoded: {e}"));
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with Kubernetes' protobuf magic (k8s\\0)".into()))?;
    // runtime.Unknown {typeMeta{apiVersion=1, kind=2}=1, raw=2, contentEncoding=3, contentType=4}
    let (mut api_version, mut kind, mut object, mut encoding) = (String::new(), String::new(), &[][..], "");
    for field in Fields(raw) {
        match field.map_err(|e| bad(format!("runtime.Unknown: {e}")))? {
            (1, Wire::Len(type_meta)) => {
                for f in Fields(type_meta) {
                    match f.map_err(|e| bad(format!("runtime.TypeMeta: {e}")))? {
                        (1, Wire::Len(v)) => api_version = utf8(v).map_err(bad)?.into(),
                        (2, Wire::Len(v)) => kind = utf8(v).map_err(bad)?.into(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(v)) => object = v,
            (3, Wire::Len(v)) => encoding = utf8(v).map_err(bad)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(bad(format!("content encoding {encoding:?} is not supported")));
    }
    let message = message_of(&api_version, &kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "rkube cannot read a {kind} of apiVersion {api_version:?} as {PROTOBUF}; send it as application/json"
        ))
    })?;
    let mut v = decode(schema(), message, object, 0).map_err(|e| bad(format!("{kind}: {e}")))?;
    if let Value::Object(map) = &mut v {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

/// The table's message for an envelope's apiVersion and kind:
/// `apps/v1` Deployment is `apps.v1.Deployment`, the core group is `core`,
/// and a group's first label names it (`rbac.authorization.k8s.io` → `rbac`).
/// DeleteOptions is meta/v1's in every group version.
fn message_of(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("core", api_version));
    let name = if kind == "DeleteOptions" {
        "meta.v1.DeleteOptions".to_string()
    } else {
        format!("{}.{version}.{kind}", group.split('.').next().unwrap_or(group))
    };
    schema().get_key_value(name.as_str()).map(|(k, _)| *k)
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|_| "a string is not UTF-8".to_string())
}

/// One field's value on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl Wire<'_> {
    /// Go's zero value: what a non-pointer field holds when unset.
    fn is_zero(&self) -> bool {
        match self {
            Wire::Varint(v) | Wire::Fixed64(v) => *v == 0,
            Wire::Fixed32(v) => *v == 0,
            Wire::Len(b) => b.is_empty(),
        }
    }
}

/// The fields of a message, in wire order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for (i, b) in self.0.iter().enumerate().take(10) {
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(out);
            }
        }
        Err("a varint is truncated or too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("a field wants {n} bytes, {} are left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default())),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "a length is too large")?;
                Wire::Len(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default())),
            w => {
                return Err(format!(
                    "field {} has wire type {w}, which Kubernetes does not use",
                    key >> 3
                ))
            }
        };
        Ok((key >> 3, wire))
    }
}

/// Kubernetes objects nest a few dozen levels at most; a body nesting deeper
/// is refused rather than recursed into.
const MAX_DEPTH: usize = 64;

/// A message as a JSON object.
fn decode(schema: &Schema, message: &'static str, bytes: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{message} is nested more than {MAX_DEPTH} levels deep"));
    }
    let fields = &schema[message];
    let mut out = Map::new();
    for item in Fields(bytes) {
        let (number, wire) = item.map_err(|e| format!("{message}: {e}"))?;
        // a newer Kubernetes' non-pointer field, unset, is sent all the same
        if !fields.contains_key(&number) && wire.is_zero() {
            continue;
        }
        let field = fields.get(&number).ok_or_else(|| {
            format!(
                "{message} has no field number {number} that rkube knows (a newer Kubernetes' field?); send the object as JSON to have it named"
            )
        })?;
        let at = |e: String| format!("{message}.{}: {e}", field.json);
        if field.ty == Type::Absent {
            if !wire.is_zero() {
                // the key is what matters: fieldValidation names or drops it
                out.entry(field.json).or_insert(Value::Bool(true));
            }
            continue;
        }
        if let (Type::Embedded(inner), Wire::Len(b)) = (&field.ty, wire) {
            if let Value::Object(fields) = decode(schema, inner, b, depth + 1)? {
                out.extend(fields);
            }
            continue;
        }
        match field.shape {
            Shape::Single => {
                out.insert(
                    field.json.into(),
                    value(schema, &field.ty, wire, depth).map_err(at)?,
                );
            }
            Shape::Repeated => {
                let items = out.entry(field.json).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else {
                    unreachable!("repeated fields are arrays")
                };
                match (wire, &field.ty) {
                    // packed numbers (proto3 style; Kubernetes' proto2 does not pack, but may)
                    (Wire::Len(packed), Type::Bool | Type::Int32 | Type::Int64) => {
                        let mut p = Fields(packed);
                        while !p.0.is_empty() {
                            let v = Wire::Varint(p.varint().map_err(at)?);
                            items.push(value(schema, &field.ty, v, depth).map_err(at)?);
                        }
                    }
                    _ => items.push(value(schema, &field.ty, wire, depth).map_err(at)?),
                }
            }
            Shape::Map => {
                let Wire::Len(entry) = wire else {
                    return Err(at("a map entry is not length-delimited".into()));
                };
                let (mut key, mut val) = (String::new(), None);
                for f in Fields(entry) {
                    match f.map_err(at)? {
                        (1, Wire::Len(k)) => key = utf8(k).map_err(at)?.to_string(),
                        (2, v) => val = Some(v),
                        _ => {}
                    }
                }
                // an absent value is the type's zero value
                let val = match val {
                    Some(v) => {
                        value(schema, &field.ty, v, depth).map_err(|e| at(format!("[{key:?}]: {e}")))?
                    }
                    None => value(schema, &field.ty, Wire::Len(&[]), depth).map_err(at)?,
                };
                let map = out.entry(field.json).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, val);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// One value of type `ty`.
fn value(schema: &Schema, ty: &Type, wire: Wire, depth: usize) -> Result<Value, String> {
    let wrong = || {
        let sent = match wire {
            Wire::Varint(_) => "a varint",
            Wire::Fixed64(_) => "a 64-bit number",
            Wire::Len(_) => "length-delimited",
            Wire::Fixed32(_) => "a 32-bit number",
        };
        format!("a {ty:?} field cannot be {sent} on the wire")
    };
    Ok(match (ty, wire) {
        (Type::String, Wire::Len(b)) => Value::String(utf8(b)?.into()),
        (Type::Bytes, Wire::Len(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (Type::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // negative int32s are sign-extended to 64 bits on the wire
        (Type::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Type::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Type::Double, Wire::Fixed64(v)) => Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .ok_or("a number is not finite")?,
        (Type::Quantity, Wire::Len(b)) => {
            let mut s = "";
            for f in Fields(b) {
                if let (1, Wire::Len(v)) = f? {
                    s = utf8(v)?;
                }
            }
            Value::String(s.into())
        }
        (Type::IntOrString, Wire::Len(b)) => {
            let (mut kind, mut int, mut string) = (0, 0i32, String::new());
            for f in Fields(b) {
                match f? {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = v as i64 as i32,
                    (3, Wire::Len(v)) => string = utf8(v)?.into(),
                    _ => {}
                }
            }
            if kind == 1 {
                Value::String(string)
            } else {
                Value::from(int)
            }
        }
        // Go writes its zero time (a non-pointer Time never set) as an empty
        // message; Kubernetes JSON writes it as null
        (Type::Time | Type::MicroTime, Wire::Len([])) => Value::Null,
        (Type::Time | Type::MicroTime, Wire::Len(b)) => {
            let (mut seconds, mut nanos) = (0i64, 0u32);
            for f in Fields(b) {
                match f? {
                    (1, Wire::Varint(v)) => seconds = v as i64,
                    (2, Wire::Varint(v)) => nanos = v as u32,
                    _ => {}
                }
            }
            let t = chrono::DateTime::from_timestamp(seconds, nanos).ok_or("a time is out of range")?;
            let format = if *ty == Type::Time {
                chrono::SecondsFormat::Secs
            } else {
                chrono::SecondsFormat::Micros
            };
            Value::String(t.to_rfc3339_opts(format, true))
        }
        (Type::RawJson, Wire::Len(b)) => {
            let mut raw: &[u8] = &[];
            for f in Fields(b) {
                if let (1, Wire::Len(v)) = f? {
                    raw = v;
                }
            }
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))?
            }
        }
        (Type::Message(m), Wire::Len(b)) => decode(schema, m, b, depth + 1)?,
        _ => return Err(wrong()),
    })
}

#[cfg(test)]
mod tests;
