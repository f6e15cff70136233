//! The client state machine over a real non-blocking socket pair: the peer writes in small
//! pieces (short reads, `WouldBlock` in between) and stops reading (our writes block).

use std::io::{Read, Write};

use super::*;
use crate::net::websocket::config;

fn pair(proto: Proto) -> (Client, std::os::unix::net::UnixStream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut c = Client::new(1, Io::Unix(mio::net::UnixStream::from_std(a)), proto, 0x7f000001, 4000, 0);
    c.conn.ready = Ready::READABLE | Ready::WRITABLE;
    (c, b)
}

/// Drive `next` until it stops producing items; collect messages.
fn drain(c: &mut Client) -> (Vec<(Vec<u8>, bool)>, Vec<Inbound>) {
    let cfg = config(1024);
    let mut scratch = Vec::new();
    let mut msgs = Vec::new();
    let mut other = Vec::new();
    let mut rx = Rx::default();
    c.conn.ready.insert(Ready::READABLE);
    loop {
        match c.next(&mut rx, &mut scratch, 1024, &cfg) {
            Inbound::Message { binary } => msgs.push((scratch.clone(), binary)),
            Inbound::Idle => break,
            Inbound::Closed(x) => {
                other.push(Inbound::Closed(x));
                break;
            }
            up @ Inbound::Upgraded(_) => other.push(up),
        }
    }
    c.stash(&mut rx);
    assert!(rx.is_empty());
    (msgs, other)
}

fn peer_read(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    peer.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = peer.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9, 8, 7, 6];
    let mut f = vec![0x80 | op, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const HANDSHAKE: &[u8] = b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn text_lines_split_across_reads() {
    let (mut c, mut peer) = pair(Proto::Text);
    peer.write_all(b"hel").unwrap();
    assert!(drain(&mut c).0.is_empty(), "half a line is not a message");
    assert!(!c.conn.ready.contains(Ready::READABLE), "WouldBlock clears the ready bit");
    peer.write_all(b"lo\r\nwor").unwrap();
    assert_eq!(drain(&mut c).0, vec![(b"hello".to_vec(), false)]);
    peer.write_all(b"ld\n\n").unwrap();
    assert_eq!(drain(&mut c).0, vec![(b"world".to_vec(), false), (b"".to_vec(), false)]);
    peer.write_all(&[b'x'; 2000]).unwrap();
    let (_, other) = drain(&mut c);
    assert!(matches!(other.as_slice(), [Inbound::Closed(Closed::TooBig(_))]));
}

#[test]
fn frame_header_split_across_reads() {
    let (mut c, mut peer) = pair(Proto::Frame);
    peer.write_all(&[0, 0]).unwrap();
    assert!(drain(&mut c).0.is_empty());
    peer.write_all(&[0, 7, b'a', b'b']).unwrap();
    assert!(drain(&mut c).0.is_empty());
    peer.write_all(&[b'c', 0, 0, 0, 4]).unwrap();
    assert_eq!(drain(&mut c).0, vec![(b"abc".to_vec(), false), (b"".to_vec(), false)]);
    peer.write_all(&[0, 0, 0, 2]).unwrap();
    assert!(matches!(drain(&mut c).1.as_slice(), [Inbound::Closed(Closed::TooBig(_))]));
}

#[test]
fn websocket_messages_before_the_handshake_follow_the_101() {
    let (mut c, mut peer) = pair(Proto::WebSocket);
    c.send(b"early", false, false, 1 << 20).unwrap();
    assert!(c.flush().unwrap(), "nothing may be written before the 101");
    assert!(peer_read(&mut peer).is_empty());
    peer.write_all(&HANDSHAKE[..30]).unwrap();
    assert!(drain(&mut c).1.is_empty());
    let mut rest = HANDSHAKE[30..].to_vec();
    rest.extend(masked(1, b"hi"));
    peer.write_all(&rest).unwrap();
    let (msgs, other) = drain(&mut c);
    assert!(matches!(other.as_slice(), [Inbound::Upgraded(r)] if r.uri == "/x"));
    assert_eq!(msgs, vec![(b"hi".to_vec(), false)], "a frame behind the request is not lost");
    assert!(c.flush().unwrap());
    let got = peer_read(&mut peer);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocol\r\n"));
    assert_eq!(&got[head_end..], b"\x81\x05early");
}

/// A websocket client past its handshake, the 101 read by the peer.
fn upgraded() -> (Client, std::os::unix::net::UnixStream) {
    let (mut c, mut peer) = pair(Proto::WebSocket);
    peer.write_all(HANDSHAKE).unwrap();
    drain(&mut c);
    c.flush().unwrap();
    peer_read(&mut peer);
    (c, peer)
}

#[test]
fn websocket_binary_ping_and_close() {
    let (mut c, mut peer) = upgraded();
    let mut frames = masked(2, &[0, 1, 255]);
    frames.extend(masked(9, b"pp"));
    peer.write_all(&frames).unwrap();
    assert_eq!(drain(&mut c).0, vec![(vec![0, 1, 255], true)]);
    c.send(b"after", false, false, 1 << 20).unwrap();
    c.flush().unwrap();
    assert_eq!(peer_read(&mut peer), b"\x8a\x02pp\x81\x05after", "pong first, in order");
    peer.write_all(&masked(8, &[3, 232])).unwrap();
    let (_, other) = drain(&mut c);
    assert!(matches!(other.as_slice(), [Inbound::Closed(Closed::Peer)]));
    c.flush().unwrap();
    assert_eq!(peer_read(&mut peer), [0x88, 2, 3, 232], "close frame answered");
}

#[test]
fn websocket_protocol_errors_queue_a_close_frame() {
    let (mut c, mut peer) = upgraded();
    peer.write_all(&[0x81, 0x02, b'n', b'o']).unwrap(); // unmasked
    assert!(matches!(drain(&mut c).1.as_slice(), [Inbound::Closed(Closed::Bad(..))]));
    c.flush().unwrap();
    assert_eq!(peer_read(&mut peer), [0x88, 2, 0x03, 0xea], "1002 protocol error");
}

#[test]
fn blocked_writes_keep_order_and_respect_the_limit() {
    let (mut c, mut peer) = pair(Proto::Text);
    let line = vec![b'z'; 1000];
    let mut sent = 0usize;
    // Fill the socket and our buffer until the limit refuses more.
    loop {
        match c.send(&line, false, false, 256 * 1024) {
            Ok(()) => sent += 1,
            Err(SendError::BufferFull) => break,
            Err(e) => panic!("{e:?}"),
        }
        if !c.flush().unwrap() && c.conn.out.len() >= 256 * 1024 {
            continue;
        }
    }
    assert!(!c.conn.ready.contains(Ready::WRITABLE), "a blocked write clears the ready bit");
    assert!(c.conn.out.len() >= 256 * 1024);
    // The peer reads; we flush until everything is out.
    let mut got = Vec::new();
    peer.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    while got.len() < sent * 1001 {
        match peer.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                c.conn.ready.insert(Ready::WRITABLE);
                c.flush().unwrap();
            }
        }
    }
    assert_eq!(got.len(), sent * 1001);
    assert!(got.chunks(1001).all(|l| l[..1000] == line[..] && l[1000] == b'\n'));
}

