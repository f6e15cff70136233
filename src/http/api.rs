//! The server API: `POST /api/<call>` with a JSON body runs the Gateway API call of that name
//! (`crate::api::Api`, the very code a `GatewayClient` runs, so the semantics are the same)
//! without blocking the reactor. The call is replayed over a recording transport: a run that
//! needs a gateway query stops at it and returns the query; the server sends it on its
//! non-blocking gateway links and runs the call again with the replies, until a run needs no
//! new query. The sends of that final run are written; once each is written (or its link
//! failed) the call runs one last time with that knowledge, so a failed send is reported
//! exactly where GatewayClient reports it. Every call makes at most one query.

use std::net::SocketAddrV4;

use serde_json::{Map, Value as Json, json};

use crate::api::transport::{Pkt, Transport};
use crate::api::{Api, ApiError, ClientId, SendOpts};
use crate::wire::php::{self, Array, Key, Value};

/// Replies to one query: (gateway, payload) for every gateway that answered in time.
pub type Replies = Vec<(SocketAddrV4, Vec<u8>)>;

/// Every call, grouped by the body fields it takes (GatewayClient parameters in snake_case).
const CALLS: &[(&[&str], &[&str])] = &[
    (&["message", "client_id_array", "exclude_client_id", "raw", "binary"], &["send_to_all"]),
    (&["client_id", "message", "raw", "binary"], &["send_to_client"]),
    (&["uid", "message", "raw", "binary"], &["send_to_uid"]),
    (&["group", "message", "exclude_client_id", "raw", "binary"], &["send_to_group"]),
    (&["client_id", "message"], &["close_client"]),
    (&["client_id"], &["destroy_client", "get_session", "is_online", "get_uid_by_client_id"]),
    (&["client_id", "uid"], &["bind_uid", "unbind_uid"]),
    (&["client_id", "group"], &["join_group", "leave_group"]),
    (
        &["group"],
        &[
            "ungroup",
            "get_client_sessions_by_group",
            "get_client_count_by_group",
            "get_client_id_count_by_group",
            "get_uid_list_by_group",
            "get_uid_count_by_group",
            "get_client_id_list_by_group",
        ],
    ),
    (&["client_id", "session"], &["set_session", "update_session"]),
    (
        &[],
        &[
            "get_all_client_sessions",
            "get_all_client_count",
            "get_all_client_id_count",
            "get_all_uid_list",
            "get_all_uid_count",
            "get_all_client_id_list",
            "get_all_group_id_list",
            "get_all_group_uid_list",
            "get_all_group_uid_count",
            "get_all_group_client_id_list",
            "get_all_group_client_id_count",
        ],
    ),
    (&["uid"], &["get_client_id_by_uid", "is_uid_online"]),
    (&["uids"], &["batch_get_client_id_by_uid", "is_uids_online"]),
    (&["groups"], &["batch_get_client_count_by_group"]),
];

/// Why a call failed: HTTP status, a stable code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl CallError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> CallError {
        CallError { status, code, message: message.into() }
    }

    fn field(name: &str, problem: &str) -> CallError {
        CallError::new(400, "bad_field", format!("field `{name}`: {problem}"))
    }
}

impl From<ApiError> for CallError {
    fn from(e: ApiError) -> CallError {
        let (status, code) = match &e {
            ApiError::BadClientId(_) => (400, "bad_client_id"),
            ApiError::EmptyName(_) => (400, "empty_name"),
            ApiError::NoGateway => (503, "no_gateway"),
            ApiError::GatewayNotConnected(_) | ApiError::Io(..) => (502, "gateway_unreachable"),
            ApiError::BadReply(..) => (502, "bad_reply"),
            ApiError::NoCurrentClient => (500, "no_current_client"),
        };
        CallError::new(status, code, e.to_string())
    }
}

/// A validated request: a known call and a JSON object with only its fields.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: &'static str,
    body: Map<String, Json>,
}

impl Call {
    /// Check the call name (404 when unknown) and the body: a JSON object (an empty body counts
    /// as `{}`) holding only fields of that call (400 naming the field otherwise).
    pub fn parse(name: &str, body: &[u8]) -> Result<Call, CallError> {
        let found = CALLS
            .iter()
            .find_map(|&(fields, names)| names.iter().find(|n| **n == name).map(|n| (*n, fields)));
        let Some((name, fields)) = found else {
            return Err(CallError::new(404, "unknown_call", format!("no API call {name:?}")));
        };
        let json: Json = if body.iter().all(u8::is_ascii_whitespace) {
            Json::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|e| CallError::new(400, "bad_json", format!("the body is not valid JSON: {e}")))?
        };
        let Json::Object(body) = json else {
            return Err(CallError::new(400, "bad_json", "the body must be a JSON object"));
        };
        if let Some(k) = body.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(CallError::field(
                k,
                &format!("unknown field for {name} (fields: {})", fields.join(", ")),
            ));
        }
        Ok(Call { name, body })
    }
}

