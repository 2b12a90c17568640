//! Kubernetes JSON written straight from a typed object into bytes: the same bytes as
//! `rkube_api::codec::any_to_json` serialized with `serde_json::to_vec`, without the
//! `serde_json::Value` tree in between.
//!
//! That tree cost most of a cold list's time (a map node and a `String` for every key
//! and string of every object, then a walk to fill the zero values, then a walk to
//! write it). What it did besides holding the object is reproduced here while writing:
//!
//! * keys in sorted order at every level (serde_json's `Map` is a `BTreeMap`, as this
//!   workspace builds it, so that is the order every client has seen); an object whose
//!   fields arrive out of order is rearranged once, when it ends, and a repeated key
//!   keeps its last value, as a map insert does;
//! * the zero values of `rkube_api::zero_values::ZERO_VALUES`, added where their parent
//!   object exists and lacks them: the position of every value is followed as the set
//!   of rules whose parent path it still matches, so objects off those paths cost
//!   nothing;
//! * scalars as `Value` holds them: an `f32` widened to `f64`, 128-bit integers only
//!   when they fit 64 bits, map keys as serde_json's map-key rules make them.
//!
//! Byte equality with the `Value` path is checked by the tests below, for every kind and
//! for random objects.

use rkube_api::zero_values::{ZeroValue, ZERO_VALUES};
use rkube_api::Resource;
use serde::ser::{self, Serialize, Serializer as _};
use std::fmt;
use std::sync::OnceLock;

/// Why an object could not be written (a type whose JSON form serde_json refuses too,
/// such as a map with non-string keys).
#[derive(Debug)]
pub struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

impl From<serde_json::Error> for EncodeError {
    fn from(e: serde_json::Error) -> Self {
        EncodeError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, EncodeError>;

/// One step of a zero value's path: a key of an object, or any element of a list.
#[derive(Debug, PartialEq)]
enum Step {
    Key(&'static str),
    Element,
}

/// A zero value to add: where its parent object is, its key and its JSON.
struct Rule {
    kind: &'static str,
    parent: Vec<Step>,
    leaf: &'static str,
    json: &'static [u8],
}

/// [`ZERO_VALUES`] as rules, at most 64 of them (a position's candidates are a bitmask).
fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let rules: Vec<Rule> = ZERO_VALUES
            .iter()
            .filter_map(|(kind, path, zero)| {
                let mut parent = Vec::new();
                let mut segments: Vec<&'static str> = path.split('.').collect();
                let leaf = segments.pop()?;
                // a leaf written `name[]` adds nothing in `zero_values::fill` either
                if leaf.ends_with("[]") {
                    return None;
                }
                for s in segments {
                    match s.strip_suffix("[]") {
                        Some(list) => parent.extend([Step::Key(list), Step::Element]),
                        None => parent.push(Step::Key(s)),
                    }
                }
                let json: &'static [u8] = match zero {
                    ZeroValue::Int => b"0",
                    ZeroValue::False => b"false",
                    ZeroValue::Str => b"\"\"",
                };
                Some(Rule {
                    kind,
                    parent,
                    leaf,
                    json,
                })
            })
            .collect();
        assert!(
            rules.len() <= 64,
            "zero_values::ZERO_VALUES outgrew the encoder's u64 rule mask"
        );
        rules
    })
}

/// The rules that apply to objects of `kind`.
fn kind_mask(kind: &str) -> u64 {
    rules()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == "*" || r.kind == kind)
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// The rules of `mask` whose parent path goes on, after `depth` steps, with the key
/// `key` (`None`: with an element of a list).
fn narrow(mask: u64, depth: usize, key: Option<&str>) -> u64 {
    if mask == 0 {
        return 0;
    }
    let rules = rules();
    let mut out = 0;
    let mut m = mask;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        let goes_on = match (rules[i].parent.get(depth), key) {
            (Some(Step::Key(k)), Some(key)) => *k == key,
            (Some(Step::Element), None) => true,
            _ => false,
        };
        if goes_on {
            out |= 1 << i;
        }
    }
    out
}

