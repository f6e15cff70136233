//! Flow control: a congested worker link holds the client that fills it and not the others,
//! paused clients resume from their lists without a new readiness edge, rates throttle or
//! close (1008), and each is counted. Most tests drive the gateway's methods by hand, turn
//! by turn, over socket pairs: no reactor thread, so the state between turns is checked
//! exactly and the clock is moved instead of waited for.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream as StdUnix;

use super::*;
use crate::config::{GatewayLimits, RatePolicy};
use crate::gateway::client::{Client as GwClient, Route};
use crate::gateway::limits::{LINK, RATE};
use crate::net::io::Io;
use crate::net::table::Owned;
use crate::stats::Slot;

/// A gateway driven by hand: one worker link over a socket pair, clients over socket pairs.
struct Bare {
    gw: Gateway,
    reactor: Reactor<Timer>,
    link: usize,
    worker: StdUnix,
    /// Bytes from the link not decoded yet.
    pending: Vec<u8>,
    dir: PathBuf,
}

impl Bare {
    fn new(tweak: impl FnOnce(&mut GatewayLimits)) -> Bare {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("gw-flow-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = config(Proto::Text, &dir, tweak);
        let listeners = listeners(&dir);
        let mut gw = Gateway::new(&cfg, &cfg.gateways[0], 0, listeners, None, Stats::private().unwrap());
        let mut reactor = Reactor::new().unwrap();
        let (link_end, worker) = StdUnix::pair().unwrap();
        worker.set_nonblocking(true).unwrap();
        let io = Io::Unix(mio::net::UnixStream::from_std(nonblocking(link_end)));
        let link = gw.links.insert(reactor.ctx().registry, io, "unix".into(), true).unwrap();
        let serial = gw.links.get(link).unwrap().serial;
        gw.router.add(Route { key: link, serial });
        Bare { gw, reactor, link, worker, pending: Vec::new(), dir }
    }

    /// A text client: its key, connection id and the peer's end.
    fn client(&mut self) -> (usize, u32, StdUnix) {
        let (ours, peer) = StdUnix::pair().unwrap();
        let id = self.gw.clients.alloc_id();
        let io = Io::Unix(mio::net::UnixStream::from_std(nonblocking(ours)));
        let c = GwClient::new(id, io, Proto::Text, 1, id as u16, 0);
        (self.gw.clients.insert(self.reactor.ctx().registry, c).unwrap(), id, peer)
    }

    /// A readable edge on client `key`.
    fn readable(&mut self, key: usize) {
        self.gw.on_client_ready(key, Ready::READABLE);
    }

    /// The end of a loop turn: resumed clients are read, then everything is flushed.
    fn turn(&mut self) -> bool {
        self.gw.end_of_turn(&mut self.reactor.ctx())
    }

    /// The worker stops reading: fill the link's socket (less than one 1 KiB packet stays
    /// queued in the gateway).
    fn clog(&mut self) {
        let mut ping = Vec::new();
        packet::encode(&mut ping, &Header::command(cmd::PING, 0, flag::BODY_IS_SCALAR), b"", &[0; 1000]);
        let link = self.gw.links.get_mut(self.link).unwrap();
        while link.conn.out.is_empty() {
            link.conn.out.extend(&ping);
            Owned::flush(link).unwrap();
        }
    }

    fn queued(&self) -> usize {
        self.gw.links.get(self.link).unwrap().conn.out.len()
    }

    /// The ON_MESSAGE events the worker can read now: (connection id, body). The link's
    /// socket then has room: it gets the writable edge the reactor would deliver.
    fn events(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut chunk = [0u8; 65536];
        loop {
            match self.worker.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("worker read: {e}"),
            }
        }
        let mut out = Vec::new();
        let mut used = 0;
        while let Some((p, n)) = packet::decode(&self.pending[used..], usize::MAX).unwrap() {
            if p.header.cmd == cmd::ON_MESSAGE {
                out.push((p.header.connection_id, p.body.to_vec()));
            }
            used += n;
        }
        self.pending.drain(..used);
        self.gw.on_inner_ready(self.link, Ready::WRITABLE);
        out
    }