/// What one run of a call asks for.
#[derive(Debug)]
pub enum Step {
    /// Finished: the result and the packets to send (gateway, encoded packet).
    Done { result: Result<Json, CallError>, sends: Vec<(SocketAddrV4, Vec<u8>)> },
    /// Send `packet` to `gateways`, then run again with their replies appended.
    Query { gateways: Vec<SocketAddrV4>, packet: Vec<u8> },
    /// The gateway list is not known yet (no register answered so far).
    NeedGateways,
}

/// One run of `call`, given the cluster's gateway list, the replies to earlier queries and,
/// once its sends went out, whether each was written (`Transport::send` then fails for those
/// that were not, and the call reports that as GatewayClient would).
pub fn step(
    call: &Call,
    gateways: Option<&[SocketAddrV4]>,
    answers: &[Replies],
    written: Option<&[bool]>,
) -> Step {
    let t = Replay {
        gateways,
        answers,
        asked: 0,
        query: None,
        sends: Vec::new(),
        needs_gateways: false,
        written,
        sent: 0,
    };
    let mut api = Api::new(t);
    let result = invoke(&mut api, call.name, &Args(&call.body));
    let t = api.t;
    if let Some((gateways, packet)) = t.query {
        return Step::Query { gateways, packet };
    }
    if t.needs_gateways {
        return Step::NeedGateways;
    }
    Step::Done { result, sends: t.sends }
}

/// The transport of a replayed run.
struct Replay<'a> {
    gateways: Option<&'a [SocketAddrV4]>,
    answers: &'a [Replies],
    asked: usize,
    query: Option<(Vec<SocketAddrV4>, Vec<u8>)>,
    sends: Vec<(SocketAddrV4, Vec<u8>)>,
    needs_gateways: bool,
    written: Option<&'a [bool]>,
    sent: usize,
}

impl Transport for Replay<'_> {
    fn gateways(&mut self) -> Result<Vec<SocketAddrV4>, ApiError> {
        match self.gateways {
            Some(list) if !list.is_empty() => Ok(list.to_vec()),
            Some(_) => Err(ApiError::NoGateway),
            None => {
                self.needs_gateways = true;
                Err(ApiError::NoGateway)
            }
        }
    }

    fn send(&mut self, gateway: SocketAddrV4, packet: Pkt<'_>) -> Result<(), ApiError> {
        if let Some(written) = self.written {
            let i = self.sent;
            self.sent += 1;
            if written.get(i).copied().unwrap_or(false) {
                return Ok(());
            }
            let e = std::io::Error::other("the link to the gateway failed before the packet was written");
            return Err(ApiError::Io(std::net::SocketAddr::V4(gateway), e));
        }
        if self.query.is_none() {
            self.sends.push((gateway, packet.to_vec()));
        }
        Ok(())
    }

    fn query(&mut self, gateways: &[SocketAddrV4], packet: Pkt<'_>) -> Replies {
        let i = self.asked;
        self.asked += 1;
        if let Some(replies) = self.answers.get(i) {
            return replies.clone();
        }
        if self.query.is_none() {
            self.query = Some((gateways.to_vec(), packet.to_vec()));
        }
        Vec::new()
    }
}

type Out = Result<Json, CallError>;

fn invoke(api: &mut Api<Replay<'_>>, name: &str, a: &Args<'_>) -> Out {
    if let Some(r) = sending(api, name, a) {
        return r;
    }
    if let Some(r) = membership(api, name, a) {
        return r;
    }
    if let Some(r) = lookups(api, name, a) {
        return r;
    }
    listings(api, name)
        .unwrap_or_else(|| Err(CallError::new(404, "unknown_call", format!("no API call {name:?}"))))
}

fn done(r: Result<(), ApiError>) -> Out {
    r.map(|()| Json::Bool(true)).map_err(CallError::from)
}

