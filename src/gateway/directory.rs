//! The uid and group memberships of a gateway's clients. A client's own `uid` and `groups`
//! fields and the name -> members indices change together here, so they always agree; and
//! every name that appears (first member) or disappears (last member gone) is written down
//! in `changes`, as membership ops for the subscribed links (`wire::membership`).

use super::client::Client;
use super::clients::Clients;
use super::index::Index;
use crate::wire::membership::{Kind, Op};

#[derive(Debug, Default)]
pub struct Directory {
    pub uids: Index,
    pub groups: Index,
    /// Ops of the names that appeared or disappeared since the gateway last took them.
    pub changes: Vec<u8>,
}

impl Directory {
    /// Bind client `c` to `uid`, replacing the uid it had.
    pub fn bind_uid(&mut self, c: &mut Client, uid: &[u8]) {
        if let Some(old) = c.uid.replace(uid.into()) {
            self.remove(Kind::Uid, &old, c.id);
        }
        self.add(Kind::Uid, uid, c.id);
    }

    pub fn unbind_uid(&mut self, c: &mut Client) {
        if let Some(old) = c.uid.take() {
            self.remove(Kind::Uid, &old, c.id);
        }
    }

    /// Add client `c` to `group` unless it is in `max` groups already (a group it is in
    /// already is fine). False when refused.
    pub fn join(&mut self, c: &mut Client, group: &[u8], max: usize) -> bool {
        let groups = c.groups.get_or_insert_with(Vec::new);
        if groups.iter().any(|g| &g[..] == group) {
            return true;
        }
        if groups.len() >= max {
            return false;
        }
        groups.push(group.into());
        self.add(Kind::Group, group, c.id);
        true
    }

    pub fn leave(&mut self, c: &mut Client, group: &[u8]) {
        if let Some(groups) = c.groups.as_mut() {
            groups.retain(|g| &g[..] != group);
        }
        self.remove(Kind::Group, group, c.id);
    }

    /// Empty `group` for every member.
    pub fn ungroup(&mut self, clients: &mut Clients, group: &[u8]) {
        let Some(members) = self.groups.take(group) else { return };
        Op::Gone(Kind::Group, group).encode(&mut self.changes);
        for id in members.ids() {
            if let Some(groups) = clients.by_id_mut(id).and_then(|c| c.groups.as_mut()) {
                groups.retain(|g| &g[..] != group);
            }
        }
    }

    /// Index a client that arrived with its uid and groups (a handover: the names were
    /// held by the process this one replaces, so no change is written down).
    pub fn restore(&mut self, c: &Client) {
        if let Some(uid) = &c.uid {
            self.uids.add(uid, c.id);
        }
        for g in c.groups.iter().flatten() {
            self.groups.add(g, c.id);
        }
    }

    /// Drop a departing client's uid and group memberships.
    pub fn forget(&mut self, c: &mut Client) {
        self.unbind_uid(c);
        for g in c.groups.take().unwrap_or_default() {
            self.remove(Kind::Group, &g, c.id);
        }
    }

    /// The ops of a full snapshot: every uid and group held, in packets of about
    /// `chunk` bytes of ops each; the first begins with the snapshot op (carrying `token`),
    /// the last ends with the end op.
    pub fn snapshot(&self, token: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        let mut cur = Vec::new();
        Op::Snapshot(token).encode(&mut cur);
        let names = self.uids.keys().map(|n| Op::Held(Kind::Uid, n));
        for op in names.chain(self.groups.keys().map(|n| Op::Held(Kind::Group, n))) {
            if cur.len() >= chunk {
                parts.push(std::mem::take(&mut cur));
            }
            op.encode(&mut cur);
        }
        Op::End.encode(&mut cur);
        parts.push(cur);
        parts
    }

    fn index(&mut self, kind: Kind) -> &mut Index {
        match kind {
            Kind::Uid => &mut self.uids,
            Kind::Group => &mut self.groups,
        }
    }

    fn add(&mut self, kind: Kind, name: &[u8], id: u32) {
        if self.index(kind).add(name, id) == Some(1) {
            Op::Held(kind, name).encode(&mut self.changes);
        }
    }

