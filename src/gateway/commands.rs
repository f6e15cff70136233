//! Executing what business workers and GatewayClients send to a gateway (`docs/protocol.md`
//! §3): sends, closes, sessions, uid/group changes, worker registration; queries are
//! answered by `queries`.

use std::borrow::Cow;
use std::collections::HashSet;

use log::{info, warn};
use serde_json::Value as Json;

use super::client::{Route, SendError};
use super::inner::Kind;
use super::{Gateway, queries};
use crate::config::Proto;
use crate::stats::Slot;
use crate::wire::packet::{self, Header, Packet, cmd, flag};
use crate::wire::php::{self, JsonFlags, Value};
use crate::wire::register::parse_connect_body;
use crate::wire::secret_eq;

/// What a worker asked to send.
enum Message<'a> {
    /// PHP `null`.
    Null,
    Bytes(Cow<'a, [u8]>),
}

impl Gateway {
    /// Execute one packet received on inner link `from`.
    pub(super) fn exec(&mut self, from: usize, p: &Packet<'_>) {
        let Some(inner) = self.links.get(from) else { return };
        let c = p.header.cmd;
        if !inner.authorized && c != cmd::WORKER_CONNECT && c != cmd::GATEWAY_CLIENT_CONNECT {
            if self.logs.refused.first("unauthorized", &inner.peer) {
                warn!(
                    "gateway: Unauthorized request from {} (cmd {c}), closing (logged once per peer)",
                    inner.peer
                );
            }
            Slot::bump(&self.stats.slot().bad_input);
            self.links.kill(from);
            return;
        }
        let id = p.header.connection_id;
        match c {
            cmd::SEND_TO_ONE => {
                if let Some(key) = self.clients.key_of(id) {
                    let msg = message(p);
                    self.send_one(key, &msg, p.header.flag);
                }
            }
            cmd::SEND_TO_ALL => self.send_all(p),
            cmd::KICK => self.kick(id, p),
            cmd::DESTROY => {
                if let Some(key) = self.clients.key_of(id) {
                    self.clients.mark_dead(key);
                }
            }
            cmd::UPDATE_SESSION => self.update_session(id, p.ext),
            cmd::SET_SESSION => self.set_session(id, p.ext),
            cmd::BIND_UID => {
                self.count_membership_command(from);
                self.bind_uid(id, p.ext);
            }
            cmd::UNBIND_UID => self.unbind_uid(id),
            cmd::SEND_TO_UID => self.send_to_uid(p),
            cmd::JOIN_GROUP => {
                self.count_membership_command(from);
                self.join_group(id, p.ext);
            }
            cmd::LEAVE_GROUP => self.leave_group(id, p.ext),
            cmd::SEND_TO_GROUP => self.send_to_group(p),
            cmd::UNGROUP => self.ungroup(p.ext),
            cmd::WORKER_CONNECT => self.worker_connect(from, p.body),
            cmd::GATEWAY_CLIENT_CONNECT => self.gateway_client_connect(from, p.body),
            cmd::WORKER_DRAIN => self.worker_drain(from),
            cmd::MEMBERSHIP_SUBSCRIBE => self.subscribe(from, p.ext),
            cmd::PING => {}
            q if cmd::is_query(q) => {
                let reply = queries::answer(&self.clients, &self.index, p);
                if let Some(out) = self.links.out(from) {
                    packet::encode_reply(out.vec(), &reply);
                }
            }
            other => {
                if let Some(more) = self.logs.gate.check("unknown_cmd") {
                    warn!("gateway inner pack err cmd={other} from {}{more}", inner.peer);
                }
                Slot::bump(&self.stats.slot().bad_input);
            }
        }
        // A name that appeared or disappeared is told before anything else is queued.
        self.publish_membership();
    }

    fn send_one(&mut self, key: usize, msg: &Message<'_>, flags: u8) {
        let limit = self.settings.limits.send_to_client_buffer_size;
        let raw = flags & flag::NOT_CALL_ENCODE != 0;
        let binary = flags & flag::BINARY != 0;
        let payload = payload(msg, self.me.proto);
        let res = self.clients.send_with(key, |c| c.send(payload, raw, binary, limit));
        if res == Some(Err(SendError::BufferFull)) {
            self.send_failed(key);
        }
    }