fn sending(api: &mut Api<Replay<'_>>, name: &str, a: &Args<'_>) -> Option<Out> {
    let r = match name {
        "send_to_all" => send_to_all(api, a),
        "send_to_client" => {
            a.id("client_id").and_then(|id| done(api.send_to_client_opts(id, a.text("message")?, a.opts()?)))
        }
        "send_to_uid" => {
            a.names("uid").and_then(|u| done(api.send_to_uid_opts(&refs(&u), a.text("message")?, a.opts()?)))
        }
        "send_to_group" => a.names("group").and_then(|g| {
            let exclude = a.ids_opt("exclude_client_id")?.unwrap_or_default();
            done(api.send_to_group_opts(&refs(&g), a.text("message")?, &exclude, a.opts()?))
        }),
        "close_client" => a.id("client_id").and_then(|id| {
            let msg = a.opt_text("message")?;
            done(api.close_client(id, msg.as_deref().map(str::as_bytes)))
        }),
        "destroy_client" => a.id("client_id").and_then(|id| done(api.destroy_client(id))),
        _ => return None,
    };
    Some(r)
}

fn send_to_all(api: &mut Api<Replay<'_>>, a: &Args<'_>) -> Out {
    let only = a.ids_opt("client_id_array")?;
    let exclude = a.ids_opt("exclude_client_id")?.unwrap_or_default();
    done(api.send_to_all_opts(a.text("message")?, only.as_deref(), &exclude, a.opts()?))
}

fn membership(api: &mut Api<Replay<'_>>, name: &str, a: &Args<'_>) -> Option<Out> {
    let r = match name {
        "bind_uid" => a.id("client_id").and_then(|id| done(api.bind_uid(id, &a.name("uid")?))),
        "unbind_uid" => a.id("client_id").and_then(|id| done(api.unbind_uid(id, &a.name("uid")?))),
        "join_group" => a.id("client_id").and_then(|id| done(api.join_group(id, &a.name("group")?))),
        "leave_group" => a.id("client_id").and_then(|id| done(api.leave_group(id, &a.name("group")?))),
        "ungroup" => a.name("group").and_then(|g| done(api.ungroup(&g))),
        "set_session" => a.id("client_id").and_then(|id| done(api.set_session(id, &a.session("session")?))),
        "update_session" => {
            a.id("client_id").and_then(|id| done(api.update_session(id, &a.session("session")?)))
        }
        "get_session" => a.id("client_id").and_then(|id| match api.get_session(id)? {
            Some(s) => array_json(&s),
            None => Ok(Json::Null),
        }),
        "is_online" => a.id("client_id").and_then(|id| Ok(Json::Bool(api.is_online(id)?))),
        "get_uid_by_client_id" => a
            .id("client_id")
            .and_then(|id| Ok(api.get_uid_by_client_id(id)?.map_or(Json::Null, Json::String))),
        _ => return None,
    };
    Some(r)
}

fn lookups(api: &mut Api<Replay<'_>>, name: &str, a: &Args<'_>) -> Option<Out> {
    let r = match name {
        "get_client_sessions_by_group" => {
            a.name("group").and_then(|g| sessions_json(api.get_client_sessions_by_group(&g)?))
        }
        "get_client_count_by_group" | "get_client_id_count_by_group" => {
            a.name("group").and_then(|g| Ok(json!(api.get_client_count_by_group(&g)?)))
        }
        "get_client_id_by_uid" => a.name("uid").and_then(|u| Ok(ids_json(&api.get_client_id_by_uid(&u)?))),
        "is_uid_online" => a.name("uid").and_then(|u| Ok(Json::Bool(api.is_uid_online(&u)?))),
        "get_uid_list_by_group" => a.name("group").and_then(|g| Ok(json!(api.get_uid_list_by_group(&g)?))),
        "get_uid_count_by_group" => a.name("group").and_then(|g| Ok(json!(api.get_uid_count_by_group(&g)?))),
        "get_client_id_list_by_group" => {
            a.name("group").and_then(|g| Ok(ids_json(&api.get_client_id_list_by_group(&g)?)))
        }
        "batch_get_client_id_by_uid" => a.names("uids").and_then(|u| {
            let found = api.batch_get_client_id_by_uid(&refs(&u))?;
            Ok(map_json(found, |ids| ids_json(&ids)))
        }),
        "is_uids_online" => {
            a.names("uids").and_then(|u| Ok(map_json(api.is_uids_online(&refs(&u))?, Json::Bool)))
        }
        "batch_get_client_count_by_group" => a
            .names("groups")
            .and_then(|g| Ok(map_json(api.batch_get_client_count_by_group(&refs(&g))?, |n| json!(n)))),
        _ => return None,
    };
    Some(r)
}