#[test]
fn kicked_before_the_handshake_gets_no_frames() {
    let (mut c, mut peer) = pair(Proto::WebSocket);
    c.send(b"early", false, false, 1 << 20).unwrap();
    c.send(b"bye", false, false, 1 << 20).unwrap();
    c.drop_early_output();
    c.close_after_flush();
    assert!(c.flush().unwrap());
    drop(c);
    assert!(peer_read(&mut peer).is_empty(), "no frame without a 101 before it");
}

#[test]
fn leftover_bytes_move_from_the_shared_buffer_to_the_client() {
    let cfg = config(1024);
    let mut msg = Vec::new();
    // Text: three lines in one read; the budget stops after one.
    let (mut c, mut peer) = pair(Proto::Text);
    peer.write_all(b"one\ntwo\nthr").unwrap();
    let mut rx = Rx::default();
    assert!(matches!(c.next(&mut rx, &mut msg, 1024, &cfg), Inbound::Message { .. }));
    assert_eq!(msg, b"one");
    c.stash(&mut rx);
    assert!(rx.is_empty() && c.pending_input() == 7);
    // Another client uses the shared buffer meanwhile.
    let (mut other, mut other_peer) = pair(Proto::Text);
    other_peer.write_all(b"x\n").unwrap();
    assert!(matches!(other.next(&mut rx, &mut msg, 1024, &cfg), Inbound::Message { .. }));
    assert_eq!(msg, b"x");
    other.stash(&mut rx);
    assert_eq!(drain(&mut c).0, vec![(b"two".to_vec(), false)]);
    peer.write_all(b"ee\n").unwrap();
    assert_eq!(drain(&mut c).0, vec![(b"three".to_vec(), false)]);
    // Websocket: three frames in one read.
    let (mut w, mut wpeer) = pair(Proto::WebSocket);
    wpeer.write_all(HANDSHAKE).unwrap();
    drain(&mut w);
    let mut frames = masked(1, b"a");
    frames.extend(masked(1, b"b"));
    frames.extend(masked(2, b"c"));
    wpeer.write_all(&frames).unwrap();
    w.conn.ready.insert(Ready::READABLE);
    assert!(matches!(w.next(&mut rx, &mut msg, 1024, &cfg), Inbound::Message { binary: false }));
    assert_eq!(msg, b"a");
    w.stash(&mut rx);
    assert!(rx.is_empty());
    assert_eq!(drain(&mut w).0, vec![(b"b".to_vec(), false), (b"c".to_vec(), true)]);
}

