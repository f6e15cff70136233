//! The Gateway API (GatewayWorker's `Lib\Gateway`, `docs/protocol.md` §3) over any
//! `Transport`: business workers and the blocking `GatewayClient` share this code.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use super::client_id::ClientId;
use super::membership::Names;
use super::transport::{ApiError, Pkt, Transport};
use crate::wire::packet::{cmd, flag};
use crate::wire::php::{self, Array, Key, Value};

/// How a message is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOpts {
    /// Write the bytes to the client as they are, without protocol encoding (`$raw`).
    pub raw: bool,
    /// WebSocket: send a binary frame instead of a text frame.
    pub binary: bool,
}

impl SendOpts {
    /// Encoded by the client's protocol; a websocket text frame.
    pub const TEXT: SendOpts = SendOpts { raw: false, binary: false };
    /// Encoded by the client's protocol; a websocket binary frame.
    pub const BINARY: SendOpts = SendOpts { raw: false, binary: true };
    /// The bytes as they are, no protocol encoding.
    pub const RAW: SendOpts = SendOpts { raw: true, binary: false };

    fn flag(self) -> u8 {
        flag::BODY_IS_SCALAR
            | if self.raw { flag::NOT_CALL_ENCODE } else { 0 }
            | if self.binary { flag::BINARY } else { 0 }
    }
}

/// Anything naming a client: a `ClientId` or its 20-hex-char string.
pub trait ToClientId {
    /// The client id this names, or [`ApiError::BadClientId`].
    fn to_client_id(&self) -> Result<ClientId, ApiError>;
}

impl ToClientId for ClientId {
    fn to_client_id(&self) -> Result<ClientId, ApiError> {
        Ok(*self)
    }
}

impl ToClientId for &ClientId {
    fn to_client_id(&self) -> Result<ClientId, ApiError> {
        Ok(**self)
    }
}

impl ToClientId for str {
    fn to_client_id(&self) -> Result<ClientId, ApiError> {
        ClientId::parse(self).ok_or_else(|| ApiError::BadClientId(self.chars().take(64).collect()))
    }
}

impl ToClientId for &str {
    fn to_client_id(&self) -> Result<ClientId, ApiError> {
        (**self).to_client_id()
    }
}

impl ToClientId for String {
    fn to_client_id(&self) -> Result<ClientId, ApiError> {
        self.as_str().to_client_id()
    }
}

/// `{"<id>":<id>,...}` as PHP `json_encode([id => id])` writes it.
fn id_map(ids: &[u32]) -> String {
    let items: Vec<String> = ids.iter().map(|id| format!("\"{id}\":{id}")).collect();
    format!("{{{}}}", items.join(","))
}

/// JSON list of names (PHP `json_encode` of strings).
fn name_list(names: &[&str]) -> String {
    serde_json::Value::Array(names.iter().map(|n| serde_json::Value::String(n.to_string())).collect())
        .to_string()
}