fn listings(api: &mut Api<Replay<'_>>, name: &str) -> Option<Out> {
    let r: Result<Json, ApiError> = match name {
        "get_all_client_sessions" => {
            return Some(api.get_all_client_sessions().map_err(CallError::from).and_then(sessions_json));
        }
        "get_all_client_count" | "get_all_client_id_count" => api.get_all_client_count().map(|n| json!(n)),
        "get_all_uid_list" => api.get_all_uid_list().map(|l| json!(l)),
        "get_all_uid_count" => api.get_all_uid_count().map(|n| json!(n)),
        "get_all_client_id_list" => api.get_all_client_id_list().map(|l| ids_json(&l)),
        "get_all_group_id_list" => api.get_all_group_id_list().map(|l| json!(l)),
        "get_all_group_uid_list" => api.get_all_group_uid_list().map(|m| map_json(m, |u| json!(u))),
        "get_all_group_uid_count" => api.get_all_group_uid_count().map(|m| map_json(m, |n| json!(n))),
        "get_all_group_client_id_list" => {
            api.get_all_group_client_id_list().map(|m| map_json(m, |l| ids_json(&l)))
        }
        "get_all_group_client_id_count" => {
            api.get_all_group_client_id_count().map(|m| map_json(m, |n| json!(n)))
        }
        _ => return None,
    };
    Some(r.map_err(CallError::from))
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn ids_json(ids: &[ClientId]) -> Json {
    Json::Array(ids.iter().map(|id| Json::String(id.to_string())).collect())
}

fn map_json<V>(pairs: Vec<(String, V)>, f: impl Fn(V) -> Json) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k, f(v))).collect())
}

/// A PHP array as JSON, the way PHP's `json_encode` renders it (lists as arrays).
fn array_json(a: &Array) -> Out {
    php::json_encode(&Value::Array(a.clone()))
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| CallError::new(502, "bad_reply", "a session holds a value JSON cannot express"))
}

fn sessions_json(list: Vec<(ClientId, Array)>) -> Out {
    let mut m = Map::new();
    for (id, s) in list {
        m.insert(id.to_string(), array_json(&s)?);
    }
    Ok(Json::Object(m))
}

/// A JSON value as the PHP value `json_decode($v, true)` gives.
fn php_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)))
        }
        Json::String(s) => Value::Str(s.as_bytes().to_vec()),
        Json::Array(items) => Value::Array(
            items.iter().map(php_value).enumerate().map(|(i, v)| (Key::Int(i as i64), v)).collect(),
        ),
        Json::Object(m) => Value::Array(m.iter().map(|(k, v)| (Key::from_text(k), php_value(v))).collect()),
    }
}

/// Typed access to the body fields; every error names the field.
struct Args<'a>(&'a Map<String, Json>);

