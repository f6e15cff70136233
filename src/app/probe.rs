//! `probe`: every Gateway API call, driven by JSON commands from a client. Used by the
//! integration tests and handy to explore a running cluster with a websocket console.
//!
//! Request: `{"op":"<api method>","tag":<any>, ...arguments}`; reply to the sender:
//! `{"op":..,"tag":..,"ok":<result>}` or `{"op":..,"tag":..,"err":"<message>"}`. Op
//! `batch` runs the requests of its `ops` list in one callback, in order (results as a list).
//! Arguments: `id` (a client_id, default: the sender), `msg`, `uid`, `uids`, `group`,
//! `groups`, `only`, `exclude`, `raw`, `binary`, `session`, `key`, `value`.
//! A client whose handshake URL has `probe_ws=1` gets its `on_websocket_connect` data as
//! `{"event":"websocket_connect","data":..}`; members of group `watchers` get
//! `{"event":"close","client_id":..}` for every client that leaves.

use serde_json::{Map, Value as Json, json};

use crate::api::{ApiError, Array, ClientId, Context, Events, Key, SendOpts, Value};

pub struct Probe;

/// A PHP value as JSON (keys become strings, bytes lossy UTF-8).
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Str(s) => Json::String(String::from_utf8_lossy(s).into_owned()),
        Value::Array(a) => array_json(a),
    }
}

fn array_json(a: &Array) -> Json {
    let mut m = Map::new();
    for (k, v) in a.iter() {
        m.insert(String::from_utf8_lossy(&k.to_bytes()).into_owned(), to_json(v));
    }
    Json::Object(m)
}

/// JSON as a PHP value (objects and lists become arrays).
pub fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)))
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => {
            let mut a = Array::new();
            for it in items {
                a.push(from_json(it));
            }
            Value::Array(a)
        }
        Json::Object(o) => Value::Array(o.iter().map(|(k, v)| (Key::from_text(k), from_json(v))).collect()),
    }
}