    fn counter(&self, pick: fn(&Slot) -> &std::sync::atomic::AtomicU64) -> u64 {
        Slot::get(pick(self.gw.stats.slot()))
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nonblocking(s: StdUnix) -> StdUnix {
    s.set_nonblocking(true).unwrap();
    s
}

#[test]
fn a_congested_link_holds_the_client_that_fills_it_and_not_the_others() {
    let mut b = Bare::new(|l| {
        l.send_to_worker_buffer_size = 1 << 16;
        l.flow.worker_high_water = 4096;
    });
    let (flooder, fid, mut fpeer) = b.client();
    let (quiet, qid, mut qpeer) = b.client();
    let mut line = vec![b'x'; 99];
    line.push(b'\n');
    b.clog();
    fpeer.write_all(&line.repeat(1000)).unwrap();
    b.readable(flooder);
    let c = b.gw.clients.get(flooder).unwrap();
    assert_eq!(c.flow.paused, LINK, "paused once the link is over its high-water mark");
    assert!(c.conn.ready.contains(Ready::READABLE), "the rest waits in the socket, its readiness kept");
    let queued = b.queued();
    assert!((4096..4096 + 1200).contains(&queued), "one event over the mark at most: {queued}");
    assert_eq!(b.counter(|s| &s.limit_backpressure), 1);
    // A new edge does not read a paused client.
    b.readable(flooder);
    assert_eq!(b.queued(), queued);
    // The quiet client queued nothing yet this cycle: its event goes through.
    qpeer.write_all(b"quiet\n").unwrap();
    b.readable(quiet);
    assert_eq!(b.gw.clients.get(quiet).unwrap().flow.paused, 0);
    assert!(b.queued() > queued, "the quiet client's event is queued behind the flood");
    // While the worker does not read, the end of the turn resumes nobody.
    b.turn();
    assert_eq!(b.gw.clients.get(flooder).unwrap().flow.paused, LINK, "still waiting");
    // The worker reads; the flush drains the link below its low-water mark: the flooder is
    // resumed from the link's list, and later turns read it with no new edge, until
    // everything went through.
    let mut got = b.events();
    b.turn();
    assert_eq!(b.gw.clients.get(flooder).unwrap().flow.paused, 0, "resumed");
    for _ in 0..10_000 {
        if got.iter().filter(|(id, _)| *id == fid).count() == 1000 {
            break;
        }
        b.turn();
        got.extend(b.events());
    }
    let from = |who: u32| got.iter().filter(|(id, _)| *id == who).count();
    assert_eq!((from(fid), from(qid)), (1000, 1), "nothing lost");
    assert!(got.iter().all(|(id, body)| *id == qid || body.len() == 99));
    assert!(b.counter(|s| &s.limit_backpressure) > 1, "paused again on each cycle");
    assert_eq!(b.counter(|s| &s.send_fail), 0, "nothing dropped");
}

#[test]
fn at_the_hard_limit_every_client_of_the_link_waits_and_nothing_is_dropped() {
    let mut b = Bare::new(|l| l.send_to_worker_buffer_size = 8192);
    let (quiet, qid, mut qpeer) = b.client();
    // The worker does not read: the socket buffer fills, then the link's own buffer.
    let mut filler = Vec::new();
    while filler.len() < 1 << 16 {
        packet::encode(&mut filler, &Header::command(cmd::PING, 0, flag::BODY_IS_SCALAR), b"", &[0; 1000]);
    }
    let mut blocked = false;
    for _ in 0..64 {
        b.gw.links.out(b.link).unwrap().extend(&filler);
        b.turn();
        if b.queued() >= 8192 {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the socket pair took everything");
    qpeer.write_all(b"wait\n").unwrap();
    b.readable(quiet);
    assert_eq!(b.gw.clients.get(quiet).unwrap().flow.paused, LINK, "held, not dropped");
    // The worker reads everything: the client resumes and its message arrives.
    let mut got = Vec::new();
    for _ in 0..10_000 {
        got.extend(b.events());
        if got.iter().any(|(id, _)| *id == qid) {
            break;
        }
        b.turn();
    }
    assert_eq!(got, vec![(qid, b"wait".to_vec())]);
    assert_eq!(b.counter(|s| &s.send_fail), 0);
}

#[test]
fn over_its_rate_a_client_is_throttled_and_resumed_by_the_refill_timer() {
    let mut b = Bare::new(|l| {
        l.flow.max_messages_per_second = 10;
        l.flow.max_bytes_per_second = 0;
    });
    let (fast, fid, mut fpeer) = b.client();
    let (other, oid, mut opeer) = b.client();
    fpeer.write_all(&b"m\n".repeat(30)).unwrap();
    b.readable(fast);
    b.turn();
    let count = |got: &[(u32, Vec<u8>)], who: u32| got.iter().filter(|(id, _)| *id == who).count();
    let mut got = b.events();
    assert_eq!(count(&got, fid), 11, "one second's worth, and the message that crossed");
    assert_eq!(b.gw.clients.get(fast).unwrap().flow.paused, RATE);
    assert_eq!(b.gw.clients.throttled, vec![fid]);
    assert_eq!(b.counter(|s| &s.limit_rate), 1);
    // Another client is not slowed down.
    opeer.write_all(&b"o\n".repeat(5)).unwrap();
    b.readable(other);
    b.turn();
    got.extend(b.events());
    assert_eq!(count(&got, oid), 5);
    // The refill timer before the bucket refilled: still paused.
    b.gw.refill();
    assert_eq!(b.gw.clients.get(fast).unwrap().flow.paused, RATE);
    // Ten seconds later the bucket is full again (never more than full): resumed from the
    // list, read with no new edge, and paused again after another second's worth.
    b.gw.started -= Duration::from_secs(10);
    b.gw.refill();
    assert!(b.gw.clients.throttled.is_empty());
    assert_eq!(b.gw.clients.get(fast).unwrap().flow.paused, 0);
    b.turn();
    got.extend(b.events());
    assert_eq!(count(&got, fid), 22);
    assert_eq!(b.counter(|s| &s.limit_rate), 2);
    assert_eq!(b.gw.clients.get(fast).unwrap().flow.paused, RATE);
}

#[test]
fn over_its_byte_rate_with_the_close_policy_a_websocket_client_gets_1008() {
    let gw = Gw::with_limits(Proto::WebSocket, |l| {
        l.flow.max_messages_per_second = 0;
        l.flow.max_bytes_per_second = 100;
        l.flow.rate_policy = RatePolicy::Close;
    });
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    c.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    c.until(|buf| Some(((), buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4)));
    w.expect(cmd::ON_WEBSOCKET_CONNECT);
    // Three 40-byte messages: the third crosses 100 bytes.
    let mask = [9u8, 8, 7, 6];
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.extend([0x81, 0x80 | 40]);
        frames.extend_from_slice(&mask);
        frames.extend((0..40).map(|i| b'a' ^ mask[i % 4]));
    }
    c.write(&frames);
    for _ in 0..3 {
        assert_eq!(w.expect(cmd::ON_MESSAGE).header.connection_id, id);
    }
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, id, "closed after the third");
    assert_eq!(c.until_closed(), [0x88, 2, 0x03, 0xf0], "close 1008 (policy violation)");
    let mut api = gw.api();
    assert_eq!(api.query(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b""), b"i:0;");
}

#[test]
fn a_client_held_with_input_waiting_is_not_closed_as_silent() {
    let mut b = Bare::new(|l| {
        l.flow.max_messages_per_second = 10;
        l.flow.max_bytes_per_second = 0;
    });
    b.gw.settings.ping_limit = 1;
    let (fast, _, mut fpeer) = b.client();
    let (idle, _, _ipeer) = b.client();
    fpeer.write_all(&b"m\n".repeat(30)).unwrap();
    b.readable(fast);
    b.turn();
    assert_eq!(b.gw.clients.get(fast).unwrap().flow.paused, RATE);
    // Past the heartbeat limit: the silent client goes, the throttled one (its messages wait
    // unread) stays.
    for _ in 0..5 {
        b.gw.heartbeat();
    }
    b.turn();
    assert!(b.gw.clients.get(idle).is_none_or(|c| c.conn.dead), "the silent client was not closed");
    assert!(!b.gw.clients.get(fast).unwrap().conn.dead, "the throttled client was closed as silent");
}

/// The packets a worker's end of a link can read now: (command, connection id, body); panics
/// on bytes that do not start a packet.
fn packets(worker: &mut StdUnix) -> Vec<(u8, u32, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match worker.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("worker read: {e}"),
        }
    }
    let mut out = Vec::new();
    let mut used = 0;
    while let Some((p, n)) = packet::decode(&bytes[used..], usize::MAX).expect("whole packets") {
        out.push((p.header.cmd, p.header.connection_id, p.body.to_vec()));
        used += n;
    }
    assert_eq!(used, bytes.len(), "a packet cut short");
    out
}

