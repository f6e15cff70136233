//! PHP `json_encode` of [`Value`]s (array bodies sent to websocket clients).

use super::serial::push_float;
use super::{Array, Value};

/// The `json_encode` flags this project needs; `Default` is PHP's default (no flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonFlags {
    /// `JSON_UNESCAPED_UNICODE`: non-ASCII as raw UTF-8 (U+2028/U+2029 still escaped).
    pub unescaped_unicode: bool,
    /// `JSON_UNESCAPED_SLASHES`: `/` not escaped.
    pub unescaped_slashes: bool,
}

impl JsonFlags {
    /// What workerman 5's websocket encoder uses for non-scalar messages.
    pub const UNESCAPED_UNICODE: JsonFlags = JsonFlags { unescaped_unicode: true, unescaped_slashes: false };
}

/// PHP's default `json_encode` depth limit.
const JSON_MAX_DEPTH: usize = 512;

/// PHP `json_encode($v)` with default flags: `/` as `\/`, non-ASCII as `\uXXXX` (surrogate
/// pairs, lowercase hex), lists as JSON arrays, other arrays as objects, floats as PHP prints
/// them (`1.0e+25`, integral floats without `.0`). `None` where PHP returns false: invalid
/// UTF-8 in a string or key, INF/NAN, nesting deeper than 512.
pub fn json_encode(v: &Value) -> Option<Vec<u8>> {
    json_encode_with(v, JsonFlags::default())
}

/// [`json_encode`] with flags (e.g. [`JsonFlags::UNESCAPED_UNICODE`]).
pub fn json_encode_with(v: &Value, flags: JsonFlags) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    json_value(v, flags, 0, &mut out)?;
    Some(out)
}

fn json_value(v: &Value, flags: JsonFlags, depth: usize, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) if f.is_finite() => push_float(*f, b'e', out),
        Value::Float(_) => return None,
        Value::Str(s) => json_string(s, flags, out)?,
        Value::Array(a) => json_array(a, flags, depth + 1, out)?,
    }
    Some(())
}

fn json_array(a: &Array, flags: JsonFlags, depth: usize, out: &mut Vec<u8>) -> Option<()> {
    if depth > JSON_MAX_DEPTH {
        return None;
    }
    let list = a.is_list();
    out.push(if list { b'[' } else { b'{' });
    for (i, (k, v)) in a.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if !list {
            json_string(&k.to_bytes(), flags, out)?;
            out.push(b':');
        }
        json_value(v, flags, depth, out)?;
    }
    out.push(if list { b']' } else { b'}' });
    Some(())
}

/// A JSON string as PHP escapes it; `None` for invalid UTF-8.
fn json_string(s: &[u8], flags: JsonFlags, out: &mut Vec<u8>) -> Option<()> {
    let s = std::str::from_utf8(s).ok()?;
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if !flags.unescaped_slashes => out.extend_from_slice(b"\\/"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => push_u_escape(c as u16, out),
            c if c.is_ascii() => out.push(c as u8),
            '\u{2028}' | '\u{2029}' => push_u_escape(c as u16, out),
            c if flags.unescaped_unicode => {
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            c => c.encode_utf16(&mut [0; 2]).iter().for_each(|u| push_u_escape(*u, out)),
        }
    }
    out.push(b'"');
    Some(())
}

fn push_u_escape(u: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::php::build::{arr, k, s};
    use crate::wire::php::{Array, Key};

    #[test]
    fn json_forms() {
        let j = |v: &Value| json_encode(v).map(|b| String::from_utf8(b).unwrap());
        let v = arr(vec![
            (k("a/b"), s("ü ✓ 😀 \u{2028}")),
            (k("c"), arr(vec![(Key::Int(0), Value::Int(1)), (Key::Int(1), Value::Float(1e25))])),
            (k("d"), arr(vec![(Key::Int(1), Value::Float(2.0)), (Key::Int(0), Value::Null)])),
            (k("e"), Value::Array(Array::new())),
            (k("f"), s("\"\\\u{8}\u{c}\n\r\t\u{1f}\u{7f}<&'")),
            (Key::Int(7), Value::Bool(false)),
        ]);
        let want = concat!(
            r#"{"a\/b":"\u00fc \u2713 \ud83d\ude00 \u2028","c":[1,1.0e+25],"d":{"1":2,"0":null},"#,
            r#""e":[],"f":"\"\\\b\f\n\r\t\u001f"#,
            "\u{7f}",
            r#"<&'","7":false}"#
        );
        assert_eq!(j(&v).unwrap(), want);
        let raw =
            json_encode_with(&arr(vec![(k("u"), s("ü/\u{2029}"))]), JsonFlags::UNESCAPED_UNICODE).unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "{\"u\":\"ü\\/\\u2029\"}");
        assert_eq!(j(&Value::Str(vec![0xff])), None);
        assert_eq!(j(&arr(vec![(Key::Str(vec![0xc3]), Value::Null)])), None);
        assert_eq!(j(&Value::Float(f64::NAN)), None);
        assert_eq!(j(&Value::Float(-0.0)).as_deref(), Some("-0"));
        let mut deep = Value::Null;
        for _ in 0..JSON_MAX_DEPTH {
            deep = arr(vec![(Key::Int(0), deep)]);
        }
        assert!(j(&deep).is_some());
        assert_eq!(j(&arr(vec![(Key::Int(0), deep)])), None);
    }
}