/// An object key: a struct field's name, or a map key kept in [`Encoder::keys`].
#[derive(Clone, Copy)]
enum Key {
    Static(&'static str),
    Held { start: usize, end: usize },
}

/// One key and value written in the object being written: `out[start..end]` holds
/// `"key":value`, without the separating comma.
#[derive(Clone, Copy)]
struct Entry {
    key: Key,
    start: usize,
    end: usize,
}

/// An object or list being written.
struct Frame {
    object: bool,
    /// Where its first entry or element starts (after `{` or `[`).
    content: usize,
    /// Its first entry in [`Encoder::entries`].
    first_entry: usize,
    /// Where its map keys start in [`Encoder::keys`].
    keys_mark: usize,
    /// Entries or elements written so far.
    count: usize,
    /// Whether every key so far came after the one before it.
    sorted: bool,
    /// The zero-value rules whose parent path leads here, and how deep it is.
    mask: u64,
    depth: usize,
    /// Closes the one-key object around it too (an enum variant's `{"name": ...}`).
    closes_variant: bool,
}

/// Writes objects as Kubernetes JSON; keeps its buffers between objects, so a list's
/// items cost no allocation of its own beyond what the types' `Serialize` make.
#[derive(Default)]
pub struct Encoder {
    frames: Vec<Frame>,
    entries: Vec<Entry>,
    keys: Vec<u8>,
    scratch: Vec<u8>,
    /// The map key waiting for its value.
    pending_key: Option<Key>,
    /// The rules and depth of the value about to be written.
    mask: u64,
    depth: usize,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Appends `obj`'s Kubernetes JSON (apiVersion and kind set, zero values added) to
    /// `out`. On an error, `out` is left as it was.
    pub fn write<K: Resource>(&mut self, obj: &K, out: &mut Vec<u8>) -> Result<()> {
        self.write_value(K::INFO.kind, obj, out)
    }

    /// Appends `value` as the JSON of an object of `kind`.
    fn write_value<T: ?Sized + Serialize>(&mut self, kind: &str, value: &T, out: &mut Vec<u8>) -> Result<()> {
        let len = out.len();
        self.frames.clear();
        self.entries.clear();
        self.keys.clear();
        self.pending_key = None;
        self.mask = kind_mask(kind);
        self.depth = 0;
        let done = value.serialize(&mut Writer {
            enc: self,
            out: &mut *out,
        });
        if done.is_err() {
            out.truncate(len);
        }
        done
    }
}

/// The serializer: an [`Encoder`]'s state and the bytes written into.
struct Writer<'a> {
    enc: &'a mut Encoder,
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn json(&mut self) -> serde_json::Serializer<&mut Vec<u8>> {
        serde_json::Serializer::new(&mut *self.out)
    }

    fn key_str(&self, key: Key) -> &str {
        match key {
            Key::Static(s) => s,
            // held keys are copied from `&str`s, so they are UTF-8
            Key::Held { start, end } => std::str::from_utf8(&self.enc.keys[start..end]).unwrap_or(""),
        }
    }

    fn open(&mut self, object: bool) {
        self.out.push(if object { b'{' } else { b'[' });
        self.enc.frames.push(Frame {
            object,
            content: self.out.len(),
            first_entry: self.enc.entries.len(),
            keys_mark: self.enc.keys.len(),
            count: 0,
            sorted: true,
            mask: self.enc.mask,
            depth: self.enc.depth,
            closes_variant: false,
        });
    }

    fn frame(&mut self) -> &mut Frame {
        self.enc
            .frames
            .last_mut()
            .expect("serde calls element and field methods inside a compound")
    }