fn strs(j: Option<&Json>) -> Vec<String> {
    match j {
        Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Json::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn ids(j: Option<&Json>) -> Result<Vec<ClientId>, ApiError> {
    strs(j).iter().map(|s| s.parse::<ClientId>().map_err(|_| ApiError::BadClientId(s.clone()))).collect()
}

fn id_list(v: Vec<ClientId>) -> Json {
    Json::Array(v.into_iter().map(|c| Json::String(c.to_string())).collect())
}

fn sessions(v: Vec<(ClientId, Array)>) -> Json {
    let mut m = Map::new();
    for (id, s) in v {
        m.insert(id.to_string(), array_json(&s));
    }
    Json::Object(m)
}

fn pairs<T: Into<Json>>(v: Vec<(String, T)>) -> Json {
    Json::Object(v.into_iter().map(|(k, x)| (k, x.into())).collect())
}

/// The arguments of a request, read once for every op.
struct Args {
    me: ClientId,
    /// `id`, default: the sender.
    id: ClientId,
    msg: String,
    opts: SendOpts,
    uids: Vec<String>,
    groups: Vec<String>,
    uid: String,
    group: String,
}

/// A string argument, empty when missing.
fn text(r: &Json, k: &str) -> String {
    r.get(k).and_then(Json::as_str).unwrap_or("").to_string()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Args {
    fn read(me: ClientId, r: &Json) -> Result<Args, ApiError> {
        let id = match r.get("id").and_then(Json::as_str) {
            Some(x) => x.parse::<ClientId>().map_err(|_| ApiError::BadClientId(x.to_string()))?,
            None => me,
        };
        let flag = |k: &str| r.get(k).and_then(Json::as_bool).unwrap_or(false);
        Ok(Args {
            me,
            id,
            msg: text(r, "msg"),
            opts: SendOpts { raw: flag("raw"), binary: flag("binary") },
            uids: strs(r.get("uids")),
            groups: strs(r.get("groups")),
            uid: text(r, "uid"),
            group: text(r, "group"),
        })
    }
}

impl Probe {
    fn run(&self, ctx: &mut Context<'_>, me: ClientId, r: &Json) -> Result<Json, ApiError> {
        let a = Args::read(me, r)?;
        let op = text(r, "op");
        if op == "batch" {
            // Several ops in one callback, in order: `{"op":"batch","ops":[{..},{..}]}`.
            let ops = r.get("ops").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
            return ops
                .iter()
                .map(|sub| self.run(ctx, me, sub))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array);
        }
        match act(ctx, &a, r, &op)? {
            Some(v) => Ok(v),
            None => query(ctx, &a, &op),
        }
    }
}

/// The ops that send, close, bind and change sessions; `None` for any other op.
fn act(ctx: &mut Context<'_>, a: &Args, r: &Json, op: &str) -> Result<Option<Json>, ApiError> {
    let (id, msg, opts, uid, group) = (a.id, &a.msg, a.opts, &a.uid, &a.group);
    let session = || match from_json(r.get("session").unwrap_or(&Json::Null)) {
        Value::Array(a) => a,
        _ => Array::new(),
    };
    Ok(Some(match op {
        "whoami" => json!(a.me.to_string()),
        "send_to_all" => {
            let only = if r.get("only").is_some() { Some(ids(r.get("only"))?) } else { None };
            ctx.send_to_all_opts(msg, only.as_deref(), &ids(r.get("exclude"))?, opts)?;
            Json::Null
        }
        "send_to_client" => json!(ctx.send_to_client_opts(id, msg, opts)?),
        "send_to_current_client" => json!(ctx.send_to_current_client_opts(msg, opts)?),
        "send_to_uid" => json!(ctx.send_to_uid_opts(&as_strs(&a.uids), msg, opts)?),
        "send_to_group" => {
            json!(ctx.send_to_group_opts(&as_strs(&a.groups), msg, &ids(r.get("exclude"))?, opts)?)
        }
        "close_client" => {
            json!(ctx.close_client(id, r.get("msg").and_then(Json::as_str).map(str::as_bytes))?)
        }
        "destroy_client" => json!(ctx.destroy_client(id)?),
        "bind_uid" => json!(ctx.bind_uid(id, uid)?),
        "unbind_uid" => json!(ctx.unbind_uid(id, uid)?),
        "join_group" => json!(ctx.join_group(id, group)?),
        "leave_group" => json!(ctx.leave_group(id, group)?),
        "ungroup" => json!(ctx.ungroup(group)?),
        "session_set" => {
            let v = from_json(r.get("value").unwrap_or(&Json::Null));
            ctx.session()?.insert(Key::from_text(&text(r, "key")), v);
            Json::Null
        }
        "session_get" => array_json(ctx.session()?),
        "set_session" => json!(ctx.set_session(id, &session())?),
        "update_session" => json!(ctx.update_session(id, &session())?),
        _ => return Ok(None),
    }))
}

/// The ops that only read, and the diagnostic ones.
fn query(ctx: &mut Context<'_>, a: &Args, op: &str) -> Result<Json, ApiError> {
    let (id, uid, group) = (a.id, &a.uid, &a.group);
    let (uids, groups) = (as_strs(&a.uids), as_strs(&a.groups));
    Ok(match op {
        "get_session" => ctx.get_session(id)?.map_or(Json::Null, |a| array_json(&a)),
        "is_online" => json!(ctx.is_online(id)?),
        "is_uid_online" => json!(ctx.is_uid_online(uid)?),
        "get_client_id_by_uid" => id_list(ctx.get_client_id_by_uid(uid)?),
        "get_uid_by_client_id" => json!(ctx.get_uid_by_client_id(id)?),
        "get_client_count_by_group" => json!(ctx.get_client_count_by_group(group)?),
        "get_all_client_count" => json!(ctx.get_all_client_count()?),
        "get_all_client_sessions" => sessions(ctx.get_all_client_sessions()?),
        "get_client_sessions_by_group" => sessions(ctx.get_client_sessions_by_group(group)?),
        "get_all_uid_list" => json!(ctx.get_all_uid_list()?),
        "get_all_uid_count" => json!(ctx.get_all_uid_count()?),
        "get_uid_list_by_group" => json!(ctx.get_uid_list_by_group(group)?),
        "get_uid_count_by_group" => json!(ctx.get_uid_count_by_group(group)?),
        "get_client_id_list_by_group" => id_list(ctx.get_client_id_list_by_group(group)?),
        "get_all_client_id_list" => id_list(ctx.get_all_client_id_list()?),
        "get_all_group_id_list" => json!(ctx.get_all_group_id_list()?),
        "get_all_group_uid_list" => pairs(ctx.get_all_group_uid_list()?),
        "get_all_group_uid_count" => pairs(ctx.get_all_group_uid_count()?),
        "get_all_group_client_id_list" => Json::Object(
            ctx.get_all_group_client_id_list()?.into_iter().map(|(g, l)| (g, id_list(l))).collect(),
        ),
        "get_all_group_client_id_count" => pairs(ctx.get_all_group_client_id_count()?),
        "batch_get_client_id_by_uid" => Json::Object(
            ctx.batch_get_client_id_by_uid(&uids)?.into_iter().map(|(u, l)| (u, id_list(l))).collect(),
        ),
        "is_uids_online" => pairs(ctx.is_uids_online(&uids)?),
        "batch_get_client_count_by_group" => pairs(ctx.batch_get_client_count_by_group(&groups)?),
        "worker" => json!({"name": ctx.worker_name(), "id": ctx.worker_id(), "pid": std::process::id()}),
        "panic" => panic!("probe: panic requested"),
        other => json!({"unknown_op": other}),
    })
}

impl Events for Probe {
    fn on_websocket_connect(&mut self, ctx: &mut Context<'_>, _id: ClientId, data: &Value) {
        let json = to_json(data);
        if json["get"]["probe_ws"] == "1" {
            let _ =
                ctx.send_to_current_client(json!({"event": "websocket_connect", "data": json}).to_string());
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, id: ClientId, message: &[u8]) {
        let Ok(req) = serde_json::from_slice::<Json>(message) else {
            let _ = ctx.send_to_current_client(json!({"err": "not JSON"}).to_string());
            return;
        };
        let op = req.get("op").cloned().unwrap_or(Json::Null);
        let tag = req.get("tag").cloned().unwrap_or(Json::Null);
        let reply = match self.run(ctx, id, &req) {
            Ok(v) => json!({"op": op, "tag": tag, "ok": v}),
            Err(e) => json!({"op": op, "tag": tag, "err": e.to_string()}),
        };
        if req.get("quiet").and_then(Json::as_bool) != Some(true) {
            let _ = ctx.send_to_current_client(reply.to_string());
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, id: ClientId) {
        let _ = ctx
            .send_to_group(&["watchers"], json!({"event": "close", "client_id": id.to_string()}).to_string());
    }
}
