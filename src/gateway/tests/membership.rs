//! Membership notifications (ours): a subscribed link gets a snapshot, then every uid or
//! group that appears or disappears at the gateway, ordered with everything else on the
//! link, with the count of its own binds and joins the gateway ran.

use std::collections::BTreeSet;

use super::*;
use crate::wire::membership::{self, Kind, Op};
use crate::wire::packet::cmd;

/// What a subscribed link received before the reply to a query sent now: one entry per
/// notification, `(count, ops)` with ops as text (`S:token`, `E`, `R`, `+u:name`, `-g:name`).
fn notes(sub: &mut FakeWorker) -> Vec<(u32, Vec<String>)> {
    sub.scalar(cmd::IS_ONLINE, 0, b"", b"");
    let mut out = Vec::new();
    loop {
        let item = sub.until(|buf| {
            if buf.len() < 5 {
                return None;
            }
            if buf[4] != cmd::MEMBERSHIP {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                return (buf.len() >= 4 + len).then_some((None, 4 + len));
            }
            let (p, n) = packet::decode(buf, usize::MAX).unwrap()?;
            let ops = membership::ops(p.body).map(|op| text(op.unwrap())).collect();
            Some((Some((p.header.connection_id, ops)), n))
        });
        match item {
            Some(note) => out.push(note),
            None => return out,
        }
    }
}

fn text(op: Op<'_>) -> String {
    let kind = |k| if k == Kind::Uid { "u" } else { "g" };
    match op {
        Op::Snapshot(t) => format!("S:{}", String::from_utf8_lossy(t)),
        Op::End => "E".into(),
        Op::Reset => "R".into(),
        Op::Held(k, n) => format!("+{}:{}", kind(k), String::from_utf8_lossy(n)),
        Op::Gone(k, n) => format!("-{}:{}", kind(k), String::from_utf8_lossy(n)),
    }
}

/// Only the ops of `notes`, in order.
fn ops(notes: &[(u32, Vec<String>)]) -> Vec<String> {
    notes.iter().flat_map(|(_, ops)| ops.iter().cloned()).collect()
}

#[test]
fn a_subscriber_gets_a_snapshot_then_each_name_that_appears_or_disappears() {
    let Setup { gw, mut w, mut clients, ids } = setup(Proto::Text, 3);
    w.scalar(cmd::BIND_UID, ids[0], b"u1", b"");
    w.scalar(cmd::JOIN_GROUP, ids[1], b"g", b"");
    w.sync();
    let mut sub = gw.api();
    sub.scalar(cmd::MEMBERSHIP_SUBSCRIBE, 0, b"tok", b"");
    let snap = ops(&notes(&mut sub));
    assert_eq!((snap.first().unwrap(), snap.last().unwrap()), (&"S:tok".to_string(), &"E".to_string()));
    let names: BTreeSet<&str> = snap[1..snap.len() - 1].iter().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["+u:u1", "+g:g"]));

    w.scalar(cmd::BIND_UID, ids[2], b"u1", b""); // a second member: no change
    w.scalar(cmd::BIND_UID, ids[0], b"u2", b""); // u1 keeps ids[2]
    w.scalar(cmd::UNBIND_UID, ids[2], b"", b""); // the last of u1
    w.scalar(cmd::JOIN_GROUP, ids[0], b"g", b"");
    w.scalar(cmd::LEAVE_GROUP, ids[1], b"g", b""); // g keeps ids[0]
    w.scalar(cmd::JOIN_GROUP, ids[2], b"h", b"");
    w.scalar(cmd::UNGROUP, 0, b"g", b"");
    w.sync();
    drop(clients.remove(2)); // the last member of h
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, ids[2]);
    let got = notes(&mut sub);
    assert!(got.iter().all(|(count, _)| *count == 0), "none of these ran from the subscriber's link");
    assert_eq!(ops(&got), ["+u:u2", "-u:u1", "+g:h", "-g:g", "-g:h"]);
    // A link that did not subscribe got none of it: its replies came straight.
    w.ask(cmd::GET_CLIENT_ID_BY_UID, 0, b"u2", format!("a:1:{{i:0;i:{};}}", ids[0]));
}