impl Args<'_> {
    /// A required string (numbers are accepted and written in decimal, as PHP would).
    fn text(&self, k: &str) -> Result<String, CallError> {
        self.opt_text(k)?.ok_or_else(|| CallError::field(k, "missing"))
    }

    fn opt_text(&self, k: &str) -> Result<Option<String>, CallError> {
        match self.0.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(Json::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(CallError::field(k, "expected a string")),
        }
    }

    /// A uid or group name.
    fn name(&self, k: &str) -> Result<String, CallError> {
        self.text(k)
    }

    /// One name or a list of names.
    fn names(&self, k: &str) -> Result<Vec<String>, CallError> {
        match self.0.get(k) {
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s.clone()),
                    Json::Number(n) => Ok(n.to_string()),
                    _ => Err(CallError::field(k, "expected a list of strings")),
                })
                .collect(),
            _ => Ok(vec![self.text(k)?]),
        }
    }

    fn id(&self, k: &str) -> Result<ClientId, CallError> {
        let s = self.text(k)?;
        ClientId::parse(&s)
            .ok_or_else(|| CallError::field(k, &format!("{s:?} is not a client_id (20 hex characters)")))
    }

    /// An optional client_id or list of client_ids.
    fn ids_opt(&self, k: &str) -> Result<Option<Vec<ClientId>>, CallError> {
        if matches!(self.0.get(k), None | Some(Json::Null)) {
            return Ok(None);
        }
        let names = self.names(k)?;
        let ids = names.iter().map(|s| {
            ClientId::parse(s)
                .ok_or_else(|| CallError::field(k, &format!("{s:?} is not a client_id (20 hex characters)")))
        });
        Ok(Some(ids.collect::<Result<_, _>>()?))
    }

    fn flag(&self, k: &str) -> Result<bool, CallError> {
        match self.0.get(k) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => Err(CallError::field(k, "expected true or false")),
        }
    }

    fn opts(&self) -> Result<SendOpts, CallError> {
        Ok(SendOpts { raw: self.flag("raw")?, binary: self.flag("binary")? })
    }

    /// A session: a JSON object (or `[]`/`null` for an empty one).
    fn session(&self, k: &str) -> Result<Array, CallError> {
        match self.0.get(k) {
            Some(Json::Object(_)) => match php_value(&self.0[k]) {
                Value::Array(a) => Ok(a),
                _ => Ok(Array::new()),
            },
            Some(Json::Array(a)) if a.is_empty() => Ok(Array::new()),
            Some(Json::Null) => Ok(Array::new()),
            None => Err(CallError::field(k, "missing")),
            Some(_) => Err(CallError::field(k, "expected a JSON object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn bad_bodies_name_the_field_and_send_nothing() {
        assert_eq!(Call::parse("nope", b"{}").unwrap_err().status, 404);
        assert_eq!(Call::parse("send_to_all", b"{").unwrap_err().code, "bad_json");
        assert_eq!(Call::parse("send_to_all", b"[1]").unwrap_err().code, "bad_json");
        let e = Call::parse("send_to_all", br#"{"mesage":"x"}"#).unwrap_err();
        assert!(e.message.contains("`mesage`"), "{e:?}");
        let call = Call::parse("send_to_client", br#"{"client_id":"zz","message":"x"}"#).unwrap();
        match step(&call, Some(&[gw(1)]), &[], None) {
            Step::Done { result: Err(e), sends } => {
                assert!(e.message.contains("`client_id`"), "{e:?}");
                assert!(sends.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let call = Call::parse("send_to_all", br#"{"message":"x","raw":"yes"}"#).unwrap();
        assert!(
            matches!(step(&call, Some(&[gw(1)]), &[], None), Step::Done { result: Err(e), .. } if e.message.contains("`raw`"))
        );
    }

    #[test]
    fn a_query_runs_twice_and_sends_go_to_every_gateway() {
        let call = Call::parse("get_all_client_count", b"").unwrap();
        assert!(matches!(step(&call, None, &[], None), Step::NeedGateways));
        let gws = [gw(2300), gw(2301)];
        let Step::Query { gateways, packet } = step(&call, Some(&gws), &[], None) else { panic!() };
        assert_eq!(gateways, gws);
        assert!(packet.len() >= crate::wire::packet::HEADER_LEN);
        let replies = vec![(gws[0], b"i:2;".to_vec()), (gws[1], b"i:3;".to_vec())];
        match step(&call, Some(&gws), &[replies], None) {
            Step::Done { result, sends } => {
                assert_eq!(result, Ok(json!(5)));
                assert!(sends.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let call = Call::parse("send_to_all", br#"{"message":"hi"}"#).unwrap();
        match step(&call, Some(&gws), &[], None) {
            Step::Done { result, sends } => {
                assert_eq!(result, Ok(Json::Bool(true)));
                assert_eq!(sends.iter().map(|(g, _)| *g).collect::<Vec<_>>(), gws);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unwritten_sends_fail_targeted_calls_only() {
        let gws = [gw(2300), gw(2301)];
        let id = crate::api::ClientId::new(0x7f00_0001, 2300, 1).to_string();
        let call =
            Call::parse("send_to_client", format!(r#"{{"client_id":"{id}","message":"m"}}"#).as_bytes())
                .unwrap();
        let Step::Done { sends, .. } = step(&call, Some(&gws), &[], None) else { panic!() };
        assert_eq!(sends.len(), 1);
        match step(&call, Some(&gws), &[], Some(&[false])) {
            Step::Done { result: Err(e), sends } => {
                assert!(e.code == "gateway_unreachable" && sends.is_empty(), "{e:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(step(&call, Some(&gws), &[], Some(&[true])), Step::Done { result: Ok(_), .. }));
        // A broadcast ignores a gateway that could not be reached, as GatewayClient does.
        let call = Call::parse("send_to_all", br#"{"message":"m"}"#).unwrap();
        assert!(matches!(
            step(&call, Some(&gws), &[], Some(&[true, false])),
            Step::Done { result: Ok(_), .. }
        ));
    }

    #[test]
    fn sessions_become_php_arrays() {
        let v = php_value(&json!({"a": 1, "7": [true, null], "f": 1.5}));
        let a = v.as_array().unwrap();
        assert_eq!(a.get(&Key::from_text("a")), Some(&Value::Int(1)));
        assert!(a.get(&Key::Int(7)).unwrap().as_array().unwrap().is_list());
        assert_eq!(array_json(a).unwrap(), json!({"a": 1, "7": [true, null], "f": 1.5}));
    }
}