    /// Encode `msg` once for this gateway's protocol into `self.bufs.encoded`.
    fn encode_once(&mut self, msg: &Message<'_>, flags: u8) {
        let payload = payload(msg, self.me.proto);
        self.bufs.encoded.clear();
        if flags & flag::NOT_CALL_ENCODE != 0 {
            self.bufs.encoded.extend_from_slice(payload);
            return;
        }
        match self.me.proto {
            Proto::Text => crate::net::text::encode(&mut self.bufs.encoded, payload),
            Proto::Frame => crate::net::frame::encode(&mut self.bufs.encoded, payload),
            Proto::WebSocket => {
                let op = if flags & flag::BINARY != 0 {
                    crate::net::websocket::OP_BINARY
                } else {
                    crate::net::websocket::OP_TEXT
                };
                crate::net::websocket::encode_frame(&mut self.bufs.encoded, op, payload);
            }
        }
    }

    /// Queue the already encoded broadcast for connection `id`.
    fn send_encoded(&mut self, id: u32) {
        let Some(key) = self.clients.key_of(id) else { return };
        let limit = self.settings.limits.send_to_client_buffer_size;
        let encoded = &self.bufs.encoded;
        let res = self.clients.send_with(key, |c| c.send_encoded(encoded, limit));
        if res == Some(Err(SendError::BufferFull)) {
            self.send_failed(key);
        }
    }

    fn send_all(&mut self, p: &Packet<'_>) {
        let msg = message(p);
        self.encode_once(&msg, p.header.flag);
        let targets: Vec<u32> = if p.ext.is_empty() {
            self.clients.iter().map(|(_, c)| c.id).collect()
        } else {
            let Ok(json) = serde_json::from_slice::<Json>(p.ext) else {
                warn!("gateway: SEND_TO_ALL with undecodable ext_data; nothing sent");
                return;
            };
            if let Some(list) = json.get("connections") {
                json_ids(list, false)
            } else if let Some(ex) = json.get("exclude") {
                let ex: HashSet<u32> = json_ids(ex, true).into_iter().collect();
                self.clients.iter().map(|(_, c)| c.id).filter(|id| !ex.contains(id)).collect()
            } else {
                self.clients.iter().map(|(_, c)| c.id).collect()
            }
        };
        for id in targets {
            self.send_encoded(id);
        }
    }

    fn kick(&mut self, id: u32, p: &Packet<'_>) {
        let Some(key) = self.clients.key_of(id) else { return };
        let msg = message(p);
        if let Message::Bytes(_) = msg {
            self.send_one(key, &msg, p.header.flag);
        }
        if let Some(c) = self.clients.get_mut(key) {
            c.drop_early_output();
        }
        self.close_client(key);
    }

    fn update_session(&mut self, id: u32, partial: &[u8]) {
        let max = self.settings.limits.max_session_size;
        let Some(c) = self.clients.by_id_mut(id) else { return };
        if c.session.is_empty() {
            if partial.len() <= max {
                c.session = partial.to_vec();
            }
            return;
        }
        let merged = match (php::unserialize(&c.session), php::unserialize(partial)) {
            (Ok(Value::Array(mut base)), Ok(Value::Array(part))) => {
                php::array_replace_recursive(&mut base, &part);
                php::serialize_array(&base)
            }
            _ => {
                warn!("gateway: UPDATE_SESSION for client {id} with undecodable session data; ignored");
                return;
            }
        };
        if merged.len() > max {
            warn!("gateway: session of client {id} would exceed gateway.limits.max_session_size; ignored");
            return;
        }
        c.session = merged;
    }

    fn set_session(&mut self, id: u32, session: &[u8]) {
        if session.len() > self.settings.limits.max_session_size {
            warn!("gateway: session for client {id} exceeds gateway.limits.max_session_size; ignored");
            Slot::bump(&self.stats.slot().limit_size);
            return;
        }
        if let Some(c) = self.clients.by_id_mut(id) {
            c.session = session.to_vec();
        }
    }

    fn bind_uid(&mut self, id: u32, uid: &[u8]) {
        if uid.is_empty() {
            warn!("gateway: bindUid with an empty uid for client {id}; ignored");
            return;
        }
        if uid.len() > self.settings.limits.max_uid_len {
            if let Some(more) = self.logs.gate.check("uid_len") {
                warn!(
                    "gateway: uid of {} bytes for client {id} exceeds gateway.limits.max_uid_len; ignored{more}",
                    uid.len()
                );
            }
            Slot::bump(&self.stats.slot().limit_index);
            return;
        }
        if let Some(c) = self.clients.by_id_mut(id) {
            self.index.bind_uid(c, uid);
        }
    }