#[test]
fn a_worker_that_redials_gets_the_events_queued_on_its_older_link() {
    let mut b = Bare::new(|_| {});
    let hello = |w: &mut StdUnix| {
        let mut p = Vec::new();
        let body = worker_connect_body("Redial:0", SECRET);
        packet::encode(&mut p, &Header::command(cmd::WORKER_CONNECT, 0, flag::BODY_IS_SCALAR), b"", &body);
        w.write_all(&p).unwrap();
    };
    hello(&mut b.worker);
    b.gw.on_inner_ready(b.link, Ready::READABLE);
    b.turn();
    assert!(b.gw.links.get(b.link).unwrap().is_worker());
    // The worker stops reading (its side of the link timed out): the socket fills, part of a
    // packet is written, and the client's events stay queued in the gateway.
    b.clog();
    let (c, cid, mut peer) = b.client();
    peer.write_all(b"one\ntwo\nthree\n").unwrap();
    b.readable(c);
    b.turn();
    assert!(b.queued() > 0);
    // It redials with the same key.
    let (end, mut worker2) = StdUnix::pair().unwrap();
    worker2.set_nonblocking(true).unwrap();
    let io = Io::Unix(mio::net::UnixStream::from_std(nonblocking(end)));
    let link2 = b.gw.links.insert(b.reactor.ctx().registry, io, "unix".into(), true).unwrap();
    hello(&mut worker2);
    b.gw.on_inner_ready(link2, Ready::READABLE);
    b.turn();
    // The new link starts with whole packets: the three events, in order.
    let events: Vec<Vec<u8>> = packets(&mut worker2)
        .into_iter()
        .filter(|(command, id, _)| *command == cmd::ON_MESSAGE && *id == cid)
        .map(|(_, _, body)| body)
        .collect();
    assert_eq!(events, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    // The older link is gone, with nothing of those events written to it.
    b.turn();
    assert!(b.gw.links.get(b.link).is_none_or(|l| l.conn.dead));
}
