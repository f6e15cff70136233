//! PHP values as they travel between GatewayWorker processes: sessions, non-scalar packet
//! bodies and query replies are PHP-`serialize()`d (`docs/protocol.md` §5), and array bodies
//! reach websocket clients through `json_encode`.
//!
//! The model is PHP's: scalars, byte strings, and ordered arrays whose keys are integers or
//! byte strings after PHP's key normalisation (`"42"` is the integer key 42). Serialization is
//! byte-exact with PHP 8.2 (`serialize_precision = -1`); unserialization behaves like
//! `unserialize($b, ['allowed_classes' => false])` except that objects, references and
//! trailing bytes are refused, and depth and sizes are bounded for hostile input.

mod json;
mod serial;

use std::collections::HashMap;
use std::fmt;

pub use json::{JsonFlags, json_encode, json_encode_with};
pub use serial::{serialize, serialize_array, unserialize};
// Used by the integration tests and fuzz targets only.
#[cfg(feature = "internals")]
pub use serial::{MAX_DEPTH, PhpError, serialize_into};

/// A PHP value as it travels in sessions, non-scalar bodies and query replies.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Vec<u8>),
    Array(Array),
}

/// A PHP array key after PHP's normalisation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Str(Vec<u8>),
}

/// Arrays longer than this keep a hash index next to the ordered entries.
const INDEX_FROM: usize = 8;

/// An ordered PHP array (insertion order kept, keys unique).
///
/// Equality compares the entries in order, like PHP's `===`; the next free integer index is
/// not part of it (PHP does not compare it either).
#[derive(Clone, Default)]
pub struct Array {
    entries: Vec<(Key, Value)>,
    /// Position of every key; present exactly when `entries.len() > INDEX_FROM`. Boxed to
    /// keep `Value` small (most arrays are short and never have one).
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Key, usize>>>,
    /// PHP's `nNextFreeElement` (PHP 8.2 rules: never below 0, never lowered by removals).
    next_free: i64,
}

impl Key {
    /// PHP key normalisation: a canonical decimal integer string ("42", "-7"; not "042", "+1",
    /// "-0", " 1", nor anything overflowing i64) becomes `Key::Int`, anything else `Key::Str`.
    pub fn from_bytes(b: &[u8]) -> Key {
        match canonical_int(b) {
            Some(i) => Key::Int(i),
            None => Key::Str(b.to_vec()),
        }
    }

    /// Same as [`Key::from_bytes`].
    pub fn from_text(s: &str) -> Key {
        Key::from_bytes(s.as_bytes())
    }

    /// The key as PHP would print it (Int as decimal).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Key::Int(i) => i.to_string().into_bytes(),
            Key::Str(s) => s.clone(),
        }
    }
}