    fn remove(&mut self, kind: Kind, name: &[u8], id: u32) {
        if self.index(kind).remove(name, id) == Some(0) {
            Op::Gone(kind, name).encode(&mut self.changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Proto;
    use crate::net::io::Io;
    use crate::wire::membership::ops;

    fn client(id: u32) -> Client {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Client::new(id, Io::Unix(mio::net::UnixStream::from_std(a)), Proto::Text, 0x7f00_0001, 4000, 0)
    }

    /// The changes written down since the last call, as text (`+u:name`, `-g:name`).
    fn taken(d: &mut Directory) -> Vec<String> {
        let body = std::mem::take(&mut d.changes);
        ops(&body)
            .map(|op| match op.unwrap() {
                Op::Held(k, n) => format!("+{}:{}", kind(k), String::from_utf8_lossy(n)),
                Op::Gone(k, n) => format!("-{}:{}", kind(k), String::from_utf8_lossy(n)),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn kind(k: Kind) -> &'static str {
        if k == Kind::Uid { "u" } else { "g" }
    }

    #[test]
    fn only_a_first_member_and_a_last_one_leaving_are_changes() {
        let mut d = Directory::default();
        let (mut a, mut b) = (client(1), client(2));
        d.bind_uid(&mut a, b"u1");
        d.bind_uid(&mut b, b"u1");
        assert_eq!(taken(&mut d), ["+u:u1"]);
        d.bind_uid(&mut a, b"u2");
        assert_eq!(taken(&mut d), ["+u:u2"], "u1 keeps a member");
        d.unbind_uid(&mut b);
        assert_eq!(taken(&mut d), ["-u:u1"]);
        assert!(d.join(&mut a, b"g", 8) && d.join(&mut b, b"g", 8) && d.join(&mut b, b"h", 8));
        assert_eq!(taken(&mut d), ["+g:g", "+g:h"]);
        d.leave(&mut a, b"g");
        d.leave(&mut a, b"never-joined");
        assert!(taken(&mut d).is_empty());
        d.forget(&mut b);
        assert_eq!(taken(&mut d), ["-g:g", "-g:h"]);
        d.forget(&mut a);
        assert_eq!(taken(&mut d), ["-u:u2"]);
    }

    #[test]
    fn ungroup_is_one_change_and_a_handover_none() {
        let mut d = Directory::default();
        let mut clients = Clients::new(0, 4);
        let (mut a, mut b) = (client(1), client(2));
        d.join(&mut a, b"room", 8);
        d.join(&mut b, b"room", 8);
        taken(&mut d);
        let reg = mio::Poll::new().unwrap();
        clients.insert(reg.registry(), a).unwrap();
        clients.insert(reg.registry(), b).unwrap();
        d.ungroup(&mut clients, b"room");
        d.ungroup(&mut clients, b"room");
        assert_eq!(taken(&mut d), ["-g:room"]);
        assert!(clients.by_id(1).unwrap().groups.as_ref().unwrap().is_empty());
        let mut c = client(3);
        c.uid = Some(b"u".to_vec().into());
        let mut fresh = Directory::default();
        fresh.restore(&c);
        assert!(fresh.changes.is_empty() && fresh.uids.get(b"u").is_some());
    }

    #[test]
    fn a_snapshot_lists_every_name_between_its_first_and_last_op_in_bounded_packets() {
        let mut d = Directory::default();
        let mut a = client(1);
        d.bind_uid(&mut a, b"me");
        for i in 0..100 {
            d.join(&mut a, format!("group-{i:03}").as_bytes(), 1000);
        }
        let parts = d.snapshot(b"tok", 200);
        assert!(parts.len() > 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() < 200 + 20));
        let all: Vec<u8> = parts.concat();
        let list: Vec<Op<'_>> = ops(&all).map(Result::unwrap).collect();
        assert_eq!(list[0], Op::Snapshot(b"tok"));
        assert_eq!(list.last(), Some(&Op::End));
        assert_eq!(list.len(), 1 + 1 + 100 + 1);
        assert!(list.contains(&Op::Held(Kind::Uid, b"me")));
        assert!(list.contains(&Op::Held(Kind::Group, b"group-042")));
        let empty = Directory::default().snapshot(b"", 200);
        assert_eq!(empty.len(), 1);
        assert_eq!(ops(&empty[0]).count(), 2);
    }
}
