//! Shared helpers for the compatibility tests over the PHP captures in `tests/compat/`
//! (see `tests/compat/README.md`): loading the JSON Lines files, hex, and the PHP Value
//! Notation (PVN) used by every `*_php` field.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use gatewayworker::internals::wire::php::{Array, Key, Value};
use serde_json::Value as Json;

/// Every case of `tests/compat/<file>`, one JSON object per non-empty line.
pub fn load(file: &str) -> Vec<Json> {
    let path = format!("{}/tests/compat/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    lines.map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}:{}: {e}", i + 1))).collect()
}

/// `case@gw_version`, unique per file.
pub fn case_name(c: &Json) -> String {
    format!("{}@{}", c["case"].as_str().unwrap_or("?"), c["gw_version"].as_str().unwrap_or("?"))
}

/// Lowercase (or uppercase) hex to bytes; panics on anything else.
pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s}: {e}")))
        .collect()
}

/// Bytes to lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// A JSON string field as bytes, or `{"bytes_hex": ...}` decoded.
fn pvn_bytes(j: &Json) -> Option<Vec<u8>> {
    match j {
        Json::String(s) => Some(s.as_bytes().to_vec()),
        Json::Object(o) if o.len() == 1 => o.get("bytes_hex")?.as_str().map(hex),
        _ => None,
    }
}

/// The float a PVN `{"float": "<text between d: and ;>"}` stands for.
fn pvn_float(text: &str) -> f64 {
    match text {
        "INF" => f64::INFINITY,
        "-INF" => f64::NEG_INFINITY,
        "NAN" => f64::NAN,
        t => t.parse().unwrap_or_else(|e| panic!("PVN float {t:?}: {e}")),
    }
}

fn pvn_key(j: &Json) -> Key {
    match j {
        Json::Number(n) => Key::Int(n.as_i64().unwrap_or_else(|| panic!("PVN key {n}"))),
        // PHP already normalised keys: a string key stays a string key.
        other => Key::Str(pvn_bytes(other).unwrap_or_else(|| panic!("PVN key {other}"))),
    }
}

/// Convert PVN (README "PVN — PHP value notation") to a PHP value; panics on bad notation.
pub fn pvn_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Int(n.as_i64().unwrap_or_else(|| panic!("PVN int {n}"))),
        Json::String(s) => Value::from(s.as_str()),
        Json::Object(o) => {
            if let Some(f) = o.get("float").and_then(Json::as_str) {
                return Value::Float(pvn_float(f));
            }
            if let Some(pairs) = o.get("array").and_then(Json::as_array) {
                return Value::Array(pairs.iter().map(pvn_pair).collect());
            }
            Value::Str(pvn_bytes(j).unwrap_or_else(|| panic!("PVN object {j}")))
        }
        Json::Array(_) => panic!("PVN has no bare JSON arrays: {j}"),
    }
}

fn pvn_pair(p: &Json) -> (Key, Value) {
    match p.as_array().map(Vec::as_slice) {
        Some([k, v]) => (pvn_key(k), pvn_to_value(v)),
        _ => panic!("PVN array entry {p}"),
    }
}

/// A PHP value in PVN (for failure messages).
pub fn value_to_pvn(v: &Value) -> Json {
    let bytes = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) if !b.contains(&0) => Json::from(s),
        _ => serde_json::json!({ "bytes_hex": to_hex(b) }),
    };
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::from(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(_) => {
            // serialize() gives `d:<text>;`
            let text = gatewayworker::internals::wire::php::serialize(v);
            let text = String::from_utf8_lossy(&text[2..text.len() - 1]).into_owned();
            serde_json::json!({ "float": text })
        }
        Value::Str(s) => bytes(s),
        Value::Array(a) => {
            let pairs = a.iter().map(|(k, v)| {
                let k = match k {
                    Key::Int(i) => Json::from(*i),
                    Key::Str(s) => bytes(s),
                };
                Json::Array(vec![k, value_to_pvn(v)])
            });
            serde_json::json!({ "array": pairs.collect::<Vec<_>>() })
        }
    }
}

/// PHP `===`, with floats compared by bits (so `-0` differs from `0`, and NAN equals NAN).
pub fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => arrays_identical(x, y),
        _ => a == b,
    }
}

fn arrays_identical(x: &Array, y: &Array) -> bool {
    x.len() == y.len() && x.iter().zip(y.iter()).all(|((kx, vx), (ky, vy))| kx == ky && identical(vx, vy))
}

/// Counts checks and collects failures (by case name) so one run reports them all.
#[derive(Default)]
pub struct Report {
    pub checked: usize,
    pub failures: Vec<String>,
}

impl Report {
    /// Record one check of `case`; `detail` explains a failure.
    pub fn check(&mut self, case: &str, ok: bool, detail: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.failures.push(format!("{case}: {}", detail()));
        }
    }

    /// Record a failure without a check.
    pub fn fail(&mut self, case: &str, detail: String) {
        self.failures.push(format!("{case}: {detail}"));
    }

    /// Panic listing every failure, or when fewer than `floor` checks ran (a filter that
    /// skipped everything must not pass).
    pub fn finish(self, what: &str, floor: usize) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} checks failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
        assert!(self.checked >= floor, "{what}: only {} checks ran (floor {floor})", self.checked);
        eprintln!("{what}: {} checks passed", self.checked);
    }
}
