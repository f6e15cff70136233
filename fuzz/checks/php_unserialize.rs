//! PHP `unserialize` (`wire::php`): sessions and non-scalar bodies from workers and
//! GatewayClients, query replies from gateways. Also `serialize` and `json_encode` of
//! whatever it accepts, and of values built from the input.

use gatewayworker::internals::wire::php::{self, Array, JsonFlags, Key, MAX_DEPTH, Value};
use serde_json::Value as Json;

use super::input::Input;

pub fn check(data: &[u8]) {
    match php::unserialize(data) {
        Ok(v) => accepted(data, &v),
        Err(e) => {
            assert!(e.offset <= data.len(), "error offset {} past {} bytes", e.offset, data.len());
            assert!(!e.reason.is_empty());
        }
    }
    let built = build(&mut Input::new(data), 0);
    round_trip(&built);
    json(&built);
}

fn accepted(data: &[u8], v: &Value) {
    assert!(depth(v) <= MAX_DEPTH, "nesting {} accepted", depth(v));
    canonical_keys(v);
    round_trip(v);
    // Every proper prefix of an accepted input is refused (the grammar is self-delimiting).
    for cut in [data.len() - 1, data.len() / 2] {
        assert!(php::unserialize(&data[..cut]).is_err(), "prefix of {cut} bytes accepted");
    }
    json(v);
}

/// `serialize` then `unserialize` gives the value back, and serializing that gives the same
/// bytes. Returns the serialization.
pub fn round_trip(v: &Value) -> Vec<u8> {
    let s = php::serialize(v);
    let back =
        php::unserialize(&s).unwrap_or_else(|e| panic!("{e} in our own {:?}", String::from_utf8_lossy(&s)));
    assert!(same(v, &back), "{v:?} came back as {back:?}");
    assert_eq!(php::serialize(&back), s);
    if let Value::Array(a) = v {
        assert_eq!(php::serialize_array(a), s);
    }
    s
}

/// Equality where floats compare by bits and every NaN equals every NaN (`NAN` in PHP).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}

/// Array nesting (a scalar is 0, `a:0:{}` is 1).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Keys are as PHP normalises them (no `Key::Str("42")`) and unique.
pub fn canonical_keys(v: &Value) {
    let Value::Array(a) = v else { return };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in a {
        if let Key::Str(s) = k {
            assert_eq!(&Key::from_bytes(s), k, "string key {:?} is an integer", String::from_utf8_lossy(s));
        }
        assert!(seen.insert(k.clone()), "key {k:?} twice");
        canonical_keys(v);
    }
}

/// What `json_encode` returns is valid JSON standing for the value (serde_json checks the
/// syntax; strings, integers, keys and the list/object choice are compared).
pub fn json(v: &Value) {
    for flags in [JsonFlags::default(), JsonFlags::UNESCAPED_UNICODE] {
        let Some(text) = php::json_encode_with(v, flags) else { continue };
        if depth(v) >= 100 {
            continue; // serde_json's own recursion limit is 128
        }
        let parsed: Json = serde_json::from_slice(&text).unwrap_or_else(|e| {
            panic!("json_encode gave invalid JSON ({e}): {:?}", String::from_utf8_lossy(&text))
        });
        if !flags.unescaped_unicode {
            assert!(text.is_ascii(), "default json_encode is ASCII");
        }
        json_matches(v, &parsed);
        if let Value::Float(f) = v {
            let digits = std::str::from_utf8(&text).expect("ASCII");
            assert_eq!(digits.parse::<f64>().ok(), Some(*f), "float {f:?} as {digits}");
        }
    }
}

fn json_matches(v: &Value, j: &Json) {
    match (v, j) {
        (Value::Null, Json::Null) => {}
        (Value::Bool(a), Json::Bool(b)) => assert_eq!(a, b),
        (Value::Int(a), Json::Number(b)) => assert_eq!(Some(*a), b.as_i64()),
        (Value::Float(a), Json::Number(b)) => {
            // serde_json may round the last bits (without its `float_roundtrip` feature): a
            // relative 1e-15, or one unit in the last place for a subnormal, where the
            // relative bound is smaller than one unit. `json` checks the exact digits of a
            // float on its own.
            let b = b.as_f64().unwrap_or(f64::NAN);
            let ulps = (a.to_bits() as i64).wrapping_sub(b.to_bits() as i64).unsigned_abs();
            assert!((a - b).abs() <= a.abs() * 1e-15 || ulps <= 1, "float {a} as {b} in JSON");
        }
        (Value::Str(a), Json::String(b)) => assert_eq!(a, b.as_bytes()),
        (Value::Array(a), Json::Array(b)) => {
            assert!(a.is_list());
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).for_each(|((_, v), j)| json_matches(v, j));
        }
        (Value::Array(a), Json::Object(o)) => {
            assert!(!a.is_list());
            assert_eq!(a.len(), o.len());
            for (k, v) in a {
                let name = String::from_utf8(k.to_bytes()).expect("json_encode refuses non-UTF-8 keys");
                json_matches(v, &o[&name]);
            }
        }
        _ => panic!("{v:?} encoded as {j}"),
    }
}

/// A value from fuzz input, nested at most 8 deep, with any float bits and any key bytes
/// (normalised as PHP does).
pub fn build(input: &mut Input, depth: usize) -> Value {
    match input.byte() % 8 {
        0 => Value::Null,
        1 => Value::Bool(input.byte() & 1 == 1),
        2 => Value::Int(input.u64() as i64),
        3 => Value::Float(f64::from_bits(input.u64())),
        4 => Value::Float(f64::from(input.u16() as i16) / 8.0),
        5 | 6 if depth < 8 => {
            let n = input.byte() % 12;
            let mut a = Array::new();
            for _ in 0..n {
                let k = match input.byte() % 4 {
                    0 => Key::Int(input.u64() as i64),
                    1 => Key::Int(i64::from(input.byte())),
                    2 => {
                        a.push(build(input, depth + 1));
                        continue;
                    }
                    _ => Key::from_bytes(input.short_slice()),
                };
                a.insert(k, build(input, depth + 1));
            }
            Value::Array(a)
        }
        _ => Value::Str(input.short_slice().to_vec()),
    }
}
