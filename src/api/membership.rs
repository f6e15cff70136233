//! What one gateway holds, as a subscriber sees it (`docs/protocol.md` §7): the uids and
//! groups the gateway said it holds, plus the names this subscriber itself bound or joined
//! there that the gateway has not counted yet. A send to uids or groups goes to a gateway
//! only when its view may hold one of the names; a gateway whose snapshot has not arrived
//! (a PHP gateway never sends one) may hold anything.

use std::collections::{HashMap, HashSet};

use crate::wire::membership::{self, BadOps, Kind, Op};
use crate::wire::packet::cmd;

/// The names a send or a query is about.
#[derive(Clone, Copy, Debug)]
pub enum Names<'a> {
    /// Uids.
    Uids(&'a [&'a str]),
    /// Groups.
    Groups(&'a [&'a str]),
}

/// Own binds and joins tracked at most, per gateway, while the gateway has not counted
/// them; past it the view starts over with a new subscription.
const MAX_OWN: usize = 1 << 16;

/// Where the subscription is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not subscribed (never, or the gateway reset it): holds everything.
    Off,
    /// Subscribed with this token, waiting for the snapshot that echoes it; what arrives
    /// before belongs to an older subscription and is ignored.
    Waiting(u64),
    /// Between the snapshot's first op and its end.
    Receiving,
    /// The snapshot is complete; changes follow.
    Known,
}

/// Names of one kind.
#[derive(Debug, Default)]
struct Set {
    /// What the gateway said it holds.
    held: HashSet<Box<[u8]>>,
    /// Own binds or joins, with their number, not counted by the gateway yet.
    own: HashMap<Box<[u8]>, u32>,
}

impl Set {
    fn has(&self, name: &[u8]) -> bool {
        self.held.contains(name) || self.own.contains_key(name)
    }
}

/// One gateway as a subscriber sees it.
#[derive(Debug)]
pub struct View {
    phase: Phase,
    uids: Set,
    groups: Set,
    /// `BIND_UID` and `JOIN_GROUP` commands sent since the last subscribe.
    sent: u32,
}

impl Default for View {
    fn default() -> View {
        View { phase: Phase::Off, uids: Set::default(), groups: Set::default(), sent: 0 }
    }
}

/// `a` comes after `b` in a wrapping count.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl View {
    /// Whether the gateway may hold a client with one of `names` (always, until its
    /// snapshot is complete).
    pub fn may_hold(&self, names: Names<'_>) -> bool {
        if self.phase != Phase::Known {
            return true;
        }
        match names {
            Names::Uids(list) => list.iter().any(|n| self.uids.has(n.as_bytes())),
            Names::Groups(list) => list.iter().any(|n| self.groups.has(n.as_bytes())),
        }
    }

    /// The snapshot is complete and no reset came since.
    #[cfg(test)]
    pub fn is_known(&self) -> bool {
        self.phase == Phase::Known
    }

    /// A subscription is on (its snapshot may still be on the way).
    pub fn is_subscribed(&self) -> bool {
        self.phase != Phase::Off
    }

    /// Not subscribed: the owner should send `MEMBERSHIP_SUBSCRIBE` (with [`View::subscribe`]).
    pub fn wants_subscribe(&self) -> bool {
        self.phase == Phase::Off
    }

    /// A `MEMBERSHIP_SUBSCRIBE` carrying `token` is being queued on the link. The own binds
    /// and joins sent before it are in the snapshot that answers it.
    pub fn subscribe(&mut self, token: u64) {
        self.phase = Phase::Waiting(token);
        self.sent = 0;
        for set in [&mut self.uids, &mut self.groups] {
            set.own.values_mut().for_each(|n| *n = 0);
        }
    }

    /// A packet is being queued on the link: a bind or a join makes the name held at once.
    pub fn sending(&mut self, command: u8, name: &[u8]) {
        let set = match command {
            cmd::BIND_UID => &mut self.uids,
            cmd::JOIN_GROUP => &mut self.groups,
            _ => return,
        };
        if self.phase == Phase::Off {
            return;
        }
        self.sent = self.sent.wrapping_add(1);
        set.own.insert(name.into(), self.sent);
        if set.own.len() > MAX_OWN {
            self.off();
        }
    }

    /// A `MEMBERSHIP` packet from the gateway: `count` is its `connection_id`, `body` its ops.
    /// An error leaves the view off (holding everything).
    pub fn apply(&mut self, count: u32, body: &[u8]) -> Result<(), BadOps> {
        let mut ours = !matches!(self.phase, Phase::Off | Phase::Waiting(_));
        for op in membership::ops(body) {
            let op = match op {
                Ok(op) => op,
                Err(e) => {
                    self.off();
                    return Err(e);
                }
            };
            match (self.phase, op) {
                (Phase::Waiting(token), Op::Snapshot(t)) if t == token.to_be_bytes() => {
                    self.uids.held.clear();
                    self.groups.held.clear();
                    self.phase = Phase::Receiving;
                    ours = true;
                }
                (Phase::Off | Phase::Waiting(_), _) => {}
                (_, Op::Held(kind, name)) => {
                    self.set(kind).held.insert(name.into());
                }
                (_, Op::Gone(kind, name)) => {
                    self.set(kind).held.remove(name);
                }
                (Phase::Receiving, Op::End) => self.phase = Phase::Known,
                (_, Op::Reset) => {
                    self.off();
                    return Ok(());
                }
                (_, Op::Snapshot(_) | Op::End) => {
                    self.off();
                    return Err(BadOps("a snapshot op outside a snapshot".into()));
                }
            }
        }
        if ours {
            // The gateway ran every own bind and join counted so far: the ops above include
            // what they did.
            for set in [&mut self.uids, &mut self.groups] {
                set.own.retain(|_, n| after(*n, count));
            }
        }
        Ok(())
    }

    fn set(&mut self, kind: Kind) -> &mut Set {
        match kind {
            Kind::Uid => &mut self.uids,
            Kind::Group => &mut self.groups,
        }
    }

    fn off(&mut self) {
        *self = View::default();
    }
}