    fn unbind_uid(&mut self, id: u32) {
        if let Some(c) = self.clients.by_id_mut(id) {
            self.index.unbind_uid(c);
        }
    }

    fn send_to_uid(&mut self, p: &Packet<'_>) {
        let uids = json_names(p.ext);
        let msg = message(p);
        self.encode_once(&msg, p.header.flag);
        let mut targets = Vec::new();
        for uid in uids {
            if let Some(m) = self.index.uids.get(&uid) {
                targets.extend(m.ids());
            }
        }
        for id in targets {
            self.send_encoded(id);
        }
    }

    fn join_group(&mut self, id: u32, group: &[u8]) {
        if group.is_empty() {
            warn!("gateway: joinGroup with an empty group for client {id}; ignored");
            return;
        }
        let limits = &self.settings.limits;
        let Some(c) = self.clients.by_id_mut(id) else { return };
        // A name over the length limit may join no group.
        let max = if group.len() > limits.max_uid_len { 0 } else { limits.max_groups_per_client };
        if !self.index.join(c, group, max) {
            Slot::bump(&self.stats.slot().limit_index);
            if let Some(more) = self.logs.gate.check("groups") {
                warn!(
                    "gateway: client {id} may not join more groups (gateway.limits.max_groups_per_client / max_uid_len); ignored{more}"
                );
            }
        }
    }

    fn leave_group(&mut self, id: u32, group: &[u8]) {
        if let Some(c) = self.clients.by_id_mut(id) {
            self.index.leave(c, group);
        }
    }

    fn send_to_group(&mut self, p: &Packet<'_>) {
        let Ok(json) = serde_json::from_slice::<Json>(p.ext) else {
            warn!("gateway: SEND_TO_GROUP with undecodable ext_data; nothing sent");
            return;
        };
        let groups = json.get("group").map(json_strings).unwrap_or_default();
        let exclude: HashSet<u32> =
            json.get("exclude").map(|e| json_ids(e, true)).unwrap_or_default().into_iter().collect();
        let msg = message(p);
        self.encode_once(&msg, p.header.flag);
        let mut targets = Vec::new();
        for g in groups {
            if let Some(m) = self.index.groups.get(&g) {
                targets.extend(m.ids().filter(|id| !exclude.contains(id)));
            }
        }
        for id in targets {
            self.send_encoded(id);
        }
    }

    fn ungroup(&mut self, group: &[u8]) {
        self.index.ungroup(&mut self.clients, group);
    }

    fn worker_connect(&mut self, from: usize, body: &[u8]) {
        let Some((Some(worker_key), secret)) = parse_connect_body(body) else {
            self.refuse(from, "CMD_WORKER_CONNECT without a worker_key");
            return;
        };
        if !secret_eq(secret.as_bytes(), self.settings.secret.as_bytes()) {
            self.refuse(from, "worker secret key does not match");
            return;
        }
        let Some(inner) = self.links.get_mut(from) else { return };
        let ip = inner.peer.rsplit_once(':').map_or("127.0.0.1", |(ip, _)| ip).to_string();
        let key = format!("{ip}:{worker_key}");
        inner.kind = Kind::Worker { key: key.clone(), draining: false };
        inner.authorized = true;
        let serial = inner.serial;
        // GatewayWorker 4: a second connection with the same key evicts the older one. The
        // worker redialled (its side of the older link timed out): the whole events still
        // queued on the older link go first on the new one instead of being dropped with it.
        for k in self.links.others_with_key(from, &key) {
            let moved = self.links.take_whole_queued(k);
            warn!(
                "gateway: business worker {key} connected again; closing its older link ({} bytes of events queued on it go on the new link)",
                moved.len()
            );
            self.links.kill(k);
            self.router.remove(k);
            if !moved.is_empty()
                && let Some(out) = self.links.out(from)
            {
                out.prepend(&moved);
            }
        }
        self.router.add(Route { key: from, serial });
        info!("gateway: business worker {key} connected");
        self.replay_parked();
    }

