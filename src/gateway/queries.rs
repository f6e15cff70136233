//! Answers to query commands, byte for byte as GatewayWorker serializes them
//! (`docs/protocol.md` §3-4). The caller frames them as `u32_be(len) ‖ payload`.

use serde_json::Value as Json;

use super::clients::Clients;
use super::directory::Directory;
use super::index::Index;
use crate::wire::packet::{Packet, cmd};
use crate::wire::php::{self, Array, Key, Value};

/// The serialized reply to query packet `p`.
pub fn answer(clients: &Clients, index: &Directory, p: &Packet<'_>) -> Vec<u8> {
    let (uids, groups) = (&index.uids, &index.groups);
    let id = p.header.connection_id;
    let value = match p.header.cmd {
        cmd::GET_ALL_CLIENT_SESSIONS => sessions(clients, clients.ids_sorted()),
        cmd::IS_ONLINE => Value::Int(clients.by_id(id).is_some() as i64),
        cmd::GET_CLIENT_ID_BY_UID => id_list(uids, p.ext),
        cmd::BATCH_GET_CLIENT_ID_BY_UID => {
            let mut a = Array::new();
            for uid in names(p.ext) {
                a.insert(Key::from_bytes(&uid), id_list(uids, &uid));
            }
            Value::Array(a)
        }
        cmd::GET_CLIENT_SESSIONS_BY_GROUP => {
            sessions(clients, groups.get(p.ext).map(|m| m.ordered()).unwrap_or_default())
        }
        cmd::GET_CLIENT_COUNT_BY_GROUP if p.ext.is_empty() => Value::Int(clients.len() as i64),
        cmd::GET_CLIENT_COUNT_BY_GROUP => Value::Int(groups.get(p.ext).map_or(0, |m| m.len()) as i64),
        cmd::SELECT => select(clients, uids, groups, p.ext),
        cmd::GET_GROUP_ID_LIST => Value::Array(
            groups
                .names()
                .into_iter()
                .map(|g| Value::from(Key::from_bytes(g)))
                .enumerate()
                .map(|(i, v)| (Key::Int(i as i64), v))
                .collect(),
        ),
        cmd::BATCH_GET_CLIENT_COUNT_BY_GROUP => {
            let mut a = Array::new();
            for g in names(p.ext) {
                a.insert(Key::from_bytes(&g), Value::Int(groups.get(&g).map_or(0, |m| m.len()) as i64));
            }
            Value::Array(a)
        }
        cmd::GET_SESSION_BY_CLIENT_ID => {
            return match clients.by_id(id) {
                None => b"N;".to_vec(),
                Some(c) if c.session.is_empty() => b"a:0:{}".to_vec(),
                Some(c) => c.session.clone(),
            };
        }
        _ => Value::Null,
    };
    php::serialize(&value)
}

/// `[conn_id => session string]` for `ids`.
fn sessions(clients: &Clients, ids: Vec<u32>) -> Value {
    let mut a = Array::with_capacity(ids.len());
    for id in ids {
        if let Some(c) = clients.by_id(id) {
            a.insert(Key::Int(id as i64), Value::Str(c.session.clone()));
        }
    }
    Value::Array(a)
}

/// List of connection ids bound to `uid`.
fn id_list(uids: &Index, uid: &[u8]) -> Value {
    let mut a = Array::new();
    for id in uids.get(uid).map(|m| m.ordered()).unwrap_or_default() {
        a.push(Value::Int(id as i64));
    }
    Value::Array(a)
}

/// A JSON list of names (strings or numbers) as bytes.
fn names(ext: &[u8]) -> Vec<Vec<u8>> {
    let Ok(Json::Array(items)) = serde_json::from_slice::<Json>(ext) else { return Vec::new() };
    items
        .iter()
        .filter_map(|j| match j {
            Json::String(s) => Some(s.as_bytes().to_vec()),
            Json::Number(n) => Some(n.to_string().into_bytes()),
            _ => None,
        })
        .collect()
}

/// CMD_SELECT: `{"fields":[..],"where":{groups|uid|connection_id: [..]}}`.
fn select(clients: &Clients, uids: &Index, groups: &Index, ext: &[u8]) -> Value {
    let Ok(json) = serde_json::from_slice::<Json>(ext) else {
        log::warn!("gateway: CMD_SELECT with undecodable ext_data");
        return Value::Array(Array::new());
    };
    let fields: Vec<String> = match json.get("fields") {
        Some(Json::Array(f)) => f.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    let matched: Vec<u32> = match json.get("where") {
        Some(Json::Object(w)) if !w.is_empty() => {
            let mut ids = Vec::new();
            for name in names_of(w.get("groups")) {
                ids.extend(groups.get(&name).map(|m| m.ordered()).unwrap_or_default());
            }
            for name in names_of(w.get("uid")) {
                ids.extend(uids.get(&name).map(|m| m.ordered()).unwrap_or_default());
            }
            if let Some(c) = w.get("connection_id") {
                let vals: Vec<&Json> = match c {
                    Json::Array(a) => a.iter().collect(),
                    Json::Object(o) => o.values().collect(),
                    other => vec![other],
                };
                ids.extend(vals.into_iter().filter_map(|v| match v {
                    Json::Number(n) => n.as_u64().map(|n| n as u32),
                    Json::String(s) => s.parse().ok(),
                    _ => None,
                }));
            }
            ids
        }
        _ => clients.ids_sorted(),
    };
    let mut out = Array::new();
    for id in matched {
        let Some(c) = clients.by_id(id) else { continue };
        if out.get(&Key::Int(id as i64)).is_some() {
            continue;
        }
        let mut row = Array::new();
        for f in &fields {
            let v = match f.as_str() {
                "uid" => c.uid.as_ref().map_or(Value::Null, |u| Value::Str(u.to_vec())),
                "groups" => c.groups.as_ref().map_or(Value::Null, |gs| {
                    Value::Array(gs.iter().map(|g| (Key::from_bytes(g), Value::Str(g.to_vec()))).collect())
                }),
                "session" => Value::Str(c.session.clone()),
                _ => Value::Null,
            };
            row.insert(Key::from_text(f), v);
        }
        out.insert(Key::Int(id as i64), Value::Array(row));
    }
    Value::Array(out)
}

fn names_of(v: Option<&Json>) -> Vec<Vec<u8>> {
    match v {
        Some(j @ Json::Array(_)) => names(j.to_string().as_bytes()),
        Some(Json::Object(o)) => o
            .values()
            .filter_map(|j| match j {
                Json::String(s) => Some(s.as_bytes().to_vec()),
                Json::Number(n) => Some(n.to_string().into_bytes()),
                _ => None,
            })
            .collect(),
        Some(Json::String(s)) => vec![s.as_bytes().to_vec()],
        _ => Vec::new(),
    }
}