#[test]
fn the_count_tells_a_subscriber_which_of_its_own_binds_and_joins_ran() {
    let Setup { gw, mut w, clients: _c, ids } = setup(Proto::Text, 2);
    let mut api = gw.api();
    w.scalar(cmd::MEMBERSHIP_SUBSCRIBE, 0, b"w", b"");
    assert_eq!(ops(&notes(&mut w)), ["S:w", "E"]);
    w.scalar(cmd::BIND_UID, ids[0], b"u1", b"");
    w.scalar(cmd::BIND_UID, ids[1], b"u1", b""); // ran, no change
    assert_eq!(notes(&mut w), [(1, vec!["+u:u1".to_string()])]);
    api.scalar(cmd::JOIN_GROUP, ids[1], b"from-api", b""); // not the subscriber's: not counted
    api.sync();
    w.scalar(cmd::JOIN_GROUP, ids[0], b"g", b"");
    w.scalar(cmd::JOIN_GROUP, 9999, b"nobody", b""); // no such client: counted, no change
    w.scalar(cmd::LEAVE_GROUP, ids[0], b"g", b""); // not a bind or join: not counted
    let got = notes(&mut w);
    let expected: Vec<(u32, Vec<String>)> =
        vec![(2, vec!["+g:from-api".into()]), (3, vec!["+g:g".into()]), (4, vec!["-g:g".into()])];
    assert_eq!(got, expected);
    // A new subscribe starts the count again, with a snapshot.
    w.scalar(cmd::MEMBERSHIP_SUBSCRIBE, 0, b"again", b"");
    w.scalar(cmd::BIND_UID, ids[0], b"u3", b"");
    let got = notes(&mut w);
    assert!(got[0].1.first().is_some_and(|op| op == "S:again") && got[0].0 == 0);
    // ids[0] leaves u1 for u3; u1 keeps ids[1]: only u3 is a change.
    assert_eq!(got.last().unwrap(), &(1, vec!["+u:u3".to_string()]));
}

#[test]
fn a_subscription_survives_the_handover_of_upgrade() {
    let Setup { gw, mut w, clients: _c, ids } = setup(Proto::Text, 1);
    let mut sub = gw.api();
    sub.scalar(cmd::MEMBERSHIP_SUBSCRIBE, 0, b"t", b"");
    sub.scalar(cmd::JOIN_GROUP, ids[0], b"g", b"");
    assert_eq!(ops(&notes(&mut sub)), ["S:t", "E", "+g:g"]);
    let gw = gw.upgrade();
    sub.scalar(cmd::BIND_UID, ids[0], b"u", b"");
    assert_eq!(notes(&mut sub), [(2, vec!["+u:u".to_string()])], "the count went on");
    w.scalar(cmd::LEAVE_GROUP, ids[0], b"g", b"");
    w.sync();
    assert_eq!(notes(&mut sub), [(2, vec!["-g:g".to_string()])]);
    drop(gw);
}

#[test]
fn a_subscriber_that_does_not_read_is_reset_and_told_nothing_more() {
    // A queue limit of 1 KiB, and a subscriber that reads nothing while thousands of names
    // come and go.
    let gw = Gw::with_limits(Proto::Text, |l| l.send_to_worker_buffer_size = 1024);
    let mut w = gw.worker("w:0");
    let (_client, id) = connected(&gw, &mut w);
    let mut sub = std::os::unix::net::UnixStream::connect(gw.dir.join("inner.sock")).unwrap();
    let mut hello = Vec::new();
    let connect = crate::wire::register::gateway_client_connect_body(SECRET);
    packet::encode(
        &mut hello,
        &Header::command(cmd::GATEWAY_CLIENT_CONNECT, 0, flag::BODY_IS_SCALAR),
        b"",
        &connect,
    );
    packet::encode(
        &mut hello,
        &Header::command(cmd::MEMBERSHIP_SUBSCRIBE, 0, flag::BODY_IS_SCALAR),
        b"s",
        b"",
    );
    sub.write_all(&hello).unwrap();
    sub.set_read_timeout(Some(DEADLINE)).unwrap();
    // Everything the subscriber receives, as ops, until the reply to a query (`None`).
    let mut buf = Vec::new();
    let mut read_ops = |sub: &mut std::os::unix::net::UnixStream| -> Option<Vec<String>> {
        loop {
            if buf.len() >= 5 && buf[4] != cmd::MEMBERSHIP {
                assert_eq!(buf, b"\0\0\0\x04i:1;", "a reply");
                buf.clear();
                return None;
            }
            if let Some((p, n)) = packet::decode(&buf, usize::MAX).unwrap() {
                let ops = membership::ops(p.body).map(|op| text(op.unwrap())).collect();
                buf.drain(..n);
                return Some(ops);
            }
            let mut chunk = [0u8; 65536];
            let n = sub.read(&mut chunk).unwrap();
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    assert_eq!(read_ops(&mut sub).unwrap(), ["S:s", "E"]);
    let name = |i: usize| format!("{i:0>60}");
    let mut binds = Vec::new();
    for i in 0..2000 {
        let h = Header::command(cmd::BIND_UID, id, flag::BODY_IS_SCALAR);
        packet::encode(&mut binds, &h, name(i).as_bytes(), b"");
    }
    w.s.write_all(&binds).unwrap();
    w.sync();
    // Read everything the subscriber was sent, up to the reply to its own query.
    let mut query = Vec::new();
    packet::encode(&mut query, &Header::command(cmd::IS_ONLINE, id, flag::BODY_IS_SCALAR), b"", b"");
    sub.write_all(&query).unwrap();
    let mut ops_seen: Vec<String> = Vec::new();
    while let Some(ops) = read_ops(&mut sub) {
        ops_seen.extend(ops);
    }
    assert_eq!(ops_seen.iter().filter(|op| *op == "R").count(), 1);
    assert_eq!(ops_seen.last().map(String::as_str), Some("R"), "nothing after the reset");
    assert!(ops_seen.len() > 2, "changes came before the reset: {ops_seen:?}");
}