/// `masked` with the FIN bit as given (for fragments).
fn masked_fin(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = masked(op, payload);
    if !fin {
        f[0] &= 0x7f;
    }
    f
}

/// A client moved to another socket, as a handover does: its state, then its bytes.
fn moved(c: &mut Client) -> (Client, std::os::unix::net::UnixStream) {
    let state = c.snapshot(false);
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let io = Io::Unix(mio::net::UnixStream::from_std(a));
    let moved = Client::restore(state, io, c.route, &config(1024), 0);
    (moved, b)
}

#[test]
fn a_websocket_moves_mid_message_with_nothing_lost_or_repeated() {
    let (mut c, mut peer) = upgraded();
    // A whole message, the first fragment of another, a ping between fragments, and half of
    // the next fragment.
    let mut bytes = masked(1, b"one");
    bytes.extend(masked_fin(1, false, b"tw"));
    bytes.extend(masked(9, b"p"));
    let second = masked_fin(0, false, b"o-");
    bytes.extend(&second[..3]);
    for b in &bytes {
        // One byte per read: every frame boundary falls between two reads.
        peer.write_all(&[*b]).unwrap();
        let (msgs, other) = drain(&mut c);
        assert!(other.is_empty());
        assert!(msgs.is_empty() || msgs == vec![(b"one".to_vec(), false)]);
    }
    c.send(b"queued", false, false, 1 << 20).unwrap();
    let (mut c2, mut peer2) = moved(&mut c);
    assert_eq!(c2.id, c.id);
    // The pong and the queued message go out from the new connection, in order.
    c2.flush().unwrap();
    assert_eq!(peer_read(&mut peer2), b"\x8a\x01p\x81\x06queued");
    let mut rest = second[3..].to_vec();
    rest.extend(masked_fin(0, true, b"end"));
    rest.extend(masked(2, b"three"));
    peer2.write_all(&rest).unwrap();
    let (msgs, other) = drain(&mut c2);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(msgs, vec![(b"two-end".to_vec(), false), (b"three".to_vec(), true)]);
}

#[test]
fn text_frame_and_handshake_clients_move_with_their_partial_input() {
    let (mut c, mut peer) = pair(Proto::Text);
    peer.write_all(b"par").unwrap();
    assert!(drain(&mut c).0.is_empty());
    let (mut c2, mut peer2) = moved(&mut c);
    peer2.write_all(b"tial\n").unwrap();
    assert_eq!(drain(&mut c2).0, vec![(b"partial".to_vec(), false)]);

    let (mut c, mut peer) = pair(Proto::Frame);
    peer.write_all(&[0, 0, 0, 6, b'a']).unwrap();
    assert!(drain(&mut c).0.is_empty());
    let (mut c2, mut peer2) = moved(&mut c);
    peer2.write_all(b"b").unwrap();
    assert_eq!(drain(&mut c2).0, vec![(b"ab".to_vec(), false)]);

    let (mut c, mut peer) = pair(Proto::WebSocket);
    peer.write_all(&HANDSHAKE[..40]).unwrap();
    assert!(drain(&mut c).1.is_empty());
    c.send(b"early", false, false, 1 << 20).unwrap();
    let (mut c2, mut peer2) = moved(&mut c);
    assert!(c2.handshaking());
    let mut rest = HANDSHAKE[40..].to_vec();
    rest.extend(masked(1, b"hi"));
    peer2.write_all(&rest).unwrap();
    let (msgs, other) = drain(&mut c2);
    assert!(matches!(other.as_slice(), [Inbound::Upgraded(r)] if r.uri == "/x"));
    assert_eq!(msgs, vec![(b"hi".to_vec(), false)]);
    c2.flush().unwrap();
    let got = peer_read(&mut peer2);
    assert!(got.starts_with(b"HTTP/1.1 101") && got.ends_with(b"\x81\x05early"));
}
