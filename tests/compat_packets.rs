//! GatewayProtocol compatibility against bytes captured from real PHP GatewayWorker stacks
//! (`tests/compat/*.jsonl`): every packet decodes to the captured fields and re-encodes to the
//! same bytes, every query reply is `u32_be(len) ‖ serialize(payload)` with PHP's exact
//! serialization, and the register text lines are the JSON they claim to be.

mod support;

use gatewayworker::internals::wire::packet::{self, Packet, cmd};
use gatewayworker::internals::wire::php;
use serde_json::Value as Json;
use support::{Report, case_name, hex, identical, pvn_to_value, to_hex, value_to_pvn};

/// workerman's default `maxPackageSize`.
const MAX_PACKET: usize = 10_485_760;

/// The capture files holding GatewayProtocol packets.
const PACKET_FILES: [&str; 4] =
    ["gateway_to_worker.jsonl", "worker_to_gateway.jsonl", "queries.jsonl", "gateway_effects.jsonl"];

/// Where in a case a check is, for failure messages.
struct At<'a> {
    case: &'a str,
    field: String,
}

impl At<'_> {
    fn name(&self) -> String {
        format!("{} [{}]", self.case, self.field)
    }
}

/// Split `bytes` into whole packets (each with its raw bytes).
fn split(bytes: &[u8]) -> Result<Vec<(Packet<'_>, &[u8])>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match packet::decode(rest, MAX_PACKET) {
            Ok(Some((p, n))) => {
                out.push((p, &rest[..n]));
                rest = &rest[n..];
            }
            Ok(None) => {
                return Err(format!("{} trailing bytes are not a whole packet", rest.len()));
            }
            Err(e) => return Err(format!("decode error: {e}")),
        }
    }
    Ok(out)
}

/// The capture's `cmd_name` for a code, from the crate's constants.
fn cmd_name(code: u8) -> &'static str {
    let names: [(u8, &str); 30] = [
        (cmd::ON_CONNECT, "CMD_ON_CONNECT"),
        (cmd::ON_MESSAGE, "CMD_ON_MESSAGE"),
        (cmd::ON_CLOSE, "CMD_ON_CLOSE"),
        (cmd::SEND_TO_ONE, "CMD_SEND_TO_ONE"),
        (cmd::SEND_TO_ALL, "CMD_SEND_TO_ALL"),
        (cmd::KICK, "CMD_KICK"),
        (cmd::DESTROY, "CMD_DESTROY"),
        (cmd::UPDATE_SESSION, "CMD_UPDATE_SESSION"),
        (cmd::GET_ALL_CLIENT_SESSIONS, "CMD_GET_ALL_CLIENT_SESSIONS"),
        (cmd::IS_ONLINE, "CMD_IS_ONLINE"),
        (cmd::BIND_UID, "CMD_BIND_UID"),
        (cmd::UNBIND_UID, "CMD_UNBIND_UID"),
        (cmd::SEND_TO_UID, "CMD_SEND_TO_UID"),
        (cmd::GET_CLIENT_ID_BY_UID, "CMD_GET_CLIENT_ID_BY_UID"),
        (cmd::BATCH_GET_CLIENT_ID_BY_UID, "CMD_BATCH_GET_CLIENT_ID_BY_UID"),
        (cmd::JOIN_GROUP, "CMD_JOIN_GROUP"),
        (cmd::LEAVE_GROUP, "CMD_LEAVE_GROUP"),
        (cmd::SEND_TO_GROUP, "CMD_SEND_TO_GROUP"),
        (cmd::GET_CLIENT_SESSIONS_BY_GROUP, "CMD_GET_CLIENT_SESSIONS_BY_GROUP"),
        (cmd::GET_CLIENT_COUNT_BY_GROUP, "CMD_GET_CLIENT_COUNT_BY_GROUP"),
        (cmd::SELECT, "CMD_SELECT"),
        (cmd::GET_GROUP_ID_LIST, "CMD_GET_GROUP_ID_LIST"),
        (cmd::UNGROUP, "CMD_UNGROUP"),
        (cmd::BATCH_GET_CLIENT_COUNT_BY_GROUP, "CMD_BATCH_GET_CLIENT_COUNT_BY_GROUP"),
        (cmd::WORKER_CONNECT, "CMD_WORKER_CONNECT"),
        (cmd::PING, "CMD_PING"),
        (cmd::GATEWAY_CLIENT_CONNECT, "CMD_GATEWAY_CLIENT_CONNECT"),
        (cmd::GET_SESSION_BY_CLIENT_ID, "CMD_GET_SESSION_BY_CLIENT_ID"),
        (cmd::SET_SESSION, "CMD_SET_SESSION"),
        (cmd::ON_WEBSOCKET_CONNECT, "CMD_ON_WEBSOCKET_CONNECT"),
    ];
    match names.iter().find(|(c, _)| *c == code) {
        Some((_, name)) => name,
        None => "UNKNOWN",
    }
}

