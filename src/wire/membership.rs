//! Membership notifications, ours (`docs/protocol.md` §7): a gateway tells the business
//! workers and GatewayClients that subscribed on their link (`MEMBERSHIP_SUBSCRIBE`) which
//! uids and groups it holds, so that a send to a uid or a group goes only to the gateways
//! that hold it.
//!
//! The body of a `MEMBERSHIP` packet is a sequence of ops, each `op u8 ‖ len u32 ‖ bytes`
//! (big-endian length); the ops of the successive packets of one link form one stream. The
//! packet's `connection_id` carries the gateway's count of `BIND_UID` and `JOIN_GROUP`
//! commands executed from that link since its subscribe.

use std::fmt;

/// The op codes.
pub mod op {
    /// A snapshot begins (bytes: the subscriber's token): forget what the gateway said before.
    pub const SNAPSHOT: u8 = b'S';
    /// The snapshot is complete: from here on the gateway holds exactly what it said.
    pub const END: u8 = b'E';
    /// The subscription ended (the link fell too far behind): the gateway may hold anything.
    pub const RESET: u8 = b'R';
    /// The gateway now holds a client bound to this uid.
    pub const UID_HELD: u8 = b'U';
    /// No client of the gateway is bound to this uid any more.
    pub const UID_GONE: u8 = b'u';
    /// The gateway now holds a member of this group.
    pub const GROUP_HELD: u8 = b'G';
    /// No client of the gateway is in this group any more.
    pub const GROUP_GONE: u8 = b'g';
}

/// Longest subscriber token a gateway echoes.
pub const MAX_TOKEN: usize = 64;

/// Bytes of ops a gateway puts in one packet of a snapshot.
pub const SNAPSHOT_CHUNK: usize = 64 << 10;

/// What a name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Uid,
    Group,
}

/// One op of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    Snapshot(&'a [u8]),
    End,
    Reset,
    Held(Kind, &'a [u8]),
    Gone(Kind, &'a [u8]),
}

impl Op<'_> {
    /// Append this op to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (code, bytes): (u8, &[u8]) = match *self {
            Op::Snapshot(token) => (op::SNAPSHOT, token),
            Op::End => (op::END, b""),
            Op::Reset => (op::RESET, b""),
            Op::Held(Kind::Uid, n) => (op::UID_HELD, n),
            Op::Gone(Kind::Uid, n) => (op::UID_GONE, n),
            Op::Held(Kind::Group, n) => (op::GROUP_HELD, n),
            Op::Gone(Kind::Group, n) => (op::GROUP_GONE, n),
        };
        out.reserve(5 + bytes.len());
        out.push(code);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
}

/// A body that is not a sequence of ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadOps(pub String);

impl fmt::Display for BadOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad membership ops: {}", self.0)
    }
}

impl std::error::Error for BadOps {}

/// The ops of `body`, in order; an error ends the sequence.
pub fn ops(body: &[u8]) -> Ops<'_> {
    Ops { rest: body }
}

/// Iterator over the ops of a body.
pub struct Ops<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Ops<'a> {
    type Item = Result<Op<'a>, BadOps>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = decode_one(self.rest);
        match &item {
            Ok((_, used)) => self.rest = &self.rest[*used..],
            Err(_) => self.rest = &[],
        }
        Some(item.map(|(op, _)| op))
    }
}

fn decode_one(b: &[u8]) -> Result<(Op<'_>, usize), BadOps> {
    if b.len() < 5 {
        return Err(BadOps(format!("{} bytes left, an op takes at least 5", b.len())));
    }
    let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
    let bytes = b.get(5..5 + len).ok_or_else(|| BadOps(format!("op of {len} bytes cut short")))?;
    let op = match b[0] {
        op::SNAPSHOT => Op::Snapshot(bytes),
        op::END => Op::End,
        op::RESET => Op::Reset,
        op::UID_HELD => Op::Held(Kind::Uid, bytes),
        op::UID_GONE => Op::Gone(Kind::Uid, bytes),
        op::GROUP_HELD => Op::Held(Kind::Group, bytes),
        op::GROUP_GONE => Op::Gone(Kind::Group, bytes),
        other => return Err(BadOps(format!("unknown op {other}"))),
    };
    Ok((op, 5 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_read_back_as_written() {
        let all = [
            Op::Snapshot(b"\0\x01token"),
            Op::Held(Kind::Uid, b"u1"),
            Op::Held(Kind::Group, b""),
            Op::End,
            Op::Gone(Kind::Uid, b"u1"),
            Op::Gone(Kind::Group, "g\u{e9}".as_bytes()),
            Op::Reset,
        ];
        let mut body = Vec::new();
        for op in &all {
            op.encode(&mut body);
        }
        assert_eq!(&body[..12], b"S\0\0\0\x07\0\x01token");
        let back: Vec<Op<'_>> = ops(&body).map(Result::unwrap).collect();
        assert_eq!(back, all);
    }

    #[test]
    fn a_cut_or_unknown_op_is_an_error_that_ends_the_sequence() {
        let mut body = Vec::new();
        Op::Held(Kind::Uid, b"abc").encode(&mut body);
        let whole = body.len();
        body.extend_from_slice(b"U\0\0\0\x09ab");
        let got: Vec<_> = ops(&body).collect();
        assert_eq!(got.len(), 2);
        assert!(got[1].as_ref().unwrap_err().0.contains("cut short"));
        assert!(ops(&body[..whole + 3]).nth(1).unwrap().is_err());
        assert_eq!(ops(b"X\0\0\0\0").next(), Some(Err(BadOps("unknown op 88".into()))));
    }
}