/// The integer a canonical decimal string stands for (PHP's `ZEND_HANDLE_NUMERIC_STR`).
fn canonical_int(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
        && b != b"-0";
    if !canonical {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl From<i64> for Key {
    fn from(i: i64) -> Key {
        Key::Int(i)
    }
}

impl From<&str> for Key {
    /// Normalised as PHP does (`"42"` becomes `Key::Int(42)`).
    fn from(s: &str) -> Key {
        Key::from_text(s)
    }
}

impl Array {
    pub fn new() -> Array {
        Array::default()
    }

    /// An empty array with room for `n` entries.
    pub fn with_capacity(n: usize) -> Array {
        Array { entries: Vec::with_capacity(n), ..Array::default() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, k: &Key) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(k).copied(),
            None => self.entries.iter().position(|(ek, _)| ek == k),
        }
    }

    pub fn get(&self, k: &Key) -> Option<&Value> {
        self.position(k).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, k: &Key) -> Option<&mut Value> {
        self.position(k).map(|i| &mut self.entries[i].1)
    }

    /// Insert or replace (replacing keeps the original position, as PHP does).
    pub fn insert(&mut self, k: Key, v: Value) {
        if let Some(i) = self.position(&k) {
            self.entries[i].1 = v;
            return;
        }
        if let Key::Int(i) = k
            && i >= self.next_free
        {
            self.next_free = i.saturating_add(1);
        }
        let pos = self.entries.len();
        if let Some(index) = &mut self.index {
            index.insert(k.clone(), pos);
        }
        self.entries.push((k, v));
        if self.index.is_none() && self.entries.len() > INDEX_FROM {
            self.rebuild_index();
        }
    }

    fn rebuild_index(&mut self) {
        let index = self.entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        self.index = Some(Box::new(index));
    }

    /// `$a[] = v`: key = next free integer index (PHP 8.2: one past the largest integer key
    /// ever inserted, at least 0). Like PHP, does nothing when that index is taken because
    /// the largest key is `i64::MAX`.
    pub fn push(&mut self, v: Value) {
        let k = Key::Int(self.next_free);
        if self.position(&k).is_none() {
            self.insert(k, v);
        }
    }

    /// Remove a key, returning its value. O(len).
    pub fn remove(&mut self, k: &Key) -> Option<Value> {
        let pos = self.position(k)?;
        let (_, v) = self.entries.remove(pos);
        if self.entries.len() <= INDEX_FROM {
            self.index = None;
        } else if let Some(index) = &mut self.index {
            index.remove(k);
            index.values_mut().filter(|i| **i > pos).for_each(|i| *i -= 1);
        }
        Some(v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// True when keys are exactly 0..len in order (a JSON list in json_encode).
    pub fn is_list(&self) -> bool {
        self.entries.iter().enumerate().all(|(i, (k, _))| *k == Key::Int(i as i64))
    }
}

impl PartialEq for Array {
    fn eq(&self, other: &Array) -> bool {
        self.entries == other.entries
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(Key, Value)> for Array {
    /// Inserts in order; a repeated key replaces the earlier value in its position.
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Array {
        let mut a = Array::new();
        iter.into_iter().for_each(|(k, v)| a.insert(k, v));
        a
    }
}

impl<'a> IntoIterator for &'a Array {
    type Item = (&'a Key, &'a Value);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (Key, Value)>, fn(&'a (Key, Value)) -> (&'a Key, &'a Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl Value {
    /// The bytes of a `Str` (no conversion of other types).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer of an `Int` (no conversion of other types).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_array_mut(&mut self) -> Option<&mut Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s.into_bytes())
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Str(b.to_vec())
    }
}

/// `Value` from the Rust type each variant holds.
macro_rules! value_from {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        }
    )*};
}

value_from!(Vec<u8> => Str, i64 => Int, f64 => Float, bool => Bool, Array => Array);

impl From<Key> for Value {
    /// The key as PHP hands it out in `foreach`: an int or a string.
    fn from(k: Key) -> Value {
        match k {
            Key::Int(i) => Value::Int(i),
            Key::Str(s) => Value::Str(s),
        }
    }
}

/// PHP `array_replace_recursive($base, $replacement)` in place (the CMD_UPDATE_SESSION
/// merge): for each key of `replacement`, if both values are arrays recurse, else replace the
/// value (keeping its position) or append the key.
pub fn array_replace_recursive(base: &mut Array, replacement: &Array) {
    for (k, rv) in replacement {
        if let (Some(Value::Array(b)), Value::Array(r)) = (base.get_mut(k), rv) {
            array_replace_recursive(b, r);
            continue;
        }
        base.insert(k.clone(), rv.clone());
    }
}

/// Short constructors for the tests of this module and its submodules.
#[cfg(test)]
mod build {
    use super::{Key, Value};

    pub fn arr(pairs: Vec<(Key, Value)>) -> Value {
        Value::Array(pairs.into_iter().collect())
    }

    pub fn s(t: &str) -> Value {
        Value::from(t)
    }

    pub fn k(t: &str) -> Key {
        Key::from_text(t)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{k, s};
    use super::*;

    #[test]
    fn key_normalisation() {
        assert_eq!(k("42"), Key::Int(42));
        assert_eq!(k("-7"), Key::Int(-7));
        assert_eq!(k("0"), Key::Int(0));
        assert_eq!(k("9223372036854775807"), Key::Int(i64::MAX));
        assert_eq!(k("-9223372036854775808"), Key::Int(i64::MIN));
        for t in [
            "042",
            "+1",
            "-0",
            " 1",
            "1 ",
            "",
            "-",
            "4.2",
            "1e3",
            "9223372036854775808",
            "-9223372036854775809",
            "0x1",
        ] {
            assert_eq!(k(t), Key::Str(t.as_bytes().to_vec()), "{t:?}");
        }
        assert_eq!(Key::Int(-5).to_bytes(), b"-5");
        // a string key "7" in serialized input becomes an integer key
        let v = unserialize(b"a:1:{s:1:\"7\";N;}").unwrap();
        assert_eq!(v.as_array().unwrap().keys().next(), Some(&Key::Int(7)));
    }

    #[test]
    fn array_order_push_remove() {
        let mut a = Array::new();
        a.insert(Key::Int(5), s("a"));
        a.insert(Key::Int(2), s("b"));
        a.insert(k("k"), s("c"));
        a.push(s("d"));
        assert_eq!(
            a.keys().cloned().collect::<Vec<_>>(),
            vec![Key::Int(5), Key::Int(2), k("k"), Key::Int(6)]
        );
        a.insert(Key::Int(2), s("B"));
        assert_eq!(a.iter().nth(1), Some((&Key::Int(2), &s("B"))));
        assert_eq!(a.remove(&Key::Int(6)), Some(s("d")));
        a.push(s("e")); // removal does not lower the next index
        assert_eq!(a.get(&Key::Int(7)), Some(&s("e")));
        let mut neg = Array::new();
        neg.insert(Key::Int(-5), s("x"));
        neg.push(s("y"));
        assert_eq!(neg.get(&Key::Int(0)), Some(&s("y")));
        let mut full = Array::new();
        full.insert(Key::Int(i64::MAX), s("x"));
        full.push(s("y"));
        assert_eq!(full.len(), 1);
        assert!(!a.is_list());
        let list: Array = (0..3).map(|i| (Key::Int(i), Value::Int(i))).collect();
        assert!(list.is_list() && Array::new().is_list());
    }

    #[test]
    fn indexed_array_stays_consistent() {
        let mut a = Array::new();
        for i in 0..40 {
            a.insert(k(&format!("k{i}")), Value::Int(i));
        }
        for i in (0..40).step_by(3) {
            assert_eq!(a.remove(&k(&format!("k{i}"))), Some(Value::Int(i)));
        }
        for i in 0..40 {
            let want = (i % 3 != 0).then_some(Value::Int(i));
            assert_eq!(a.get(&k(&format!("k{i}"))).cloned(), want);
        }
        a.insert(k("k1"), s("again"));
        assert_eq!(a.iter().next(), Some((&k("k1"), &s("again"))));
        let keys: Vec<Key> = a.keys().cloned().collect();
        for key in keys {
            a.remove(&key);
            assert!(a.get(&key).is_none());
        }
        assert!(a.is_empty());
    }

    #[test]
    fn replace_recursive() {
        let mut base = unserialize(b"a:3:{s:1:\"u\";a:2:{s:1:\"a\";i:1;s:1:\"b\";i:2;}s:1:\"l\";a:2:{i:0;i:1;i:1;i:2;}s:1:\"x\";a:0:{}}").unwrap();
        let rep =
            unserialize(b"a:3:{s:1:\"u\";a:1:{s:1:\"b\";i:3;}s:1:\"l\";a:1:{i:0;i:9;}s:1:\"x\";s:1:\"f\";}")
                .unwrap();
        array_replace_recursive(base.as_array_mut().unwrap(), rep.as_array().unwrap());
        let want = b"a:3:{s:1:\"u\";a:2:{s:1:\"a\";i:1;s:1:\"b\";i:3;}s:1:\"l\";a:2:{i:0;i:9;i:1;i:2;}s:1:\"x\";s:1:\"f\";}";
        assert_eq!(serialize(&base), want.to_vec());
    }
}