    fn gateway_client_connect(&mut self, from: usize, body: &[u8]) {
        let secret = parse_connect_body(body).map(|(_, s)| s).unwrap_or_default();
        if !secret_eq(secret.as_bytes(), self.settings.secret.as_bytes()) {
            self.refuse(from, "GatewayClient secret key does not match");
            return;
        }
        if let Some(inner) = self.links.get_mut(from) {
            inner.authorized = true;
            if inner.kind == Kind::Unknown {
                inner.kind = Kind::Client;
            }
        }
    }

    /// A worker finishing (reload): no new events for it; acknowledge on the same link so it
    /// knows every event routed to it came before the acknowledgement.
    fn worker_drain(&mut self, from: usize) {
        let Some(inner) = self.links.table.dirty_mut(from) else { return };
        if let Kind::Worker { key, draining } = &mut inner.kind {
            *draining = true;
            info!("gateway: business worker {key} is draining");
            let ack = Header::command(cmd::WORKER_DRAIN, 0, flag::BODY_IS_SCALAR);
            packet::encode(inner.conn.out.vec(), &ack, b"", b"");
            self.router.set_draining(from);
        }
    }

    fn refuse(&mut self, from: usize, why: &str) {
        if let Some(inner) = self.links.get(from)
            && self.logs.refused.first(why, &inner.peer)
        {
            warn!("gateway: {why} (from {}), closing (logged once per peer)", inner.peer);
        }
        Slot::bump(&self.stats.slot().bad_input);
        self.links.kill(from);
    }
}

/// The message of a send command: raw bytes when flagged scalar, else PHP-unserialized
/// (arrays become JSON as workerman 5's websocket encoder does).
fn message<'a>(p: &Packet<'a>) -> Message<'a> {
    if p.header.flag & flag::BODY_IS_SCALAR != 0 {
        return Message::Bytes(Cow::Borrowed(p.body));
    }
    match php::unserialize(p.body) {
        Ok(Value::Null) => Message::Null,
        Ok(Value::Str(s)) => Message::Bytes(Cow::Owned(s)),
        Ok(Value::Int(i)) => Message::Bytes(Cow::Owned(i.to_string().into_bytes())),
        Ok(Value::Bool(b)) => Message::Bytes(Cow::Borrowed(if b { b"1" } else { b"" })),
        Ok(v) => Message::Bytes(Cow::Owned(
            php::json_encode_with(&v, JsonFlags::UNESCAPED_UNICODE).unwrap_or_default(),
        )),
        Err(e) => {
            warn!("gateway: undecodable message body ({e}); sending nothing");
            Message::Null
        }
    }
}

/// Bytes a send command puts on the wire for `msg` (PHP null as workerman sends it).
fn payload<'m>(msg: &'m Message<'_>, proto: Proto) -> &'m [u8] {
    match msg {
        Message::Bytes(b) => b,
        Message::Null if proto == Proto::WebSocket => b"null",
        Message::Null => b"",
    }
}

/// Connection ids from a JSON list or map: the values, or the keys when `keys` is set
/// (GatewayWorker's `exclude` map is `{"id": id}`; either side works).
fn json_ids(v: &Json, keys: bool) -> Vec<u32> {
    let num = |j: &Json| match j {
        Json::Number(n) => n.as_u64().map(|n| n as u32),
        Json::String(s) => s.parse().ok(),
        _ => None,
    };
    match v {
        Json::Array(a) => a.iter().filter_map(num).collect(),
        Json::Object(o) if keys => o.keys().filter_map(|k| k.parse().ok()).collect(),
        Json::Object(o) => o.values().filter_map(num).collect(),
        other => num(other).into_iter().collect(),
    }
}

/// Names (uids, groups) from a JSON list of strings/numbers.
fn json_names(ext: &[u8]) -> Vec<Vec<u8>> {
    serde_json::from_slice::<Json>(ext).map(|j| json_strings(&j)).unwrap_or_default()
}

fn json_strings(v: &Json) -> Vec<Vec<u8>> {
    let one = |j: &Json| match j {
        Json::String(s) => Some(s.as_bytes().to_vec()),
        Json::Number(n) => Some(n.to_string().into_bytes()),
        _ => None,
    };
    match v {
        Json::Array(a) => a.iter().filter_map(one).collect(),
        Json::Object(o) => o.values().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}
