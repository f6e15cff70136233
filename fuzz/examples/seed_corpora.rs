//! Writes seed corpora for the fuzz targets from the GatewayWorker captures in
//! `tests/compat/*.jsonl`: packets, serialized PHP values, register lines, client text,
//! handshake requests and websocket frames, each prefixed with the control bytes its target
//! reads first. Output: `fuzz/corpus/<target>/` (or the directory given as the argument),
//! which `cargo fuzz run <target>` uses by default. Generated, not committed.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpora`

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::{env, fs};

use gatewayworker::internals::net::{frame, text};
use gatewayworker::internals::wire::packet::{self, flag};
use gatewayworker::internals::wire::php::{self, Value};
use serde_json::Value as Json;

const MAX_PACKET: usize = 10_485_760;

#[derive(Default)]
struct Seeds(BTreeMap<&'static str, BTreeSet<Vec<u8>>>);

impl Seeds {
    fn add(&mut self, target: &'static str, data: Vec<u8>) {
        self.0.entry(target).or_default().insert(data);
    }
}

/// Every `(field name, value)` of a JSON document, depth first.
fn walk<'a>(j: &'a Json, key: &'a str, out: &mut Vec<(&'a str, &'a Json)>) {
    out.push((key, j));
    match j {
        Json::Object(o) => o.iter().for_each(|(k, v)| walk(v, k, out)),
        Json::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
        _ => {}
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Serialized values inside a value (sessions travel as strings inside query replies).
fn nested_serialized(v: &Value, seeds: &mut Seeds) {
    match v {
        Value::Str(s) if php::unserialize(s).is_ok() => seeds.add("php_unserialize", s.clone()),
        Value::Array(a) => a.iter().for_each(|(_, v)| nested_serialized(v, seeds)),
        _ => {}
    }
}

fn php_candidate(b: &[u8], seeds: &mut Seeds) {
    if let Ok(v) = php::unserialize(b) {
        seeds.add("php_unserialize", b.to_vec());
        nested_serialized(&v, seeds);
    }
}

fn blob(field: &str, file: &str, b: &[u8], seeds: &mut Seeds) {
    // Packets (possibly several in a row).
    let mut used = 0;
    while let Ok(Some((p, n))) = packet::decode(&b[used..], MAX_PACKET) {
        seeds.add("packet", b[used..used + n].to_vec());
        php_candidate(p.ext, seeds);
        if p.header.flag & flag::BODY_IS_SCALAR == 0 {
            php_candidate(p.body, seeds);
        } else if p.body.first() == Some(&b'{') {
            seeds.add("register_lines", p.body.to_vec());
        }
        used += n;
    }
    if used > 0 && used < b.len() {
        seeds.add("packet", b.to_vec());
    }
    // Query replies: u32 length + serialized payload.
    if b.len() >= 4 && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize == b.len() - 4 {
        php_candidate(&b[4..], seeds);
    }
    php_candidate(b, seeds);
    if file == "register.jsonl" {
        for line in b.split_inclusive(|&c| c == b'\n') {
            seeds.add("register_lines", line.to_vec());
        }
    }
    if b.starts_with(b"GET ") || b.starts_with(b"POST ") || field.contains("request") && b.contains(&b'\r') {
        request(b, seeds);
    }
    if field == "sent_hex" {
        if b.first().is_some_and(|&c| c & 0x80 != 0 || c == 0x01) {
            websocket_stream(b, seeds);
        } else {
            client_stream(b, seeds);
        }
    }
}

fn request(b: &[u8], seeds: &mut Seeds) {
    seeds.add("ws_handshake", b.to_vec());
    let mut with_frame = b.to_vec();
    with_frame.extend(client_frame(true, 1, b"hello"));
    seeds.add("ws_handshake", with_frame);
}

/// Text lines for the text protocol; the same messages as frames.
fn client_stream(b: &[u8], seeds: &mut Seeds) {
    let mut frames = Vec::new();
    for line in b.split(|&c| c == b'\n') {
        frame::encode(&mut frames, line);
    }
    for stream in [b.to_vec(), frames] {
        for control in [&[0x80, 0][..], &[0x05, 2, 2, 6], &[0x41, 1, 0]] {
            seeds.add("client_framing", [control, &stream].concat());
        }
    }
}

/// Frames of a websocket client, under a few limits and read patterns.
fn websocket_stream(b: &[u8], seeds: &mut Seeds) {
    for control in [&[0xc0, 0, 0][..], &[0x80, 3, 2, 4, 0], &[0x05, 0, 1, 0]] {
        seeds.add("ws_frames", [control, b].concat());
    }
}

fn synthetic(seeds: &mut Seeds) {
    let text = |s: &str| client_frame(true, 1, s.as_bytes());
    let streams: Vec<Vec<u8>> = vec![
        [client_frame(true, 9, b"ping"), text("after ping")].concat(),
        [client_frame(false, 1, b"frag"), client_frame(false, 0, b"men"), client_frame(true, 0, b"ted")]
            .concat(),
        [client_frame(false, 2, &[0, 1]), client_frame(true, 9, b""), client_frame(true, 0, &[2])].concat(),
        client_frame(true, 2, &[0x5a; 300]),
        client_frame(true, 2, &[0xa5; 70_000]),
        [text("bye"), client_frame(true, 8, &[0x03, 0xe8, b'o', b'k'])].concat(),
        client_frame(true, 10, b"unsolicited pong"),
    ];
    for s in &streams {
        websocket_stream(s, seeds);
    }
    for s in ["plain line\r\n", "a\nb\r\n\r\nc", "no newline at all"] {
        client_stream(s.as_bytes(), seeds);
    }
    let mut long = Vec::new();
    text::encode(&mut long, &[b'x'; 100]);
    client_stream(&long, seeds);
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out: PathBuf = env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| root.join("corpus"));
    let compat = root.join("../tests/compat");
    let mut seeds = Seeds::default();
    let mut files: Vec<_> = fs::read_dir(&compat).expect("tests/compat").filter_map(Result::ok).collect();
    files.sort_by_key(|e| e.file_name());
    for entry in files {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jsonl") {
            continue;
        }
        for line in fs::read_to_string(entry.path()).expect("capture").lines() {
            let case: Json = serde_json::from_str(line).expect("JSON line");
            let mut fields = Vec::new();
            walk(&case, "", &mut fields);
            for (key, value) in fields {
                let Json::String(s) = value else { continue };
                if key.ends_with("hex") {
                    if let Some(b) = unhex(s) {
                        blob(key, &name, &b, &mut seeds);
                    }
                } else if key.contains("request") || key == "line" {
                    blob(key, &name, s.as_bytes(), &mut seeds);
                }
            }
        }
    }
    synthetic(&mut seeds);
    for (target, set) in &seeds.0 {
        let dir = out.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        for data in set {
            let mut h = DefaultHasher::new();
            data.hash(&mut h);
            fs::write(dir.join(format!("seed-{:016x}", h.finish())), data).expect("write seed");
        }
        println!("{target}: {} seeds in {}", set.len(), dir.display());
    }
}