    /// Writes `key` and then `value` as the next entry of the open object.
    fn entry<T: ?Sized + Serialize>(&mut self, key: Key, value: &T) -> Result<()> {
        let (count, mask, depth) = {
            let f = self.frame();
            (f.count, f.mask, f.depth)
        };
        if count > 0 {
            self.out.push(b',');
        }
        let start = self.out.len();
        let name = self.key_str(key);
        let child_mask = narrow(mask, depth, Some(name));
        match key {
            Key::Static(s) => self.json().serialize_str(s)?,
            Key::Held { start, end } => {
                let text = std::str::from_utf8(&self.enc.keys[start..end]).unwrap_or("");
                serde_json::Serializer::new(&mut *self.out).serialize_str(text)?;
            }
        }
        self.out.push(b':');
        self.enc.mask = child_mask;
        self.enc.depth = depth + 1;
        value.serialize(&mut *self)?;
        let end = self.out.len();
        let after_previous = match self.enc.entries.last() {
            Some(prev) if count > 0 => self.key_str(prev.key).as_bytes() < self.key_str(key).as_bytes(),
            _ => true,
        };
        let f = self.frame();
        f.count += 1;
        f.sorted &= after_previous;
        self.enc.entries.push(Entry { key, start, end });
        Ok(())
    }

    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        let (count, mask, depth) = {
            let f = self.frame();
            (f.count, f.mask, f.depth)
        };
        if count > 0 {
            self.out.push(b',');
        }
        self.enc.mask = narrow(mask, depth, None);
        self.enc.depth = depth + 1;
        value.serialize(&mut *self)?;
        self.frame().count += 1;
        Ok(())
    }

    /// Ends the open object or list: zero values added, keys put in order.
    fn close(&mut self) -> Result<()> {
        let frame = self.enc.frames.pop().expect("a compound ends after it began");
        if frame.object {
            let mut count = frame.count;
            let mut sorted = frame.sorted;
            if frame.mask != 0 {
                self.add_zero_values(&frame, &mut count, &mut sorted);
            }
            if !sorted {
                self.reorder(&frame);
            }
            self.out.push(b'}');
            self.enc.entries.truncate(frame.first_entry);
            self.enc.keys.truncate(frame.keys_mark);
        } else {
            self.out.push(b']');
        }
        if frame.closes_variant {
            // the variant's entry in the one-key object around it ends here
            if let Some(e) = self.enc.entries.last_mut() {
                e.end = self.out.len();
            }
            self.close()?;
        }
        Ok(())
    }

    /// Adds the zero values whose parent is this object and which it lacks.
    fn add_zero_values(&mut self, frame: &Frame, count: &mut usize, sorted: &mut bool) {
        let rules = rules();
        let mut m = frame.mask;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let rule = &rules[i];
            if rule.parent.len() != frame.depth {
                continue;
            }
            let present = self.enc.entries[frame.first_entry..]
                .iter()
                .any(|e| self.key_str(e.key) == rule.leaf);
            if present {
                continue;
            }
            if *count > 0 {
                self.out.push(b',');
            }
            let start = self.out.len();
            self.out.push(b'"');
            self.out.extend_from_slice(rule.leaf.as_bytes());
            self.out.extend_from_slice(b"\":");
            self.out.extend_from_slice(rule.json);
            let key = Key::Static(rule.leaf);
            if let Some(prev) = self.enc.entries[frame.first_entry..].last() {
                *sorted &= self.key_str(prev.key).as_bytes() < rule.leaf.as_bytes();
            }
            self.enc.entries.push(Entry {
                key,
                start,
                end: self.out.len(),
            });
            *count += 1;
        }
    }

    /// Rewrites the open object's entries in key order, the last of a repeated key only.
    fn reorder(&mut self, frame: &Frame) {
        let Writer { enc, out } = self;
        let keys = &enc.keys;
        let name = |k: Key| -> &[u8] {
            match k {
                Key::Static(s) => s.as_bytes(),
                Key::Held { start, end } => &keys[start..end],
            }
        };
        let entries = &mut enc.entries[frame.first_entry..];
        // stable: of a repeated key, the last written stays last
        entries.sort_by(|a, b| name(a.key).cmp(name(b.key)));
        enc.scratch.clear();
        enc.scratch.extend_from_slice(&out[frame.content..]);
        out.truncate(frame.content);
        let mut written = 0;
        for (i, e) in entries.iter().enumerate() {
            if entries
                .get(i + 1)
                .is_some_and(|next| name(next.key) == name(e.key))
            {
                continue;
            }
            if written > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&enc.scratch[e.start - frame.content..e.end - frame.content]);
            written += 1;
        }
    }

    /// Opens `{"variant":` and the compound inside it, which closes both.
    fn open_variant(&mut self, variant: &'static str, object: bool) -> Result<()> {
        self.open(true);
        let (mask, depth) = {
            let f = self.frame();
            (f.mask, f.depth)
        };
        let start = self.out.len();
        self.json().serialize_str(variant)?;
        self.out.push(b':');
        self.enc.mask = narrow(mask, depth, Some(variant));
        self.enc.depth = depth + 1;
        // the entry's end is set when the inner compound closes
        self.enc.entries.push(Entry {
            key: Key::Static(variant),
            start,
            end: start,
        });
        self.frame().count = 1;
        self.open(object);
        self.frame().closes_variant = true;
        Ok(())
    }

    /// The map key `key` as serde_json's `Value` would hold it.
    fn hold_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<Key> {
        let start = self.enc.keys.len();
        match key.serialize(KeyCapture(&mut self.enc.keys)) {
            Ok(()) => {}
            Err(NotAString) => {
                // numbers, bools and chars become strings as serde_json makes them; what
                // it refuses (a list as a key) is refused with its error
                struct One<'a, T: ?Sized>(&'a T);
                impl<T: ?Sized + Serialize> Serialize for One<'_, T> {
                    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                        use ser::SerializeMap;
                        let mut m = s.serialize_map(Some(1))?;
                        m.serialize_entry(self.0, &())?;
                        m.end()
                    }
                }
                let value = serde_json::to_value(One(key))?;
                let text = value
                    .as_object()
                    .and_then(|m| m.keys().next())
                    .ok_or_else(|| EncodeError("a map key serde_json cannot write".into()))?;
                self.enc.keys.extend_from_slice(text.as_bytes());
            }
        }
        Ok(Key::Held {
            start,
            end: self.enc.keys.len(),
        })
    }
}

