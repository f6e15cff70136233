//! The handover format: what one gateway process tells the next about its connections. Each
//! record is one message of `net::fdpass` (the socket it describes rides along). Integers
//! are little-endian, byte strings a u32 length then the bytes. `VERSION` changes with any
//! change of a record's layout: a process that reads another version refuses the handover.

use std::fmt;

use crate::gateway::inner::Kind;

/// The format written and read by this build.
pub const VERSION: u32 = 2;

/// The first record: the process-wide state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Last connection id handed out (ids go on from there).
    pub last_id: u32,
    /// Client events waiting for the first business worker.
    pub parked: Vec<u8>,
    pub links: u32,
    pub clients: u32,
}

/// An inner connection (a business worker's link or a GatewayClient's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Its key in the old process (clients' routes name it).
    pub key: u64,
    pub serial: u64,
    pub peer: String,
    pub kind: Kind,
    pub authorized: bool,
    /// A Unix stream (else TCP).
    pub unix: bool,
    /// Received, not executed yet.
    pub inbuf: Vec<u8>,
    /// Queued, not written yet.
    pub out: Vec<u8>,
    pub closing: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub whole_from: Option<u64>,
    /// Subscribed to membership notifications: `BIND_UID` and `JOIN_GROUP` commands executed
    /// from it since.
    pub membership: Option<u32>,
}

/// A client's protocol state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecState {
    Text,
    Frame,
    /// Websocket before the 101: the request bytes so far.
    Handshake(Vec<u8>),
    /// Open websocket; its undecoded bytes (the frames of a fragmented message so far, then
    /// the rest) are the client's `inbuf`.
    Ws,
}

/// One client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientState {
    pub id: u32,
    pub ip: u32,
    pub port: u16,
    pub codec: CodecState,
    pub inbuf: Vec<u8>,
    pub out: Vec<u8>,
    pub closing: bool,
    pub session: Vec<u8>,
    pub uid: Option<Vec<u8>>,
    pub groups: Option<Vec<Vec<u8>>>,
    /// (old link key, link serial).
    pub route: Option<(u64, u64)>,
    pub ping: i32,
    /// Rate buckets: thousandths of a token used.
    pub msgs_used: u64,
    pub bytes_used: u64,
    /// A wss client: its TLS session stays in the old process, which relays the plain bytes
    /// through the socket sent with this record.
    pub relayed: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// One message of the handover stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Header(Header),
    Link(LinkState),
    Client(ClientState),
    End,
}

/// A record that does not parse: what was being read.
#[derive(Debug, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad handover record: {}", self.0)
    }
}

impl std::error::Error for FormatError {}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(b) => self.u8(1).bytes(b),
            None => self.u8(0),
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(x) => self.u8(1).u64(x),
            None => self.u8(0),
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or_else(|| FormatError(format!("{what} cut short")))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn bool(&mut self, what: &str) -> Result<bool, FormatError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(FormatError(format!("{what}: {v} is not a flag"))),
        }
    }
    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, FormatError> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    fn string(&mut self, what: &str) -> Result<String, FormatError> {
        String::from_utf8(self.bytes(what)?).map_err(|_| FormatError(format!("{what} is not UTF-8")))
    }
    fn opt_bytes(&mut self, what: &str) -> Result<Option<Vec<u8>>, FormatError> {
        Ok(if self.bool(what)? { Some(self.bytes(what)?) } else { None })
    }
    fn opt_u64(&mut self, what: &str) -> Result<Option<u64>, FormatError> {
        Ok(if self.bool(what)? { Some(self.u64(what)?) } else { None })
    }
    fn end(&self, what: &str) -> Result<(), FormatError> {
        if self.at == self.data.len() {
            Ok(())
        } else {
            Err(FormatError(format!("{} bytes after the {what}", self.data.len() - self.at)))
        }
    }
}

