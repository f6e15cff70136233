//! The uid and group memberships of a gateway's clients. A client's own `uid` and `groups`
//! fields and the name -> members indices change together here, so they always agree.

use super::client::Client;
use super::clients::Clients;
use super::index::Index;

#[derive(Debug, Default)]
pub struct Directory {
    pub uids: Index,
    pub groups: Index,
}

impl Directory {
    /// Bind client `c` to `uid`, replacing the uid it had.
    pub fn bind_uid(&mut self, c: &mut Client, uid: &[u8]) {
        if let Some(old) = c.uid.replace(uid.into()) {
            self.uids.remove(&old, c.id);
        }
        self.uids.add(uid, c.id);
    }

    pub fn unbind_uid(&mut self, c: &mut Client) {
        if let Some(old) = c.uid.take() {
            self.uids.remove(&old, c.id);
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
        self.groups.add(group, c.id);
        true
    }

    pub fn leave(&mut self, c: &mut Client, group: &[u8]) {
        if let Some(groups) = c.groups.as_mut() {
            groups.retain(|g| &g[..] != group);
        }
        self.groups.remove(group, c.id);
    }

    /// Empty `group` for every member.
    pub fn ungroup(&mut self, clients: &mut Clients, group: &[u8]) {
        let Some(members) = self.groups.take(group) else { return };
        for id in members.ids() {
            if let Some(groups) = clients.by_id_mut(id).and_then(|c| c.groups.as_mut()) {
                groups.retain(|g| &g[..] != group);
            }
        }
    }

    /// Index a client that arrived with its uid and groups (a handover).
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
            self.groups.remove(&g, c.id);
        }
    }
}
