//! One test per query command: the reply bytes as GatewayWorker serializes them.

use super::*;
use crate::wire::packet::cmd;

/// Two clients: `a` in group `room` with uid `ua` and a session, `b` in `room` and `hall`.
fn populated() -> (Setup, u32, u32) {
    let mut s = setup(Proto::Text, 2);
    let (a, b) = (s.ids[0], s.ids[1]);
    s.w.scalar(cmd::BIND_UID, a, b"ua", b"");
    for (id, group) in [(a, "room"), (b, "room"), (b, "hall")] {
        s.w.scalar(cmd::JOIN_GROUP, id, group.as_bytes(), b"");
    }
    s.w.scalar(cmd::SET_SESSION, a, b"a:1:{s:1:\"n\";i:7;}", b"");
    (s, a, b)
}

/// The session of `a`, PHP-serialized as a string value.
const SESSION_A: &str = "s:18:\"a:1:{s:1:\"n\";i:7;}\"";

#[test]
fn is_online_and_session_by_client_id() {
    let (mut s, a, b) = populated();
    let gone = a + b + 100;
    s.w.ask(cmd::IS_ONLINE, a, b"", "i:1;");
    s.w.ask(cmd::IS_ONLINE, gone, b"", "i:0;");
    s.w.ask(cmd::GET_SESSION_BY_CLIENT_ID, a, b"", "a:1:{s:1:\"n\";i:7;}");
    s.w.ask(cmd::GET_SESSION_BY_CLIENT_ID, b, b"", "a:0:{}");
    s.w.ask(cmd::GET_SESSION_BY_CLIENT_ID, gone, b"", "N;");
}

#[test]
fn all_sessions_and_sessions_by_group() {
    let (mut s, a, b) = populated();
    s.w.ask(cmd::GET_ALL_CLIENT_SESSIONS, 0, b"", format!("a:2:{{i:{a};{SESSION_A};i:{b};s:0:\"\";}}"));
    s.w.ask(cmd::GET_CLIENT_SESSIONS_BY_GROUP, 0, b"hall", format!("a:1:{{i:{b};s:0:\"\";}}"));
}

#[test]
fn client_ids_by_uid_single_and_batch() {
    let (mut s, a, _) = populated();
    s.w.ask(cmd::GET_CLIENT_ID_BY_UID, 0, b"ua", format!("a:1:{{i:0;i:{a};}}"));
    let batch = format!("a:2:{{s:2:\"ua\";a:1:{{i:0;i:{a};}}s:2:\"ub\";a:0:{{}}}}");
    s.w.ask(cmd::BATCH_GET_CLIENT_ID_BY_UID, 0, b"[\"ua\",\"ub\"]", batch);
}

#[test]
fn client_counts_by_group_single_batch_and_total() {
    let (mut s, _, _) = populated();
    s.w.ask(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"room", "i:2;");
    s.w.ask(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"", "i:2;");
    let batch = "a:3:{s:4:\"room\";i:2;s:4:\"hall\";i:1;s:4:\"none\";i:0;}";
    s.w.ask(cmd::BATCH_GET_CLIENT_COUNT_BY_GROUP, 0, b"[\"room\",\"hall\",\"none\"]", batch);
}

#[test]
fn group_id_list_in_creation_order() {
    let (mut s, _, _) = populated();
    s.w.ask(cmd::GET_GROUP_ID_LIST, 0, b"", "a:2:{i:0;s:4:\"room\";i:1;s:4:\"hall\";}");
}

#[test]
fn select_fields_where_uid() {
    let (mut s, a, _) = populated();
    let ext = b"{\"fields\":[\"uid\",\"session\"],\"where\":{\"uid\":[\"ua\"]}}";
    let row = format!("a:1:{{i:{a};a:2:{{s:3:\"uid\";s:2:\"ua\";s:7:\"session\";{SESSION_A};}}}}");
    s.w.ask(cmd::SELECT, 0, ext, row);
}