fn key_text(k: &Key) -> String {
    String::from_utf8_lossy(&k.to_bytes()).into_owned()
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) if !s.is_empty() => Some(String::from_utf8_lossy(s).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn non_empty(name: &str, what: &'static str) -> Result<(), ApiError> {
    // GatewayWorker drops `0`, `"0"` and `""` (PHP `empty()`) before sending.
    if name.is_empty() || name == "0" { Err(ApiError::EmptyName(what)) } else { Ok(()) }
}

/// The Gateway API over transport `T`.
pub struct Api<T: Transport> {
    pub(crate) t: T,
}

impl<T: Transport> Api<T> {
    /// The Gateway API over transport `t`.
    pub fn new(t: T) -> Api<T> {
        Api { t }
    }

    // ----- sending ------------------------------------------------------------------

    /// Send to every client of the cluster.
    pub fn send_to_all(&mut self, msg: impl AsRef<[u8]>) -> Result<(), ApiError> {
        self.send_to_all_opts(msg, None, &[], SendOpts::TEXT)
    }

    /// `sendToAll($msg, $client_id_array, $exclude_client_id, $raw)`: `only` limits the
    /// recipients (an empty list sends nothing), `exclude` skips some.
    pub fn send_to_all_opts(
        &mut self,
        msg: impl AsRef<[u8]>,
        only: Option<&[ClientId]>,
        exclude: &[ClientId],
        opts: SendOpts,
    ) -> Result<(), ApiError> {
        let msg = msg.as_ref();
        match only {
            Some(list) => {
                let mut per_gw: BTreeMap<SocketAddrV4, Vec<u32>> = BTreeMap::new();
                for id in list.iter().filter(|id| !exclude.contains(id)) {
                    per_gw.entry(id.gateway()).or_default().push(id.connection_id);
                }
                for (gw, ids) in per_gw {
                    let ext = format!("{{\"connections\":{}}}", id_map(&ids));
                    self.t.send(gw, Pkt::new(cmd::SEND_TO_ALL, 0, opts.flag(), ext.as_bytes(), msg))?;
                }
                Ok(())
            }
            None => {
                for gw in self.t.gateways()? {
                    let ids: Vec<u32> =
                        exclude.iter().filter(|id| id.gateway() == gw).map(|id| id.connection_id).collect();
                    let ext = if ids.is_empty() {
                        String::new()
                    } else {
                        format!("{{\"exclude\":{}}}", id_map(&ids))
                    };
                    let _ = self.t.send(gw, Pkt::new(cmd::SEND_TO_ALL, 0, opts.flag(), ext.as_bytes(), msg));
                }
                Ok(())
            }
        }
    }

    /// Send `msg` to one client (`Gateway::sendToClient`).
    pub fn send_to_client(&mut self, id: impl ToClientId, msg: impl AsRef<[u8]>) -> Result<(), ApiError> {
        self.send_to_client_opts(id, msg, SendOpts::TEXT)
    }

    /// [`Api::send_to_client`] with send options (raw, binary).
    pub fn send_to_client_opts(
        &mut self,
        id: impl ToClientId,
        msg: impl AsRef<[u8]>,
        opts: SendOpts,
    ) -> Result<(), ApiError> {
        let id = id.to_client_id()?;
        self.t
            .send(id.gateway(), Pkt::new(cmd::SEND_TO_ONE, id.connection_id, opts.flag(), b"", msg.as_ref()))
    }

    /// Send to every client bound to any of `uids`.
    pub fn send_to_uid(&mut self, uids: &[&str], msg: impl AsRef<[u8]>) -> Result<(), ApiError> {
        self.send_to_uid_opts(uids, msg, SendOpts::TEXT)
    }

    /// [`Api::send_to_uid`] with send options (raw, binary).
    pub fn send_to_uid_opts(
        &mut self,
        uids: &[&str],
        msg: impl AsRef<[u8]>,
        opts: SendOpts,
    ) -> Result<(), ApiError> {
        let list = name_list(uids);
        let p = Pkt::new(cmd::SEND_TO_UID, 0, opts.flag(), list.as_bytes(), msg.as_ref());
        for gw in self.t.gateways_for(Names::Uids(uids))? {
            let _ = self.t.send(gw, p);
        }
        Ok(())
    }

    /// Send to the members of `groups` except `exclude` (a client in two listed groups gets
    /// it twice, as in GatewayWorker).
    pub fn send_to_group(&mut self, groups: &[&str], msg: impl AsRef<[u8]>) -> Result<(), ApiError> {
        self.send_to_group_opts(groups, msg, &[], SendOpts::TEXT)
    }

    /// [`Api::send_to_group`] with send options (raw, binary).
    pub fn send_to_group_opts(
        &mut self,
        groups: &[&str],
        msg: impl AsRef<[u8]>,
        exclude: &[ClientId],
        opts: SendOpts,
    ) -> Result<(), ApiError> {
        if groups.is_empty() {
            return Err(ApiError::EmptyName("group"));
        }
        for g in groups {
            non_empty(g, "group")?;
        }
        let list = name_list(groups);
        for gw in self.t.gateways_for(Names::Groups(groups))? {
            let ids: Vec<u32> =
                exclude.iter().filter(|id| id.gateway() == gw).map(|id| id.connection_id).collect();
            let ex = if ids.is_empty() { "null".to_string() } else { id_map(&ids) };
            let ext = format!("{{\"group\":{list},\"exclude\":{ex}}}");
            let _ =
                self.t.send(gw, Pkt::new(cmd::SEND_TO_GROUP, 0, opts.flag(), ext.as_bytes(), msg.as_ref()));
        }
        Ok(())
    }

    /// Send `msg` (if any) and close the client once it is written.
    pub fn close_client(&mut self, id: impl ToClientId, msg: Option<&[u8]>) -> Result<(), ApiError> {
        let id = id.to_client_id()?;
        let p = match msg {
            Some(m) => Pkt::new(cmd::KICK, id.connection_id, flag::BODY_IS_SCALAR, b"", m),
            None => Pkt::new(cmd::KICK, id.connection_id, 0, b"", b"N;"),
        };
        self.t.send(id.gateway(), p)
    }

    /// Close at once, discarding anything queued (`destoryClient`).
    pub fn destroy_client(&mut self, id: impl ToClientId) -> Result<(), ApiError> {
        let id = id.to_client_id()?;
        self.t.send(id.gateway(), Pkt::new(cmd::DESTROY, id.connection_id, flag::BODY_IS_SCALAR, b"", b""))
    }

    // ----- uid and groups ----------------------------------------------------------------

    /// Bind the client to `uid` (`Gateway::bindUid`); a uid may have several clients.
    pub fn bind_uid(&mut self, id: impl ToClientId, uid: &str) -> Result<(), ApiError> {
        self.send_named(id, cmd::BIND_UID, "uid", uid)
    }

    /// Undo [`Api::bind_uid`].
    pub fn unbind_uid(&mut self, id: impl ToClientId, uid: &str) -> Result<(), ApiError> {
        self.send_named(id, cmd::UNBIND_UID, "uid", uid)
    }

    /// Add the client to `group` (`Gateway::joinGroup`).
    pub fn join_group(&mut self, id: impl ToClientId, group: &str) -> Result<(), ApiError> {
        self.send_named(id, cmd::JOIN_GROUP, "group", group)
    }

    /// Remove the client from `group`.
    pub fn leave_group(&mut self, id: impl ToClientId, group: &str) -> Result<(), ApiError> {
        self.send_named(id, cmd::LEAVE_GROUP, "group", group)
    }

    /// Remove every member from `group` and delete it, on every gateway.
    pub fn ungroup(&mut self, group: &str) -> Result<(), ApiError> {
        non_empty(group, "group")?;
        self.send_to_all_gateways(Pkt::new(cmd::UNGROUP, 0, flag::BODY_IS_SCALAR, group.as_bytes(), b""))
    }

    // ----- sessions ------------------------------------------------------------------------

    /// Replace a client's session.
    pub fn set_session(&mut self, id: impl ToClientId, session: &Array) -> Result<(), ApiError> {
        let bytes = if session.is_empty() { Vec::new() } else { php::serialize_array(session) };
        self.send_to_client_gateway(id, cmd::SET_SESSION, &bytes)
    }

    /// Merge into a client's session at the gateway (`array_replace_recursive`).
    pub fn update_session(&mut self, id: impl ToClientId, partial: &Array) -> Result<(), ApiError> {
        self.send_to_client_gateway(id, cmd::UPDATE_SESSION, &php::serialize_array(partial))
    }

    /// A client's session; `None` if the client is not online.
    pub fn get_session(&mut self, id: impl ToClientId) -> Result<Option<Array>, ApiError> {
        let id = id.to_client_id()?;
        let p = Pkt::new(cmd::GET_SESSION_BY_CLIENT_ID, id.connection_id, flag::BODY_IS_SCALAR, b"", b"");
        let Some((gw, reply)) = self.t.query(&[id.gateway()], p).pop() else {
            return Ok(None);
        };
        decode_session(gw, &reply)
    }

    // ----- queries --------------------------------------------------------------------------

    /// Whether the client is connected (`Gateway::isOnline`).
    pub fn is_online(&mut self, id: impl ToClientId) -> Result<bool, ApiError> {
        let id = id.to_client_id()?;
        let p = Pkt::new(cmd::IS_ONLINE, id.connection_id, flag::BODY_IS_SCALAR, b"", b"");
        Ok(self.t.query(&[id.gateway()], p).iter().any(|(_, r)| r.as_slice() == b"i:1;"))
    }

    /// Every client's session (`getAllClientSessions`).
    pub fn get_all_client_sessions(&mut self) -> Result<Vec<(ClientId, Array)>, ApiError> {
        let gws = self.t.gateways()?;
        self.sessions_on(&gws, Pkt::new(cmd::GET_ALL_CLIENT_SESSIONS, 0, flag::BODY_IS_SCALAR, b"", b""))
    }

    /// Sessions of the clients of `group`, by client id.
    pub fn get_client_sessions_by_group(&mut self, group: &str) -> Result<Vec<(ClientId, Array)>, ApiError> {
        let p = Pkt::new(cmd::GET_CLIENT_SESSIONS_BY_GROUP, 0, flag::BODY_IS_SCALAR, group.as_bytes(), b"");
        let gws = self.t.gateways_for(Names::Groups(&[group]))?;
        self.sessions_on(&gws, p)
    }

    /// Number of clients in `group`.
    pub fn get_client_count_by_group(&mut self, group: &str) -> Result<usize, ApiError> {
        let p = Pkt::new(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, flag::BODY_IS_SCALAR, group.as_bytes(), b"");
        // An empty group counts every client of every gateway.
        let gws = if group.is_empty() {
            self.t.gateways()?
        } else {
            self.t.gateways_for(Names::Groups(&[group]))?
        };
        let mut n = 0;
        for (gw, reply) in self.t.query(&gws, p) {
            n += unserialize(gw, &reply)?.as_int().unwrap_or(0).max(0) as usize;
        }
        Ok(n)
    }

    /// Number of clients of the whole cluster.
    pub fn get_all_client_count(&mut self) -> Result<usize, ApiError> {
        self.get_client_count_by_group("")
    }

    /// Client ids bound to `uid`.
    pub fn get_client_id_by_uid(&mut self, uid: &str) -> Result<Vec<ClientId>, ApiError> {
        let p = Pkt::new(cmd::GET_CLIENT_ID_BY_UID, 0, flag::BODY_IS_SCALAR, uid.as_bytes(), b"");
        let gws = self.t.gateways_for(Names::Uids(&[uid]))?;
        let mut out = Vec::new();
        for (gw, reply) in self.t.query(&gws, p) {
            if let Value::Array(a) = unserialize(gw, &reply)? {
                out.extend(a.iter().filter_map(|(_, v)| v.as_int()).map(|c| client_id(gw, c)));
            }
        }
        Ok(out)
    }

    /// Whether any client is bound to `uid`.
    pub fn is_uid_online(&mut self, uid: &str) -> Result<bool, ApiError> {
        Ok(!self.get_client_id_by_uid(uid)?.is_empty())
    }

    /// The uid bound to a client, if any.
    pub fn get_uid_by_client_id(&mut self, id: impl ToClientId) -> Result<Option<String>, ApiError> {
        let id = id.to_client_id()?;
        let ext = format!(
            "{{\"fields\":[\"uid\"],\"where\":{{\"connection_id\":{}}}}}",
            id_map(&[id.connection_id])
        );
        let p = Pkt::new(cmd::SELECT, 0, flag::BODY_IS_SCALAR, ext.as_bytes(), b"");
        let rows = self.select_on(&[id.gateway()], p)?;
        Ok(rows
            .into_iter()
            .find(|(c, _)| *c == id)
            .and_then(|(_, row)| row.get(&Key::from_text("uid")).and_then(value_text)))
    }

    /// Every bound uid, once each.
    pub fn get_all_uid_list(&mut self) -> Result<Vec<String>, ApiError> {
        let rows = self.select(&["uid"], None)?;
        Ok(unique(rows.iter().filter_map(|(_, r)| r.get(&Key::from_text("uid")).and_then(value_text))))
    }

    /// Number of distinct uids bound in the cluster.
    pub fn get_all_uid_count(&mut self) -> Result<usize, ApiError> {
        Ok(self.get_all_uid_list()?.len())
    }

    /// Uids bound to the clients of `group`.
    pub fn get_uid_list_by_group(&mut self, group: &str) -> Result<Vec<String>, ApiError> {
        let rows = self.select(&["uid"], Some(group))?;
        Ok(unique(rows.iter().filter_map(|(_, r)| r.get(&Key::from_text("uid")).and_then(value_text))))
    }

    /// Number of distinct uids in `group`.
    pub fn get_uid_count_by_group(&mut self, group: &str) -> Result<usize, ApiError> {
        Ok(self.get_uid_list_by_group(group)?.len())
    }

    /// Client ids in `group`.
    pub fn get_client_id_list_by_group(&mut self, group: &str) -> Result<Vec<ClientId>, ApiError> {
        Ok(self.select(&["uid"], Some(group))?.into_iter().map(|(id, _)| id).collect())
    }

    /// Every client id of the cluster.
    pub fn get_all_client_id_list(&mut self) -> Result<Vec<ClientId>, ApiError> {
        Ok(self.select(&["uid"], None)?.into_iter().map(|(id, _)| id).collect())
    }

    /// Every group name of the cluster, once each.
    pub fn get_all_group_id_list(&mut self) -> Result<Vec<String>, ApiError> {
        let p = Pkt::new(cmd::GET_GROUP_ID_LIST, 0, flag::BODY_IS_SCALAR, b"", b"");
        let mut names = Vec::new();
        for (gw, reply) in self.fan_out(p)? {
            if let Value::Array(a) = unserialize(gw, &reply)? {
                names.extend(a.iter().filter_map(|(_, v)| value_text(v)));
            }
        }
        Ok(unique(names.into_iter()))
    }

    /// group -> uids of its members.
    pub fn get_all_group_uid_list(&mut self) -> Result<Vec<(String, Vec<String>)>, ApiError> {
        let rows = self.select(&["uid", "groups"], None)?;
        let mut map: Vec<(String, Vec<String>)> = Vec::new();
        for (_, row) in rows {
            let Some(uid) = row.get(&Key::from_text("uid")).and_then(value_text) else { continue };
            for g in groups_of(&row) {
                add_to(&mut map, g, uid.clone());
            }
        }
        Ok(map)
    }

    /// Number of uids per group.
    pub fn get_all_group_uid_count(&mut self) -> Result<Vec<(String, usize)>, ApiError> {
        Ok(self.get_all_group_uid_list()?.into_iter().map(|(g, u)| (g, u.len())).collect())
    }

    /// group -> client_ids of its members.
    pub fn get_all_group_client_id_list(&mut self) -> Result<Vec<(String, Vec<ClientId>)>, ApiError> {
        let rows = self.select(&["groups"], None)?;
        let mut map: Vec<(String, Vec<ClientId>)> = Vec::new();
        for (id, row) in rows {
            for g in groups_of(&row) {
                add_to(&mut map, g, id);
            }
        }
        Ok(map)
    }

    /// Number of clients per group.
    pub fn get_all_group_client_id_count(&mut self) -> Result<Vec<(String, usize)>, ApiError> {
        Ok(self.get_all_group_client_id_list()?.into_iter().map(|(g, c)| (g, c.len())).collect())
    }

    /// uid -> client_ids, for several uids in one round trip (CMD 16).
    pub fn batch_get_client_id_by_uid(
        &mut self,
        uids: &[&str],
    ) -> Result<Vec<(String, Vec<ClientId>)>, ApiError> {
        let list = name_list(uids);
        let p = Pkt::new(cmd::BATCH_GET_CLIENT_ID_BY_UID, 0, flag::BODY_IS_SCALAR, list.as_bytes(), b"");
        let mut out: Vec<(String, Vec<ClientId>)> =
            uids.iter().map(|u| (u.to_string(), Vec::new())).collect();
        let gws = self.t.gateways_for(Names::Uids(uids))?;
        for (gw, reply) in self.t.query(&gws, p) {
            let Value::Array(a) = unserialize(gw, &reply)? else { continue };
            for (k, v) in a.iter() {
                let uid = key_text(k);
                let ids: Vec<ClientId> = v
                    .as_array()
                    .map(|l| l.iter().filter_map(|(_, c)| c.as_int()).map(|c| client_id(gw, c)).collect())
                    .unwrap_or_default();
                add_all(&mut out, uid, ids);
            }
        }
        Ok(out)
    }

    /// uid -> online, for several uids.
    pub fn is_uids_online(&mut self, uids: &[&str]) -> Result<Vec<(String, bool)>, ApiError> {
        Ok(self.batch_get_client_id_by_uid(uids)?.into_iter().map(|(u, ids)| (u, !ids.is_empty())).collect())
    }

    /// group -> member count, for several groups (CMD 28).
    pub fn batch_get_client_count_by_group(
        &mut self,
        groups: &[&str],
    ) -> Result<Vec<(String, usize)>, ApiError> {
        let list = name_list(groups);
        let p = Pkt::new(cmd::BATCH_GET_CLIENT_COUNT_BY_GROUP, 0, flag::BODY_IS_SCALAR, list.as_bytes(), b"");
        let mut out: Vec<(String, usize)> = groups.iter().map(|g| (g.to_string(), 0)).collect();
        let gws = self.t.gateways_for(Names::Groups(groups))?;
        for (gw, reply) in self.t.query(&gws, p) {
            let Value::Array(a) = unserialize(gw, &reply)? else { continue };
            for (k, v) in a.iter() {
                let g = key_text(k);
                let n = v.as_int().unwrap_or(0).max(0) as usize;
                match out.iter_mut().find(|(name, _)| *name == g) {
                    Some(e) => e.1 += n,
                    None => out.push((g, n)),
                }
            }
        }
        Ok(out)
    }

    // ----- plumbing -------------------------------------------------------------------------

    /// Send `command` carrying a uid or group name (refused when empty, as GatewayWorker does)
    /// to the client's gateway.
    fn send_named(
        &mut self,
        id: impl ToClientId,
        command: u8,
        what: &'static str,
        name: &str,
    ) -> Result<(), ApiError> {
        non_empty(name, what)?;
        self.send_to_client_gateway(id, command, name.as_bytes())
    }

    fn send_to_client_gateway(
        &mut self,
        id: impl ToClientId,
        command: u8,
        ext: &[u8],
    ) -> Result<(), ApiError> {
        let id = id.to_client_id()?;
        self.t.send(id.gateway(), Pkt::new(command, id.connection_id, flag::BODY_IS_SCALAR, ext, b""))
    }

    fn send_to_all_gateways(&mut self, p: Pkt<'_>) -> Result<(), ApiError> {
        for gw in self.t.gateways()? {
            let _ = self.t.send(gw, p);
        }
        Ok(())
    }

    fn fan_out(&mut self, p: Pkt<'_>) -> Result<Vec<(SocketAddrV4, Vec<u8>)>, ApiError> {
        let gws = self.t.gateways()?;
        Ok(self.t.query(&gws, p))
    }

    fn sessions_on(&mut self, gws: &[SocketAddrV4], p: Pkt<'_>) -> Result<Vec<(ClientId, Array)>, ApiError> {
        let mut out = Vec::new();
        for (gw, reply) in self.t.query(gws, p) {
            let Value::Array(a) = unserialize(gw, &reply)? else { continue };
            for (k, v) in a.iter() {
                let Key::Int(conn) = k else { continue };
                let session = match v.as_bytes() {
                    Some(b) if !b.is_empty() => decode_session(gw, b)?.unwrap_or_default(),
                    _ => Array::new(),
                };
                out.push((client_id(gw, *conn), session));
            }
        }
        Ok(out)
    }

    /// CMD_SELECT on every gateway: (client, row of fields).
    fn select(&mut self, fields: &[&str], group: Option<&str>) -> Result<Vec<(ClientId, Array)>, ApiError> {
        let fields = name_list(fields);
        let ext = match group {
            Some(g) => format!("{{\"fields\":{fields},\"where\":{{\"groups\":{}}}}}", name_list(&[g])),
            None => format!("{{\"fields\":{fields},\"where\":[]}}"),
        };
        let p = Pkt::new(cmd::SELECT, 0, flag::BODY_IS_SCALAR, ext.as_bytes(), b"");
        let gws = match group {
            Some(g) => self.t.gateways_for(Names::Groups(&[g]))?,
            None => self.t.gateways()?,
        };
        self.select_on(&gws, p)
    }

    fn select_on(&mut self, gws: &[SocketAddrV4], p: Pkt<'_>) -> Result<Vec<(ClientId, Array)>, ApiError> {
        let mut out = Vec::new();
        for (gw, reply) in self.t.query(gws, p) {
            let Value::Array(a) = unserialize(gw, &reply)? else { continue };
            for (k, v) in a.iter() {
                if let (Key::Int(conn), Value::Array(row)) = (k, v) {
                    out.push((client_id(gw, *conn), row.clone()));
                }
            }
        }
        Ok(out)
    }
}

fn client_id(gw: SocketAddrV4, conn: i64) -> ClientId {
    ClientId::new(u32::from(*gw.ip()), gw.port(), conn as u32)
}

fn unserialize(gw: SocketAddrV4, b: &[u8]) -> Result<Value, ApiError> {
    php::unserialize(b).map_err(|e| ApiError::BadReply(gw, e.to_string()))
}

/// A session reply: `N;` = no such client, else an array ('' counts as empty).
fn decode_session(gw: SocketAddrV4, b: &[u8]) -> Result<Option<Array>, ApiError> {
    match unserialize(gw, b)? {
        Value::Null => Ok(None),
        Value::Array(a) => Ok(Some(a)),
        Value::Str(s) if s.is_empty() => Ok(Some(Array::new())),
        other => Err(ApiError::BadReply(gw, format!("session is not an array: {other:?}"))),
    }
}

fn groups_of(row: &Array) -> Vec<String> {
    match row.get(&Key::from_text("groups")) {
        Some(Value::Array(g)) => g.keys().map(key_text).collect(),
        _ => Vec::new(),
    }
}

fn unique(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn add_to<V: PartialEq>(map: &mut Vec<(String, Vec<V>)>, key: String, v: V) {
    match map.iter_mut().find(|(k, _)| *k == key) {
        Some((_, list)) => {
            if !list.contains(&v) {
                list.push(v)
            }
        }
        None => map.push((key, vec![v])),
    }
}

fn add_all(map: &mut Vec<(String, Vec<ClientId>)>, key: String, ids: Vec<ClientId>) {
    match map.iter_mut().find(|(k, _)| *k == key) {
        Some((_, list)) => list.extend(ids),
        None => map.push((key, ids)),
    }
}