/// Takes a map key that is a string; anything else is [`NotAString`].
struct KeyCapture<'a>(&'a mut Vec<u8>);

#[derive(Debug)]
struct NotAString;

impl fmt::Display for NotAString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a string key")
    }
}

impl std::error::Error for NotAString {}

impl ser::Error for NotAString {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotAString
    }
}

macro_rules! not_a_string {
    ($($name:ident($($arg:ty),*);)*) => {
        $(fn $name(self, $(_: $arg),*) -> std::result::Result<(), NotAString> { Err(NotAString) })*
    };
}

impl ser::Serializer for KeyCapture<'_> {
    type Ok = ();
    type Error = NotAString;
    type SerializeSeq = ser::Impossible<(), NotAString>;
    type SerializeTuple = ser::Impossible<(), NotAString>;
    type SerializeTupleStruct = ser::Impossible<(), NotAString>;
    type SerializeTupleVariant = ser::Impossible<(), NotAString>;
    type SerializeMap = ser::Impossible<(), NotAString>;
    type SerializeStruct = ser::Impossible<(), NotAString>;
    type SerializeStructVariant = ser::Impossible<(), NotAString>;

    fn serialize_str(self, v: &str) -> std::result::Result<(), NotAString> {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }

    not_a_string! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> std::result::Result<(), NotAString> {
        Err(NotAString)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> std::result::Result<(), NotAString> {
        // serde_json's map keys see through newtypes
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> std::result::Result<(), NotAString> {
        Err(NotAString)
    }

    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Self::SerializeSeq, NotAString> {
        Err(NotAString)
    }

    fn serialize_tuple(self, _: usize) -> std::result::Result<Self::SerializeTuple, NotAString> {
        Err(NotAString)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleStruct, NotAString> {
        Err(NotAString)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleVariant, NotAString> {
        Err(NotAString)
    }

    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Self::SerializeMap, NotAString> {
        Err(NotAString)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeStruct, NotAString> {
        Err(NotAString)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeStructVariant, NotAString> {
        Err(NotAString)
    }
}

impl<'a, 'b> ser::Serializer for &'b mut Writer<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<()> {
        Ok(self.json().serialize_bool(v)?)
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        Ok(self.json().serialize_i8(v)?)
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        Ok(self.json().serialize_i16(v)?)
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        Ok(self.json().serialize_i32(v)?)
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        Ok(self.json().serialize_i64(v)?)
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        // a `Value` number holds 64 bits
        if let Ok(v) = i64::try_from(v) {
            return self.serialize_i64(v);
        }
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => Err(EncodeError("number out of range".into())),
        }
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        Ok(self.json().serialize_u8(v)?)
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        Ok(self.json().serialize_u16(v)?)
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        Ok(self.json().serialize_u32(v)?)
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        Ok(self.json().serialize_u64(v)?)
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => Err(EncodeError("number out of range".into())),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        // a `Value` keeps an f32 as the f64 it widens to, and writes that
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        Ok(self.json().serialize_f64(v)?)
    }
    fn serialize_char(self, v: char) -> Result<()> {
        Ok(self.json().serialize_char(v)?)
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        Ok(self.json().serialize_str(v)?)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        Ok(self.json().serialize_bytes(v)?)
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.open(true);
        self.entry(Key::Static(variant), value)?;
        self.close()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self> {
        self.open(false);
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self> {
        self.open(false);
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self> {
        self.open(false);
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self> {
        self.open_variant(variant, false)?;
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self> {
        self.open(true);
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self> {
        self.open(true);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self> {
        self.open_variant(variant, true)?;
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

impl ser::SerializeTuple for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

impl ser::SerializeMap for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        let key = self.hold_key(key)?;
        self.enc.pending_key = Some(key);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        let key = self
            .enc
            .pending_key
            .take()
            .ok_or_else(|| EncodeError("a map value without its key".into()))?;
        self.entry(key, value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

impl ser::SerializeStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<()> {
        self.entry(Key::Static(key), value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

impl ser::SerializeStructVariant for &mut Writer<'_> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<()> {
        self.entry(Key::Static(key), value)
    }
    fn end(self) -> Result<()> {
        self.close()
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::JsonCache;
    use super::*;
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::Any;
    use prost_types::{DescriptorProto, FileDescriptorSet};
    use rkube_api::{ResourceInfo, FILE_DESCRIPTOR_SET, KINDS};
    use serde::Serialize;
    use serde_json::json;
    use std::collections::{BTreeMap, HashMap};

    /// What the REST face sent before the encoder: the `Value`, serialized.
    fn through_value(info: &ResourceInfo, any: &Any) -> Option<Vec<u8>> {
        let value = rkube_api::codec::any_to_json(info, any).ok()?;
        Some(serde_json::to_vec(&value).expect("a Value serializes"))
    }

    /// What the REST face sends now, as lists and watches make it (never cached here).
    fn direct(info: &ResourceInfo, any: &Any) -> Option<Vec<u8>> {
        JsonCache::new(0).encode(info, any).ok().map(|j| j.to_vec())
    }

    /// A value written by the encoder as an object of `kind`, and as the `Value` path
    /// writes it (`to_value`, the zero values filled, serialized).
    fn both<T: Serialize>(kind: &str, value: &T) -> (String, String) {
        let mut out = Vec::new();
        Encoder::new().write_value(kind, value, &mut out).unwrap();
        let mut v = serde_json::to_value(value).unwrap();
        rkube_api::zero_values::fill(kind, &mut v);
        (
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&v).unwrap(),
        )
    }

    #[test]
    fn keys_come_sorted_and_zero_values_are_added_where_the_value_path_adds_them() {
        let pod = json!({
            "status": {
                "containerStatuses": [
                    {"name": "a", "state": {"terminated": {"reason": "Completed"}}},
                    {"name": "b", "restartCount": 3, "ready": true, "lastState": {"terminated": {"exitCode": 2}}},
                    ["not", "an", "object"],
                    null
                ],
                "initContainerStatuses": {"restartCount": "not a list"},
                "status.containerStatuses": [{"name": "a key with dots is one key"}]
            },
            "spec": {"containers": [{"ports": [{"name": "http"}, {"containerPort": 80}]}]},
            "metadata": {"labels": {"b": "1", "a": "2", "é": "3", "Z": "4", "a\"q": "5"}}
        });
        let (direct, value) = both("Pod", &pod);
        assert_eq!(direct, value);
        assert!(direct.contains(r#""restartCount":0"#), "{direct}");
        assert!(direct.contains(r#""exitCode":0"#), "{direct}");
        // a kind's rules only, and "*" rules for every kind
        let deployment = json!({"spec": {"template": {"spec": {"containers": [{"ports": [{}]}]}}},
                                "status": {"containerStatuses": [{}]}});
        let (direct, value) = both("Deployment", &deployment);
        assert_eq!(direct, value);
        assert!(direct.contains(r#""containerPort":0"#), "{direct}");
        assert!(!direct.contains("restartCount"), "{direct}");
    }

    /// A map that repeats a key: a `Value` keeps the last value, in key order.
    struct Repeated;

    impl Serialize for Repeated {
        fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use ser::SerializeMap;
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("b", &1)?;
            m.serialize_entry("a", &2)?;
            m.serialize_entry("b", &3)?;
            m.end()
        }
    }

    struct Bytes;

    impl Serialize for Bytes {
        fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.serialize_bytes(&[0, 7, 255])
        }
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(u8, &'static str),
        Struct { z: u8, a: Vec<u8> },
    }

    #[derive(Serialize)]
    struct Odd {
        zeta: f32,
        alpha: f64,
        nan: f64,
        by_number: BTreeMap<i32, &'static str>,
        by_flag: BTreeMap<bool, u8>,
        by_char: BTreeMap<char, u8>,
        repeated: Repeated,
        bytes: Bytes,
        shapes: Vec<Shape>,
        unit: (),
        none: Option<u8>,
        some: Option<&'static str>,
        big: i128,
        huge: u128,
        tuple: (u8, &'static str),
        text: &'static str,
    }

    #[test]
    fn every_serde_shape_is_written_as_a_value_holds_it() {
        let odd = Odd {
            zeta: 0.1,
            alpha: 1e300,
            nan: f64::NAN,
            by_number: BTreeMap::from([(10, "ten"), (9, "nine"), (-1, "minus")]),
            by_flag: BTreeMap::from([(true, 1), (false, 0)]),
            by_char: BTreeMap::from([('b', 1), ('a', 0)]),
            repeated: Repeated,
            bytes: Bytes,
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(1),
                Shape::Tuple(2, "two"),
                Shape::Struct { z: 3, a: vec![4] },
            ],
            unit: (),
            none: None,
            some: Some("x"),
            big: -5,
            huge: 1 << 63,
            tuple: (1, "one"),
            text: "line\nbreak \"quoted\" \u{1} é 😀 </script>",
        };
        let (direct, value) = both("Nothing", &odd);
        assert_eq!(direct, value);
        assert!(direct.contains(r#""zeta":0.10000000149011612"#), "{direct}");
        // what a Value cannot hold is an error here too, not other JSON
        #[derive(Serialize)]
        struct TooBig {
            n: u128,
        }
        assert!(serde_json::to_value(TooBig { n: u128::MAX }).is_err());
        assert!(Encoder::new()
            .write_value("Nothing", &TooBig { n: u128::MAX }, &mut Vec::new())
            .is_err());
        #[derive(Serialize)]
        struct ListKey {
            m: BTreeMap<Vec<u8>, u8>,
        }
        let list_key = ListKey {
            m: BTreeMap::from([(vec![1], 1)]),
        };
        assert!(serde_json::to_value(&list_key).is_err());
        let mut out = b"kept".to_vec();
        assert!(Encoder::new()
            .write_value("Nothing", &list_key, &mut out)
            .is_err());
        assert_eq!(out, b"kept", "a failed write leaves the buffer as it was");
    }

    /// splitmix64: the random objects are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }
    }

    /// Strings that sort, escape and encode differently.
    const TEXTS: &[&str] = &[
        "",
        "a",
        "web",
        "Z",
        "aa",
        "a.b",
        "é",
        "中文",
        "😀",
        "\"quoted\"",
        "back\\slash",
        "line\nbreak\ttab",
        "\u{1}\u{1f}\u{7f}",
        "</script>&",
        "restartCount",
        "status",
        "2026-01-01T00:00:00Z",
        "100m",
        "64Mi",
        "{\"raw\": [1, 2.5, \"x\", null, {\"b\": true, \"a\": {}}]}",
    ];

    /// Random objects of every kind, as protobuf, from the descriptors of `proto/`: every
    /// field of every message can appear, with values picked to make JSON differ (escapes,
    /// key order, zero values, extremes).
    struct Generator {
        messages: HashMap<String, DescriptorProto>,
        enums: HashMap<String, Vec<i32>>,
        rng: Rng,
    }

    impl Generator {
        fn new(seed: u64) -> Generator {
            let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
            let mut g = Generator {
                messages: HashMap::new(),
                enums: HashMap::new(),
                rng: Rng(seed),
            };
            for file in set.file {
                let package = format!(".{}", file.package());
                for e in &file.enum_type {
                    g.add_enum(&package, e);
                }
                for m in file.message_type {
                    g.add_message(&package, m);
                }
            }
            g
        }

        fn add_enum(&mut self, scope: &str, e: &prost_types::EnumDescriptorProto) {
            let values = e.value.iter().map(|v| v.number()).collect();
            self.enums.insert(format!("{scope}.{}", e.name()), values);
        }

        fn add_message(&mut self, scope: &str, m: DescriptorProto) {
            let name = format!("{scope}.{}", m.name());
            for e in &m.enum_type {
                self.add_enum(&name, e);
            }
            for nested in &m.nested_type {
                self.add_message(&name, nested.clone());
            }
            self.messages.insert(name, m);
        }

        fn text(&mut self) -> String {
            if self.rng.percent(70) {
                return self.rng.pick(TEXTS).to_string();
            }
            let len = self.rng.below(12);
            (0..len)
                .map(|_| char::from_u32(self.rng.below(0x3000) as u32).unwrap_or('x'))
                .collect()
        }

        fn number(&mut self) -> u64 {
            match self.rng.below(6) {
                0 => 0,
                1 => 1,
                2 => self.rng.below(100_000),
                3 => (-(self.rng.below(1000) as i64) - 1) as u64,
                4 => self
                    .rng
                    .pick(&[i32::MAX as u64, i32::MIN as i64 as u64, u64::MAX, i64::MIN as u64]),
                _ => self.rng.next(),
            }
        }

        fn float(&mut self) -> f64 {
            let any = f64::from_bits(self.rng.next());
            self.rng
                .pick(&[0.0, 0.1, -2.5, 1e300, 1e-7, f64::NAN, f64::INFINITY, 3.0, any])
        }

        fn key(out: &mut Vec<u8>, number: i32, wire_type: u64) {
            prost::encoding::encode_varint(((number as u64) << 3) | wire_type, out);
        }

        fn delimited(out: &mut Vec<u8>, number: i32, bytes: &[u8]) {
            Self::key(out, number, 2);
            prost::encoding::encode_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }

        /// A random message of type `name` (`.rkube.core.v1.Pod`), `depth` levels down.
        fn message(&mut self, name: &str, depth: usize) -> Vec<u8> {
            let mut out = Vec::new();
            let Some(m) = self.messages.get(name).cloned() else {
                return out;
            };
            let map_entry = m.options.as_ref().is_some_and(|o| o.map_entry());
            for f in &m.field {
                let chance = match depth {
                    _ if map_entry => 95,
                    0..=3 => 70,
                    4..=7 => 40,
                    8..=10 => 10,
                    _ => 0,
                };
                if !self.rng.percent(chance) {
                    continue;
                }
                let count = if f.label() == Label::Repeated {
                    self.rng.below(4)
                } else {
                    1
                };
                for _ in 0..count {
                    self.field(f, depth, &mut out);
                }
            }
            out
        }

        fn field(&mut self, f: &prost_types::FieldDescriptorProto, depth: usize, out: &mut Vec<u8>) {
            let n = f.number();
            match f.r#type() {
                Type::Message => {
                    let inner = self.message(f.type_name(), depth + 1);
                    Self::delimited(out, n, &inner);
                }
                Type::String => {
                    let text = self.text();
                    Self::delimited(out, n, text.as_bytes());
                }
                Type::Bytes => {
                    let bytes = if self.rng.percent(50) {
                        self.rng.pick(TEXTS).as_bytes().to_vec()
                    } else {
                        (0..self.rng.below(8)).map(|_| self.rng.next() as u8).collect()
                    };
                    Self::delimited(out, n, &bytes);
                }
                Type::Bool => {
                    Self::key(out, n, 0);
                    prost::encoding::encode_varint(self.rng.below(2), out);
                }
                Type::Enum => {
                    let known = self.enums.get(f.type_name()).cloned().unwrap_or_default();
                    let value = if known.is_empty() || self.rng.percent(3) {
                        self.rng.below(50) as i32
                    } else {
                        self.rng.pick(&known)
                    };
                    Self::key(out, n, 0);
                    prost::encoding::encode_varint(value as i64 as u64, out);
                }
                Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                    Self::key(out, n, 0);
                    let v = self.number();
                    prost::encoding::encode_varint(v, out);
                }
                Type::Sint32 | Type::Sint64 => {
                    Self::key(out, n, 0);
                    let v = self.number() as i64;
                    prost::encoding::encode_varint(((v << 1) ^ (v >> 63)) as u64, out);
                }
                Type::Fixed32 | Type::Sfixed32 | Type::Float => {
                    Self::key(out, n, 5);
                    let bits = if f.r#type() == Type::Float {
                        (self.float() as f32).to_bits()
                    } else {
                        self.number() as u32
                    };
                    out.extend_from_slice(&bits.to_le_bytes());
                }
                Type::Fixed64 | Type::Sfixed64 | Type::Double => {
                    Self::key(out, n, 1);
                    let bits = if f.r#type() == Type::Double {
                        self.float().to_bits()
                    } else {
                        self.number()
                    };
                    out.extend_from_slice(&bits.to_le_bytes());
                }
                Type::Group => {}
            }
        }

        fn object(&mut self, info: &ResourceInfo) -> Any {
            let name = format!(".{}", info.type_url.trim_start_matches("type.googleapis.com/"));
            assert!(self.messages.contains_key(&name), "no descriptor for {name}");
            Any {
                type_url: info.type_url.to_string(),
                value: self.message(&name, 0),
            }
        }
    }

    #[test]
    fn random_objects_of_every_kind_are_written_as_the_value_path_writes_them() {
        let cases: usize = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(150);
        let mut generator = Generator::new(15);
        let (mut written, mut refused, mut zero_filled) = (0, 0, 0);
        for info in KINDS {
            let mut good = Vec::new();
            for _ in 0..cases {
                let any = generator.object(info);
                let old = through_value(info, &any);
                let new = direct(info, &any);
                match (&old, &new) {
                    (Some(old), Some(new)) => {
                        assert!(
                            old == new,
                            "{} differs:\nValue path: {}\nencoder:    {}",
                            info.kind,
                            String::from_utf8_lossy(old),
                            String::from_utf8_lossy(new)
                        );
                        written += 1;
                        let filled = br#""restartCount":0"#;
                        zero_filled += usize::from(new.windows(filled.len()).any(|w| w == filled));
                        good.push((any, new.clone()));
                    }
                    (None, None) => refused += 1,
                    _ => panic!(
                        "{}: one path wrote JSON, the other refused: Value path {:?}, encoder {:?}",
                        info.kind,
                        old.map(|o| String::from_utf8_lossy(&o).into_owned()),
                        new.map(|n| String::from_utf8_lossy(&n).into_owned())
                    ),
                }
            }
            // one encoder over many objects, as a list uses it: nothing carries over
            let items: Vec<Any> = good.iter().map(|(any, _)| any.clone()).collect();
            let batch = JsonCache::new(0).write_all(info, &items, false).unwrap();
            let singles = good
                .iter()
                .map(|(_, json)| &json[..])
                .collect::<Vec<_>>()
                .join(&b","[..]);
            assert!(
                batch == singles,
                "{}: a batch differs from its objects one by one",
                info.kind
            );
        }
        assert!(
            written > KINDS.len() * cases / 2,
            "only {written} objects were written ({refused} refused)"
        );
        assert!(
            zero_filled > 0,
            "no random pod needed a zero value ({written} written, {refused} refused)"
        );
    }

    #[test]
    fn fixtures_and_empty_objects_of_every_kind_are_written_as_the_value_path_writes_them() {
        let mut objects: Vec<Any> = KINDS
            .iter()
            .map(|info| Any {
                type_url: info.type_url.to_string(),
                value: Vec::new(),
            })
            .collect();
        for text in [
            include_str!("../../../../deploy/examples/web.yaml"),
            include_str!("../../../../deploy/examples/ingress.yaml"),
            include_str!("../../../../deploy/examples/local-storageclass.yaml"),
        ] {
            let decoded = rkube_api::codec::decode_manifests(text, "example").unwrap();
            objects.extend(decoded.into_iter().map(|o| o.any));
        }
        for any in &objects {
            let info = ResourceInfo::by_type_url(&any.type_url).unwrap();
            let old = through_value(info, any).unwrap();
            assert_eq!(
                String::from_utf8(direct(info, any).unwrap()).unwrap(),
                String::from_utf8(old).unwrap(),
                "{}",
                info.kind
            );
        }
    }
}