fn dotted(ip: u32) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

/// A bytes field given as text (`<name>`) or as hex (`<name>_hex`).
fn bytes_field(d: &Json, name: &str) -> Option<Vec<u8>> {
    if let Some(s) = d[name].as_str() {
        return Some(s.as_bytes().to_vec());
    }
    d[format!("{name}_hex")].as_str().map(hex)
}

/// `unserialize(bytes) === pvn` and `serialize` gives `bytes` back exactly.
fn check_php(r: &mut Report, at: &At, what: &str, bytes: &[u8], pvn: &Json) {
    let want = pvn_to_value(pvn);
    match php::unserialize(bytes) {
        Ok(v) => {
            r.check(&at.name(), identical(&v, &want), || {
                format!("{what}: unserialized to {}, capture says {pvn}", value_to_pvn(&v))
            });
            let again = php::serialize(&v);
            r.check(&at.name(), again == bytes, || {
                format!("{what}: re-serialized to {}", String::from_utf8_lossy(&again))
            });
        }
        Err(e) => r.fail(&at.name(), format!("{what}: unserialize refused: {e}")),
    }
}

/// Compare one packet with its `decoded` record. `body` is what the record calls the body
/// (the packet's own body except in the pipelined quirk, see `check_described`).
fn check_fields(r: &mut Report, at: &At, p: &Packet, raw: &[u8], body: &[u8], d: &Json) {
    let h = &p.header;
    let numbers = [
        ("pack_len", raw.len() as u64),
        ("cmd", h.cmd.into()),
        ("local_port", h.local_port.into()),
        ("client_port", h.client_port.into()),
        ("connection_id", h.connection_id.into()),
        ("flag", h.flag.into()),
        ("gateway_port", h.gateway_port.into()),
        ("ext_len", p.ext.len() as u64),
        ("body_len", body.len() as u64),
    ];
    for (key, got) in numbers {
        r.check(&at.name(), d[key].as_u64() == Some(got), || {
            format!("{key}: decoded {got}, capture says {}", d[key])
        });
    }
    let texts = [
        ("cmd_name", cmd_name(h.cmd).to_string()),
        ("local_ip", dotted(h.local_ip)),
        ("client_ip", dotted(h.client_ip)),
    ];
    for (key, got) in texts {
        r.check(&at.name(), d[key].as_str() == Some(got.as_str()), || {
            format!("{key}: decoded {got}, capture says {}", d[key])
        });
    }
    check_payloads(r, at, p, body, d);
    check_client_id(r, at, p, d);
}

/// ext_data and body, raw and as PHP values / JSON where the capture decoded them.
fn check_payloads(r: &mut Report, at: &At, p: &Packet, body: &[u8], d: &Json) {
    for (name, got) in [("ext_data", p.ext), ("body", body)] {
        let want = bytes_field(d, name);
        r.check(&at.name(), want.as_deref() == Some(got), || {
            format!("{name}: decoded {}, capture says {:?}", to_hex(got), want.map(|w| to_hex(&w)))
        });
        if let Some(pvn) = d.get(format!("{name}_php")) {
            check_php(r, at, name, got, pvn);
        }
        if let Some(json) = d.get(format!("{name}_json")) {
            let parsed: Result<Json, _> = serde_json::from_slice(got);
            r.check(&at.name(), parsed.as_ref().ok() == Some(json), || {
                format!("{name}: JSON {parsed:?}, capture says {json}")
            });
        }
    }
    let serialized_body = p.header.flag & packet::flag::BODY_IS_SCALAR == 0;
    r.check(&at.name(), serialized_body == d.get("body_php").is_some(), || {
        format!("flag {} but body_php present: {}", p.header.flag, !serialized_body)
    });
}

/// `client_id` = hex of local_ip ‖ local_port ‖ connection_id, present when the address is set.
fn check_client_id(r: &mut Report, at: &At, p: &Packet, d: &Json) {
    let h = &p.header;
    let want = format!("{:08x}{:04x}{:08x}", h.local_ip, h.local_port, h.connection_id);
    let has_address = h.local_ip != 0 || h.local_port != 0;
    match d["client_id"].as_str() {
        Some(id) => r.check(&at.name(), has_address && id == want, || {
            format!("client_id: computed {want}, capture says {id}")
        }),
        None => r.check(&at.name(), !has_address, || format!("client_id {want} missing")),
    }
}

/// Re-encoding a decoded packet gives its bytes back.
fn check_reencode(r: &mut Report, at: &At, p: &Packet, raw: &[u8]) {
    let mut out = Vec::new();
    packet::encode(&mut out, &p.header, p.ext, p.body);
    r.check(&at.name(), out == raw, || format!("re-encoded to {}", to_hex(&out)));
}