const HEADER: u8 = b'H';
const LINK: u8 = b'L';
const CLIENT: u8 = b'C';
const END: u8 = b'E';

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Record::Header(h) => {
                w.u8(HEADER).u32(h.last_id).bytes(&h.parked).u32(h.links).u32(h.clients);
            }
            Record::Link(l) => {
                w.u8(LINK).u64(l.key).u64(l.serial).bytes(l.peer.as_bytes());
                match &l.kind {
                    Kind::Unknown => w.u8(0),
                    Kind::Worker { key, draining } => w.u8(1).bytes(key.as_bytes()).bool(*draining),
                    Kind::Client => w.u8(2),
                };
                w.bool(l.authorized).bool(l.unix).bytes(&l.inbuf).bytes(&l.out).bool(l.closing);
                w.u64(l.bytes_read).u64(l.bytes_written).opt_u64(l.whole_from);
                w.opt_u64(l.membership.map(u64::from));
            }
            Record::Client(c) => {
                w.u8(CLIENT).u32(c.id).u32(c.ip).u16(c.port);
                match &c.codec {
                    CodecState::Text => w.u8(0),
                    CodecState::Frame => w.u8(1),
                    CodecState::Handshake(b) => w.u8(2).bytes(b),
                    CodecState::Ws => w.u8(3),
                };
                w.bytes(&c.inbuf).bytes(&c.out).bool(c.closing).bytes(&c.session);
                w.opt_bytes(c.uid.as_deref());
                match &c.groups {
                    Some(g) => {
                        w.u8(1).u32(g.len() as u32);
                        for name in g {
                            w.bytes(name);
                        }
                    }
                    None => {
                        w.u8(0);
                    }
                }
                match c.route {
                    Some((key, serial)) => w.u8(1).u64(key).u64(serial),
                    None => w.u8(0),
                };
                w.u32(c.ping as u32).u64(c.msgs_used).u64(c.bytes_used).bool(c.relayed);
                w.u64(c.bytes_read).u64(c.bytes_written);
            }
            Record::End => {
                w.u8(END);
            }
        }
        w.0
    }

    pub fn decode(data: &[u8]) -> Result<Record, FormatError> {
        let mut r = Reader { data, at: 0 };
        let rec = match r.u8("record type")? {
            HEADER => Record::Header(Header {
                last_id: r.u32("last id")?,
                parked: r.bytes("parked events")?,
                links: r.u32("link count")?,
                clients: r.u32("client count")?,
            }),
            LINK => Record::Link(LinkState {
                key: r.u64("link key")?,
                serial: r.u64("link serial")?,
                peer: r.string("link peer")?,
                kind: match r.u8("link kind")? {
                    0 => Kind::Unknown,
                    1 => Kind::Worker { key: r.string("worker key")?, draining: r.bool("draining")? },
                    2 => Kind::Client,
                    v => return Err(FormatError(format!("link kind {v}"))),
                },
                authorized: r.bool("authorized")?,
                unix: r.bool("link family")?,
                inbuf: r.bytes("link input")?,
                out: r.bytes("link output")?,
                closing: r.bool("link closing")?,
                bytes_read: r.u64("link bytes read")?,
                bytes_written: r.u64("link bytes written")?,
                whole_from: r.opt_u64("whole packet position")?,
                membership: r.opt_u64("membership subscription")?.map(|n| n as u32),
            }),
            CLIENT => Record::Client(ClientState {
                id: r.u32("connection id")?,
                ip: r.u32("client ip")?,
                port: r.u16("client port")?,
                codec: match r.u8("protocol")? {
                    0 => CodecState::Text,
                    1 => CodecState::Frame,
                    2 => CodecState::Handshake(r.bytes("handshake bytes")?),
                    3 => CodecState::Ws,
                    v => return Err(FormatError(format!("protocol {v}"))),
                },
                inbuf: r.bytes("client input")?,
                out: r.bytes("client output")?,
                closing: r.bool("client closing")?,
                session: r.bytes("session")?,
                uid: r.opt_bytes("uid")?,
                groups: if r.bool("groups")? {
                    let n = r.u32("group count")?;
                    let mut g = Vec::with_capacity(n.min(1024) as usize);
                    for _ in 0..n {
                        g.push(r.bytes("group")?);
                    }
                    Some(g)
                } else {
                    None
                },
                route: if r.bool("route")? {
                    Some((r.u64("route key")?, r.u64("route serial")?))
                } else {
                    None
                },
                ping: r.u32("heartbeat counter")? as i32,
                msgs_used: r.u64("message bucket")?,
                bytes_used: r.u64("byte bucket")?,
                relayed: r.bool("relayed")?,
                bytes_read: r.u64("client bytes read")?,
                bytes_written: r.u64("client bytes written")?,
            }),
            END => Record::End,
            t => return Err(FormatError(format!("record type {t}"))),
        };
        r.end("record")?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let client = ClientState {
            id: 7,
            ip: 0x7f00_0001,
            port: 40000,
            codec: CodecState::Ws,
            inbuf: b"\x01\x83abc\x80".to_vec(),
            out: b"\x81\x02hi".to_vec(),
            closing: false,
            session: b"a:1:{s:1:\"k\";i:1;}".to_vec(),
            uid: Some(b"u1".to_vec()),
            groups: Some(vec![b"g1".to_vec(), b"".to_vec()]),
            route: Some((3, 9)),
            ping: -1,
            msgs_used: 5000,
            bytes_used: 0,
            relayed: true,
            bytes_read: 100,
            bytes_written: 200,
        };
        vec![
            Record::Header(Header { last_id: 41, parked: vec![1, 2, 3], links: 2, clients: 1 }),
            Record::Link(LinkState {
                key: 3,
                serial: 9,
                peer: "unix".into(),
                kind: Kind::Worker { key: "127.0.0.1:worker:0".into(), draining: false },
                authorized: true,
                unix: true,
                inbuf: vec![0; 10],
                out: vec![],
                closing: false,
                bytes_read: 1,
                bytes_written: 2,
                whole_from: None,
                membership: Some(7),
            }),
            Record::Link(LinkState {
                key: 4,
                serial: 10,
                peer: "127.0.0.1:5".into(),
                kind: Kind::Client,
                authorized: false,
                unix: false,
                inbuf: vec![],
                out: vec![9],
                closing: true,
                bytes_read: 0,
                bytes_written: 0,
                whole_from: Some(77),
                membership: None,
            }),
            Record::Client(client.clone()),
            Record::Client(ClientState {
                codec: CodecState::Handshake(b"GET / HTTP/1.1\r\n".to_vec()),
                uid: None,
                groups: None,
                route: None,
                ping: 3,
                ..client.clone()
            }),
            Record::Client(ClientState { codec: CodecState::Text, ..client.clone() }),
            Record::Client(ClientState { codec: CodecState::Frame, groups: Some(vec![]), ..client }),
            Record::End,
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() {
        for rec in samples() {
            assert_eq!(Record::decode(&rec.encode()), Ok(rec));
        }
    }

    #[test]
    fn a_cut_or_padded_record_is_an_error_that_names_the_field() {
        for rec in samples() {
            let bytes = rec.encode();
            for cut in 0..bytes.len() {
                let e = Record::decode(&bytes[..cut]).unwrap_err();
                assert!(e.0.contains("cut short"), "{e}");
            }
            let mut more = bytes.clone();
            more.push(0);
            assert!(Record::decode(&more).unwrap_err().0.contains("after the record"));
        }
        assert_eq!(Record::decode(b"Z"), Err(FormatError("record type 90".into())));
        let mut bad = Record::End.encode();
        bad[0] = CLIENT;
        assert!(Record::decode(&bad).unwrap_err().to_string().contains("connection id"));
    }
}