/// Subscription tokens: different for every subscription of this process and, by the clock
/// and the pid they start from, from those of other processes.
#[derive(Debug)]
pub struct Tokens(u64);

impl Default for Tokens {
    fn default() -> Tokens {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Tokens(nanos ^ (u64::from(std::process::id()) << 40))
    }
}

impl Tokens {
    /// The next token.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet's ops.
    fn ops(list: &[Op<'_>]) -> Vec<u8> {
        let mut b = Vec::new();
        list.iter().for_each(|op| op.encode(&mut b));
        b
    }

    const U1: Names<'static> = Names::Uids(&["u1"]);
    const G1: Names<'static> = Names::Groups(&["g1"]);

    /// A view subscribed with token 7 that received a snapshot of `held` (uids).
    fn known(held: &[&str]) -> View {
        let mut v = View::default();
        v.subscribe(7);
        let mut list = vec![Op::Snapshot(&[0, 0, 0, 0, 0, 0, 0, 7])];
        list.extend(held.iter().map(|n| Op::Held(Kind::Uid, n.as_bytes())));
        list.push(Op::End);
        v.apply(0, &ops(&list)).unwrap();
        v
    }

    #[test]
    fn a_gateway_never_heard_from_holds_everything() {
        let mut v = View::default();
        assert!(v.wants_subscribe() && v.may_hold(U1) && v.may_hold(G1));
        v.subscribe(1);
        assert!(!v.wants_subscribe() && v.may_hold(U1) && !v.is_known());
        // Changes before the snapshot (an older subscription's) change nothing.
        v.apply(5, &ops(&[Op::Gone(Kind::Uid, b"u1"), Op::End])).unwrap();
        assert!(v.may_hold(U1) && !v.is_known());
    }

    #[test]
    fn a_snapshot_then_changes() {
        let mut v = View::default();
        v.subscribe(7);
        let token = 7u64.to_be_bytes();
        // A snapshot in two packets: holds everything until its end.
        v.apply(0, &ops(&[Op::Snapshot(&token), Op::Held(Kind::Uid, b"u1")])).unwrap();
        assert!(v.may_hold(Names::Uids(&["other"])));
        v.apply(0, &ops(&[Op::Held(Kind::Group, b"g1"), Op::End])).unwrap();
        assert!(v.is_known());
        assert!(v.may_hold(U1) && v.may_hold(G1));
        assert!(!v.may_hold(Names::Uids(&["g1"])), "a group is not a uid");
        assert!(!v.may_hold(Names::Groups(&["g2", "g3"])));
        assert!(v.may_hold(Names::Groups(&["g2", "g1"])), "any of the names");
        v.apply(0, &ops(&[Op::Gone(Kind::Uid, b"u1"), Op::Held(Kind::Group, b"g2")])).unwrap();
        assert!(!v.may_hold(U1) && v.may_hold(Names::Groups(&["g2"])));
        // A reset: everything again, and a new subscription wanted.
        v.apply(0, &ops(&[Op::Reset])).unwrap();
        assert!(v.wants_subscribe() && v.may_hold(Names::Uids(&["anything"])));
    }

    #[test]
    fn a_snapshot_for_another_token_is_ignored() {
        let mut v = View::default();
        v.subscribe(8);
        let stale = ops(&[Op::Snapshot(&7u64.to_be_bytes()), Op::End]);
        v.apply(0, &stale).unwrap();
        assert!(!v.is_known());
        v.apply(0, &ops(&[Op::Snapshot(&8u64.to_be_bytes()), Op::End])).unwrap();
        assert!(v.is_known() && !v.may_hold(U1));
    }

    #[test]
    fn an_own_bind_is_held_at_once_and_until_the_gateway_counted_it() {
        let mut v = known(&[]);
        v.sending(cmd::BIND_UID, b"u1");
        v.sending(cmd::SEND_TO_UID, b"[\"u1\"]");
        assert!(v.may_hold(U1));
        // A removal the gateway made before running our bind (count 0) does not remove it.
        v.apply(0, &ops(&[Op::Gone(Kind::Uid, b"u1")])).unwrap();
        assert!(v.may_hold(U1));
        // The gateway ran it (count 1) and the client was gone: not held.
        v.apply(1, &ops(&[Op::Gone(Kind::Group, b"x")])).unwrap();
        assert!(!v.may_hold(U1));
        // Ran it and the name appeared: held by the gateway's word, until it disappears.
        v.sending(cmd::JOIN_GROUP, b"g1");
        v.apply(2, &ops(&[Op::Held(Kind::Group, b"g1")])).unwrap();
        assert!(v.may_hold(G1));
        v.apply(2, &ops(&[Op::Gone(Kind::Group, b"g1")])).unwrap();
        assert!(!v.may_hold(G1));
    }

    #[test]
    fn own_binds_before_a_resubscribe_are_in_its_snapshot_those_after_are_kept() {
        let mut v = known(&[]);
        v.sending(cmd::BIND_UID, b"before");
        v.apply(0, &ops(&[Op::Reset])).unwrap();
        assert!(v.wants_subscribe());
        v.sending(cmd::BIND_UID, b"while-off");
        v.subscribe(9);
        v.sending(cmd::BIND_UID, b"after");
        // The snapshot answers the subscribe: the gateway ran nothing sent after it yet.
        let snap = ops(&[Op::Snapshot(&9u64.to_be_bytes()), Op::Held(Kind::Uid, b"while-off"), Op::End]);
        v.apply(0, &snap).unwrap();
        assert!(v.is_known());
        assert!(v.may_hold(Names::Uids(&["after"])));
        assert!(v.may_hold(Names::Uids(&["while-off"])));
        assert!(!v.may_hold(Names::Uids(&["before"])));
    }

    #[test]
    fn counts_wrap() {
        assert!(after(1, 0) && after(0, u32::MAX) && !after(u32::MAX, 0) && !after(5, 5));
        let mut v = known(&[]);
        v.sent = u32::MAX;
        v.sending(cmd::BIND_UID, b"u1");
        v.apply(u32::MAX, &ops(&[])).unwrap();
        assert!(v.may_hold(U1), "count 0 comes after u32::MAX");
        v.apply(0, &ops(&[])).unwrap();
        assert!(!v.may_hold(U1));
    }

    #[test]
    fn too_many_uncounted_own_binds_start_over() {
        let mut v = known(&[]);
        for i in 0..=MAX_OWN {
            v.sending(cmd::BIND_UID, format!("u{i}").as_bytes());
        }
        assert!(v.wants_subscribe() && v.may_hold(Names::Uids(&["nobody"])));
    }

    #[test]
    fn bad_ops_leave_the_view_holding_everything() {
        let mut v = known(&["u1"]);
        assert!(v.apply(0, b"U\0\0\0\x09ab").is_err());
        assert!(v.wants_subscribe() && v.may_hold(Names::Uids(&["x"])));
        let mut v = known(&[]);
        assert!(v.apply(0, &ops(&[Op::End])).is_err(), "an end outside a snapshot");
        assert!(v.may_hold(U1));
    }

    #[test]
    fn tokens_differ() {
        let mut t = Tokens::default();
        assert_ne!(t.next(), t.next());
    }
}