/// Bytes with no `decoded` record: they must be whole packets that re-encode exactly.
fn check_undescribed(r: &mut Report, at: &At, hex_text: &str) {
    let bytes = hex(hex_text);
    match split(&bytes) {
        Ok(packets) => packets.iter().for_each(|(p, raw)| check_reencode(r, at, p, raw)),
        Err(e) => r.fail(&at.name(), e),
    }
}

/// Bytes with a `decoded` record (one object, or a list for several packets).
fn check_described(r: &mut Report, at: &At, direction: &str, hex_text: &str, d: &Json) {
    if hex_text.is_empty() {
        return r.check(&at.name(), d.is_null(), || format!("no bytes but decoded {d}"));
    }
    if d.is_object() && d.get("pack_len").is_none() {
        // Websocket frames and handshakes a client sent to the public port.
        return r.check(&at.name(), direction.starts_with("client->"), || {
            format!("not a packet in direction {direction}")
        });
    }
    let bytes = hex(hex_text);
    let packets = match split(&bytes) {
        Ok(p) => p,
        Err(e) => return r.fail(&at.name(), e),
    };
    packets.iter().for_each(|(p, raw)| check_reencode(r, at, p, raw));
    let records: Vec<&Json> = match d {
        Json::Array(list) => list.iter().collect(),
        _ => vec![d],
    };
    if records.len() == 1 && packets.len() > 1 {
        return check_pipelined(r, at, &bytes, &packets, records[0]);
    }
    r.check(&at.name(), records.len() == packets.len(), || {
        format!("{} packets, {} decoded records", packets.len(), records.len())
    });
    for ((p, raw), rec) in packets.iter().zip(records) {
        check_fields(r, at, p, raw, p.body, rec);
    }
}

/// `queries.jsonl` `pipelined_two_requests`: two packets in one write, but the capture's
/// decoder described the buffer as the first packet (pack_len 28) with everything after its
/// header counted as body (body_len 30 = the second packet). Check the first packet's fields
/// against that record and the "body" against the bytes that follow; the second packet is
/// checked by re-encoding. Only that case is allowed to look like this.
fn check_pipelined(r: &mut Report, at: &At, bytes: &[u8], packets: &[(Packet, &[u8])], d: &Json) {
    if !at.case.starts_with("pipelined_two_requests@") {
        return r.fail(&at.name(), format!("{} packets, 1 decoded record", packets.len()));
    }
    let (first, raw) = &packets[0];
    let rest = &bytes[packet::HEADER_LEN + first.ext.len()..];
    check_fields(r, at, first, raw, rest, d);
}

/// Query replies: `u32_be(len) ‖ payload`, the payload PHP-serialized exactly as `serialize`
/// prints `payload_php`. `d` is one record, a list (several replies) or null (no reply).
fn check_reply(r: &mut Report, at: &At, hex_text: &str, d: &Json) {
    let mut bytes = &hex(hex_text)[..];
    let records: Vec<&Json> = match d {
        Json::Array(list) => list.iter().collect(),
        Json::Null => vec![],
        _ => vec![d],
    };
    for rec in records {
        if bytes.len() < 4 {
            return r.fail(&at.name(), format!("reply too short for record {rec}"));
        }
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let payload = &bytes[4..(4 + len).min(bytes.len())];
        r.check(&at.name(), payload.len() == len && rec["len"].as_u64() == Some(len as u64), || {
            format!("reply length prefix {len}, {} bytes follow, capture says {}", payload.len(), rec["len"])
        });
        let want = bytes_field(rec, "payload");
        r.check(&at.name(), want.as_deref() == Some(payload), || "reply payload differs".into());
        check_php(r, at, "reply payload", payload, &rec["payload_php"]);
        bytes = &bytes[payload.len() + 4..];
    }
    r.check(&at.name(), bytes.is_empty(), || format!("{} reply bytes not described", bytes.len()));
}

