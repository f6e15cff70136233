//! The demo chat room (workerman-chat's protocol, JSON text messages):
//!
//! client -> server
//! - `{"type":"login","client_name":"Ann","room_id":"1"}`: enter a room
//! - `{"type":"say","to_client_id":"all","content":"hi"}`: to the room
//! - `{"type":"say","to_client_id":"<client_id>","to_client_name":"Bob","content":"hi"}`: to one person
//! - `{"type":"list"}`: who is in the room
//! - `{"type":"pong"}`: heartbeat answer (ignored)
//!
//! server -> client
//! - `{"type":"login","client_id":..,"client_name":..,"time":..}` to the room, and to the
//!   newcomer the same plus `"client_list":{"<client_id>":"<name>",..}`
//! - `{"type":"say","from_client_id":..,"from_client_name":..,"to_client_id":"all"|id,"content":..,"time":..}`
//! - `{"type":"list","client_list":{..}}`
//! - `{"type":"logout","from_client_id":..,"from_client_name":..,"time":..}` to the room
//! - `{"type":"error","reason":..}` for a message it cannot use
//!
//! Names and contents are HTML-escaped, as workerman-chat does, since its page renders them.

use serde_json::{Map, Value as Json, json};

use crate::api::{ApiError, ClientId, Context, Events, Key, Value};

pub struct Chat;

fn now() -> String {
    crate::logging::timestamp()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#039;")
}

fn session_str(ctx: &mut Context<'_>, key: &str) -> Option<String> {
    let s = ctx.session().ok()?;
    s.get(&Key::from_text(key)).and_then(|v| v.as_bytes()).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn reply_error(ctx: &mut Context<'_>, reason: &str) {
    let _ = ctx.send_to_current_client(json!({"type": "error", "reason": reason}).to_string());
}

impl Chat {
    /// Names of the room's members: client_id -> name.
    fn members(ctx: &mut Context<'_>, room: &str) -> Result<Map<String, Json>, ApiError> {
        let mut list = Map::new();
        for (id, session) in ctx.get_client_sessions_by_group(room)? {
            let name = session.get(&Key::from_text("client_name")).and_then(Value::as_bytes).unwrap_or(b"");
            list.insert(id.to_string(), Json::String(String::from_utf8_lossy(name).into_owned()));
        }
        Ok(list)
    }

    fn login(&self, ctx: &mut Context<'_>, id: ClientId, msg: &Json) -> Result<(), ApiError> {
        let (Some(room), Some(name)) = (text(msg, "room_id"), text(msg, "client_name")) else {
            reply_error(ctx, "login needs room_id and client_name");
            return Ok(());
        };
        let name = escape(&name);
        let session = ctx.session()?;
        session.insert(Key::from_text("room_id"), Value::from(room.as_str()));
        session.insert(Key::from_text("client_name"), Value::from(name.as_str()));
        let mut list = Self::members(ctx, &room)?;
        list.insert(id.to_string(), Json::String(name.clone()));
        let mut notice =
            json!({"type": "login", "client_id": id.to_string(), "client_name": name, "time": now()});
        ctx.send_to_group(&[&room], notice.to_string())?;
        ctx.join_group(id, &room)?;
        notice["client_list"] = Json::Object(list);
        ctx.send_to_current_client(notice.to_string())
    }

    fn say(&self, ctx: &mut Context<'_>, id: ClientId, msg: &Json) -> Result<(), ApiError> {
        let (Some(room), Some(from)) = (session_str(ctx, "room_id"), session_str(ctx, "client_name")) else {
            reply_error(ctx, "log in first");
            return Ok(());
        };
        let content = escape(&text(msg, "content").unwrap_or_default()).replace('\n', "<br />\n");
        let to = text(msg, "to_client_id").unwrap_or_else(|| "all".into());
        if to == "all" {
            let out = json!({"type": "say", "from_client_id": id.to_string(), "from_client_name": from,
                "to_client_id": "all", "content": content, "time": now()});
            return ctx.send_to_group(&[&room], out.to_string());
        }
        let Ok(target) = to.parse::<ClientId>() else {
            reply_error(ctx, "to_client_id is not a client_id");
            return Ok(());
        };
        let to_name = escape(&text(msg, "to_client_name").unwrap_or_default());
        let mut out = json!({"type": "say", "from_client_id": id.to_string(), "from_client_name": from,
            "to_client_id": to, "content": format!("<b>says to you: </b>{content}"), "time": now()});
        ctx.send_to_client(target, out.to_string())?;
        out["content"] = Json::String(format!("<b>you say to {to_name}: </b>{content}"));
        ctx.send_to_current_client(out.to_string())
    }
}

fn text(msg: &Json, key: &str) -> Option<String> {
    match msg.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Events for Chat {
    fn on_message(&mut self, ctx: &mut Context<'_>, id: ClientId, message: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<Json>(message) else {
            reply_error(ctx, "messages are JSON objects");
            return;
        };
        let res = match msg.get("type").and_then(Json::as_str) {
            Some("pong") => Ok(()),
            Some("login") => self.login(ctx, id, &msg),
            Some("say") => self.say(ctx, id, &msg),
            Some("list") => match session_str(ctx, "room_id") {
                Some(room) => Self::members(ctx, &room).and_then(|list| {
                    ctx.send_to_current_client(json!({"type": "list", "client_list": list}).to_string())
                }),
                None => {
                    reply_error(ctx, "log in first");
                    Ok(())
                }
            },
            _ => {
                reply_error(ctx, "unknown type");
                Ok(())
            }
        };
        if let Err(e) = res {
            log::warn!("chat: {e}");
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, id: ClientId) {
        let (Some(room), Some(name)) = (session_str(ctx, "room_id"), session_str(ctx, "client_name")) else {
            return;
        };
        let out = json!({"type": "logout", "from_client_id": id.to_string(), "from_client_name": name, "time": now()});
        if let Err(e) = ctx.send_to_group(&[&room], out.to_string()) {
            log::warn!("chat: {e}");
        }
    }
}
