//! PHP value compatibility against real PHP 8.2 output (`tests/compat/php_serialize.jsonl`):
//! `serialize` byte for byte, `unserialize` back to the same value, refusals, and the
//! `array_replace_recursive` session merge. Also `json_encode` against the JSON that real PHP
//! processes wrote in the other captures.

mod support;

use gatewayworker::internals::wire::php::{self, Array, JsonFlags, Key, Value};
use serde_json::Value as Json;
use support::{Report, case_name, hex, identical, pvn_to_value, to_hex, value_to_pvn};

/// `serialize(value) == hex` and `unserialize(hex) === value`.
fn check_value_case(r: &mut Report, name: &str, c: &Json) {
    let value = pvn_to_value(&c["decoded"]["value"]);
    let want = hex(c["hex"].as_str().unwrap_or_default());
    let got = php::serialize(&value);
    r.check(name, got == want, || format!("serialize gave {}", String::from_utf8_lossy(&got)));
    match php::unserialize(&want) {
        Ok(back) => {
            r.check(name, identical(&back, &value), || format!("unserialize gave {}", value_to_pvn(&back)))
        }
        Err(e) => r.fail(name, format!("unserialize refused: {e}")),
    }
}

/// Cases that show what must be refused.
fn check_refused_case(r: &mut Report, name: &str, c: &Json) {
    let bytes = hex(c["hex"].as_str().unwrap_or_default());
    let got = php::unserialize(&bytes);
    r.check(name, got.is_err(), || format!("accepted as {:?}", got));
}

/// Unserialize a `*_hex` field and compare it with the PVN next to it.
fn decode_field(r: &mut Report, name: &str, c: &Json, field: &str) -> Option<Array> {
    let bytes = hex(c[format!("{field}_hex")].as_str().unwrap_or_default());
    let want = pvn_to_value(&c["decoded"][field]);
    match php::unserialize(&bytes) {
        Ok(v) => {
            r.check(name, identical(&v, &want), || format!("{field}: got {}", value_to_pvn(&v)));
            v.as_array().cloned()
        }
        Err(e) => {
            r.fail(name, format!("{field}: unserialize refused: {e}"));
            None
        }
    }
}

/// `serialize(array_replace_recursive(before, partial)) == after_hex == hex`.
fn check_merge_case(r: &mut Report, name: &str, c: &Json) {
    let (Some(mut base), Some(partial)) =
        (decode_field(r, name, c, "before"), decode_field(r, name, c, "partial"))
    else {
        return r.fail(name, "before/partial are not arrays".into());
    };
    php::array_replace_recursive(&mut base, &partial);
    let got = php::serialize_array(&base);
    let after = hex(c["after_hex"].as_str().unwrap_or_default());
    r.check(name, got == after, || format!("merged to {}", String::from_utf8_lossy(&got)));
    r.check(name, after == hex(c["hex"].as_str().unwrap_or_default()), || "after_hex != hex".into());
    let want = pvn_to_value(&c["decoded"]["after"]);
    r.check(name, identical(&Value::Array(base), &want), || "merged value != decoded.after".into());
}

#[test]
fn php_serialize_captures() {
    let mut r = Report::default();
    let mut cases = 0;
    for c in support::load("php_serialize.jsonl") {
        let name = case_name(&c);
        cases += 1;
        match c["direction"].as_str().unwrap_or_default() {
            "value->serialize" => check_value_case(&mut r, &name, &c),
            "serialize->unserialize(refuse)" => check_refused_case(&mut r, &name, &c),
            "array_replace_recursive(before, partial)" => check_merge_case(&mut r, &name, &c),
            other => r.fail(&name, format!("unknown direction {other:?}")),
        }
    }
    assert!(cases >= 69, "only {cases} cases in php_serialize.jsonl");
    r.finish("php_serialize.jsonl", 170);
}

/// A PHP array from JSON the way PHP's `json_decode($s, true)` would build it, with the key
/// order given explicitly for objects (serde_json does not keep it).
fn json_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Int(n.as_i64().unwrap_or_else(|| panic!("number {n}"))),
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(
            items.iter().enumerate().map(|(i, v)| (Key::Int(i as i64), json_to_value(v))).collect(),
        ),
        Json::Object(o) => {
            Value::Array(o.iter().map(|(k, v)| (Key::from_text(k), json_to_value(v))).collect())
        }
    }
}

/// Register broadcasts are `json_encode(['event' => ..., 'addresses' => $list])`, where
/// `array_unique` can leave a non-list array that PHP encodes as an object.
#[test]
fn json_encode_matches_register_broadcasts() {
    let mut r = Report::default();
    for c in support::load("register.jsonl") {
        let name = case_name(&c);
        for field in ["decoded", "reply_decoded", "worker_received"] {
            let (Some(text), Some(lines)) = (c[field]["text"].as_str(), c[field]["lines_json"].as_array())
            else {
                continue;
            };
            for (line, j) in text.lines().zip(lines) {
                if j["event"] != "broadcast_addresses" {
                    continue;
                }
                let a: Array = [
                    (Key::from_text("event"), Value::from("broadcast_addresses")),
                    (Key::from_text("addresses"), json_to_value(&j["addresses"])),
                ]
                .into_iter()
                .collect();
                let got = php::json_encode(&Value::Array(a)).unwrap_or_default();
                r.check(&name, got == line.as_bytes(), || {
                    format!("{field}: json_encode gave {}", String::from_utf8_lossy(&got))
                });
            }
        }
    }
    r.finish("register.jsonl broadcasts", 15);
}

/// workerman 5 sends a non-scalar message to a websocket client as
/// `json_encode($data, JSON_UNESCAPED_UNICODE)`.
#[test]
fn json_encode_matches_websocket_array_bodies() {
    let mut r = Report::default();
    for c in support::load("gateway_effects.jsonl") {
        let name = case_name(&c);
        let d = &c["decoded"];
        if d["flag"].as_u64().is_none_or(|f| f & 1 != 0) || !d["body_php"].is_object() {
            continue;
        }
        let Some(json) = php::json_encode_with(&pvn_to_value(&d["body_php"]), JsonFlags::UNESCAPED_UNICODE)
        else {
            r.fail(&name, "json_encode failed".into());
            continue;
        };
        let clients = c["client_received"].as_array().into_iter().flatten();
        for frame in clients.filter_map(|cl| cl["frames"].as_array()).flatten() {
            let payload = frame["payload"].as_str().unwrap_or_default();
            r.check(&name, json == payload.as_bytes(), || {
                format!("json_encode gave {} ({})", String::from_utf8_lossy(&json), to_hex(&json))
            });
        }
    }
    r.finish("gateway_effects.jsonl array bodies", 1);
}