/// Every packet and reply of one case.
fn check_case(r: &mut Report, name: &str, c: &Json) {
    let at = |field: &str| At { case: name, field: field.to_string() };
    let direction = c["direction"].as_str().unwrap_or_default();
    let text = |v: &Json| v.as_str().unwrap_or_default().to_string();
    check_described(r, &at("hex"), direction, &text(&c["hex"]), &c["decoded"]);
    if let Some(t) = c["trigger_hex"].as_str() {
        check_described(r, &at("trigger_hex"), "gateway->businessworker", t, &c["trigger"]);
    }
    for field in ["request_hex", "setup_trigger_hex", "setup_hex"] {
        let list = match &c[field] {
            Json::Array(l) => l.clone(),
            v => vec![v.clone()],
        };
        list.iter().filter_map(Json::as_str).for_each(|h| check_undescribed(r, &at(field), h));
    }
    if c.get("reply_hex").is_some() {
        check_reply(r, &at("reply_hex"), &text(&c["reply_hex"]), &c["reply_decoded"]);
    }
    for (i, p) in c["packets"].as_array().into_iter().flatten().enumerate() {
        let field = format!("packets[{i}]");
        check_described(r, &at(&field), direction, &text(&p["hex"]), &p["decoded"]);
        if p.get("reply_hex").is_some() {
            check_reply(r, &at(&format!("{field}.reply")), &text(&p["reply_hex"]), &p["reply_decoded"]);
        }
    }
    for (i, w) in c["worker_received"].as_array().into_iter().flatten().enumerate() {
        let field = format!("worker_received[{i}]");
        check_described(r, &at(&field), "gateway->businessworker", &text(&w["hex"]), &w["decoded"]);
    }
}

#[test]
fn packets_in_every_capture() {
    let floors = [
        ("gateway_to_worker.jsonl", 800),
        ("worker_to_gateway.jsonl", 10_000),
        ("queries.jsonl", 2_000),
        ("gateway_effects.jsonl", 1_000),
    ];
    assert_eq!(floors.map(|(f, _)| f), PACKET_FILES);
    for (file, floor) in floors {
        let mut r = Report::default();
        let cases = support::load(file);
        cases.iter().for_each(|c| check_case(&mut r, &case_name(c), c));
        r.finish(&format!("{file} ({} cases)", cases.len()), floor);
    }
}

/// One `{text, lines_json}` record: `text` is the captured bytes (when given) and each of its
/// lines is the JSON in `lines_json`.
fn check_lines(r: &mut Report, at: &At, rec: &Json, raw: Option<&str>) {
    let Some(text) = rec["text"].as_str() else {
        return;
    };
    if let Some(raw) = raw {
        r.check(&at.name(), hex(raw) == text.as_bytes(), || "text differs from the bytes".into());
    }
    let Some(lines) = rec["lines_json"].as_array() else {
        return;
    };
    r.check(&at.name(), text.lines().count() == lines.len(), || "line count differs".into());
    for (line, want) in text.lines().zip(lines) {
        let got: Result<Json, _> = serde_json::from_str(line);
        r.check(&at.name(), got.as_ref().ok() == Some(want), || format!("{line:?} parsed as {got:?}"));
    }
}

/// The first line of a register connection: the captured bytes, and JSON unless the case is
/// about bad JSON.
fn check_register_line(r: &mut Report, at: &At, c: &Json) {
    let d = &c["decoded"];
    let Some(line) = d["line"].as_str() else {
        return;
    };
    r.check(&at.name(), hex(c["hex"].as_str().unwrap_or_default()) == line.as_bytes(), || {
        "line differs from hex".into()
    });
    r.check(&at.name(), line.ends_with('\n'), || "line without \\n".into());
    let parsed: Result<Json, _> = serde_json::from_str(line);
    if at.case.starts_with("bad_json") {
        return r.check(&at.name(), parsed.is_err(), || "bad_json line parses".into());
    }
    r.check(&at.name(), parsed.as_ref().is_ok_and(Json::is_object), || {
        format!("{line:?} is not a JSON object")
    });
    if let Some(want) = d.get("json") {
        r.check(&at.name(), parsed.as_ref().ok() == Some(want), || "json differs".into());
    }
}

#[test]
fn register_lines_are_json() {
    let mut r = Report::default();
    for c in support::load("register.jsonl") {
        let name = case_name(&c);
        let at = |field: &str| At { case: &name, field: field.to_string() };
        check_register_line(&mut r, &at("hex"), &c);
        check_lines(&mut r, &at("hex"), &c["decoded"], c["hex"].as_str());
        check_lines(&mut r, &at("reply_hex"), &c["reply_decoded"], c["reply_hex"].as_str());
        let worker = c["worker_received_hex"].as_str();
        check_lines(&mut r, &at("worker_received_hex"), &c["worker_received"], worker);
        for part in ["initial", "after_join", "after_stop"] {
            check_lines(&mut r, &at(part), &c["decoded"][part], None);
        }
        if let Some(first) = c["decoded"]["first_line_on_same_connection"].as_str() {
            let ok = serde_json::from_str::<Json>(first).is_ok_and(|j| j.is_object());
            r.check(&name, ok, || format!("{first:?} is not a JSON object"));
        }
    }
    for c in support::load("worker_to_gateway.jsonl") {
        for line in c["register_lines"].as_array().into_iter().flatten().filter_map(Json::as_str) {
            let ok = serde_json::from_str::<Json>(line).is_ok_and(|j| j.is_object());
            r.check(&case_name(&c), ok, || format!("register line {line:?} is not a JSON object"));
        }
    }
    r.finish("register lines", 150);
}
