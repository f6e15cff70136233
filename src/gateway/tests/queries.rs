//! One test per query command: the reply bytes as GatewayWorker serializes them.

use super::*;
use crate::wire::packet::{cmd, flag};

const SCALAR: u8 = flag::BODY_IS_SCALAR;

/// A gateway with a worker and two clients: `a` in group `room` with uid `ua` and a session,
/// `b` in groups `room` and `hall`.
fn populated() -> (Gw, FakeWorker, Vec<Client>, u32, u32) {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (a, ida) = connected(&gw, &mut w);
    let (b, idb) = connected(&gw, &mut w);
    w.command(cmd::BIND_UID, ida, SCALAR, b"ua", b"");
    w.command(cmd::JOIN_GROUP, ida, SCALAR, b"room", b"");
    w.command(cmd::JOIN_GROUP, idb, SCALAR, b"room", b"");
    w.command(cmd::JOIN_GROUP, idb, SCALAR, b"hall", b"");
    w.command(cmd::SET_SESSION, ida, SCALAR, b"a:1:{s:1:\"n\";i:7;}", b"");
    (gw, w, vec![a, b], ida, idb)
}

#[test]
fn is_online_and_session_by_client_id() {
    let (_gw, mut w, _clients, ida, idb) = populated();
    assert_eq!(w.query(cmd::IS_ONLINE, ida, b""), b"i:1;");
    assert_eq!(w.query(cmd::IS_ONLINE, ida + idb + 100, b""), b"i:0;");
    assert_eq!(w.query(cmd::GET_SESSION_BY_CLIENT_ID, ida, b""), b"a:1:{s:1:\"n\";i:7;}");
    assert_eq!(w.query(cmd::GET_SESSION_BY_CLIENT_ID, idb, b""), b"a:0:{}");
    assert_eq!(w.query(cmd::GET_SESSION_BY_CLIENT_ID, ida + idb + 100, b""), b"N;");
}

#[test]
fn all_sessions_and_sessions_by_group() {
    let (_gw, mut w, _clients, ida, idb) = populated();
    let all = format!("a:2:{{i:{ida};s:18:\"a:1:{{s:1:\"n\";i:7;}}\";i:{idb};s:0:\"\";}}");
    assert_eq!(w.query(cmd::GET_ALL_CLIENT_SESSIONS, 0, b""), all.as_bytes());
    let hall = format!("a:1:{{i:{idb};s:0:\"\";}}");
    assert_eq!(w.query(cmd::GET_CLIENT_SESSIONS_BY_GROUP, 0, b"hall"), hall.as_bytes());
}

#[test]
fn client_ids_by_uid_single_and_batch() {
    let (_gw, mut w, _clients, ida, _) = populated();
    let one = format!("a:1:{{i:0;i:{ida};}}");
    assert_eq!(w.query(cmd::GET_CLIENT_ID_BY_UID, 0, b"ua"), one.as_bytes());
    let batch = format!("a:2:{{s:2:\"ua\";a:1:{{i:0;i:{ida};}}s:2:\"ub\";a:0:{{}}}}");
    assert_eq!(w.query(cmd::BATCH_GET_CLIENT_ID_BY_UID, 0, b"[\"ua\",\"ub\"]"), batch.as_bytes());
}

#[test]
fn client_counts_by_group_single_batch_and_total() {
    let (_gw, mut w, _clients, _, _) = populated();
    assert_eq!(w.query(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"room"), b"i:2;");
    assert_eq!(w.query(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b""), b"i:2;");
    let batch = b"a:3:{s:4:\"room\";i:2;s:4:\"hall\";i:1;s:4:\"none\";i:0;}";
    assert_eq!(w.query(cmd::BATCH_GET_CLIENT_COUNT_BY_GROUP, 0, b"[\"room\",\"hall\",\"none\"]"), batch);
}

#[test]
fn group_id_list_in_creation_order() {
    let (_gw, mut w, _clients, _, _) = populated();
    assert_eq!(w.query(cmd::GET_GROUP_ID_LIST, 0, b""), b"a:2:{i:0;s:4:\"room\";i:1;s:4:\"hall\";}");
}

#[test]
fn select_fields_where_uid() {
    let (_gw, mut w, _clients, ida, _) = populated();
    let ext = b"{\"fields\":[\"uid\",\"session\"],\"where\":{\"uid\":[\"ua\"]}}";
    let row = format!(
        "a:1:{{i:{ida};a:2:{{s:3:\"uid\";s:2:\"ua\";s:7:\"session\";s:18:\"a:1:{{s:1:\"n\";i:7;}}\";}}}}"
    );
    assert_eq!(w.query(cmd::SELECT, 0, ext), row.as_bytes());
}
