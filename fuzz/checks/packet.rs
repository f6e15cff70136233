//! GatewayProtocol packets (`wire::packet`): what gateways read from workers and
//! GatewayClients, and workers read from gateways.

use gatewayworker::internals::wire::packet::{self, DecodeError, HEADER_LEN, Header, Packet};

use super::input::{Input, be16, be32};

/// The limits the decoders are called with: the gateway's default `max_package_size`, the
/// worker's, the smallest possible, and none.
const LIMITS: [usize; 5] = [10_485_760, 64 << 20, HEADER_LEN, 64, usize::MAX];

pub fn check(data: &[u8]) {
    for max in LIMITS.into_iter().chain([data.len()]) {
        decode_one(data, max);
    }
    split_stream(data, 10_485_760);
    encode_then_decode(data);
}

/// `peek_len` and `decode` agree with each other and with the bytes.
fn decode_one(buf: &[u8], max: usize) {
    let peek = packet::peek_len(buf, max);
    let res = packet::decode(buf, max);
    if buf.len() < 4 {
        assert_eq!(peek, Ok(None));
        assert_eq!(res, Ok(None));
        return;
    }
    let announced = be32(buf) as usize;
    let n = match peek {
        Ok(None) => panic!("peek_len waits with {} bytes", buf.len()),
        Err(e) => {
            assert!(announced < HEADER_LEN || announced > max, "{announced} refused with max {max}");
            assert_eq!(e, DecodeError::BadLength { pack_len: announced as u64, max });
            assert_eq!(res, Err(e));
            return;
        }
        Ok(Some(n)) => n,
    };
    assert_eq!(n, announced);
    assert!((HEADER_LEN..=max).contains(&n));
    let (p, used) = match res {
        Ok(None) => {
            assert!(buf.len() < n, "whole packet of {n} bytes in {} not decoded", buf.len());
            return;
        }
        Err(DecodeError::BadExtLength { ext_len, pack_len }) => {
            assert!(buf.len() >= n);
            assert_eq!(pack_len as usize, n);
            assert_eq!(ext_len, be32(&buf[24..]));
            assert!(ext_len as usize > n - HEADER_LEN, "ext_len {ext_len} fits in {n}");
            return;
        }
        Err(e) => panic!("decode refused what peek_len accepted: {e}"),
        Ok(Some(found)) => found,
    };
    assert_eq!(used, n);
    assert!(used <= buf.len());
    assert_eq!(HEADER_LEN + p.ext.len() + p.body.len(), used);
    let h = p.header;
    let fields = (h.cmd, h.local_ip, h.local_port, h.client_ip, h.client_port);
    assert_eq!(fields, (buf[4], be32(&buf[5..]), be16(&buf[9..]), be32(&buf[11..]), be16(&buf[15..])));
    assert_eq!((h.connection_id, h.flag, h.gateway_port), (be32(&buf[17..]), buf[21], be16(&buf[22..])));
    assert_eq!(p.ext.len(), be32(&buf[24..]) as usize);
    let ext_end = HEADER_LEN + p.ext.len();
    assert_eq!(p.ext, &buf[HEADER_LEN..ext_end]);
    assert_eq!(p.body, &buf[ext_end..n]);

    // Encoding the decoded fields gives the same bytes back.
    let mut out = Vec::new();
    packet::encode(&mut out, &h, p.ext, p.body);
    assert_eq!(out, &buf[..n]);
    out.clear();
    packet::encode_head(&mut out, &h, p.ext.len(), p.body.len());
    assert_eq!(out, &buf[..HEADER_LEN]);

    // What follows the packet does not change it, and no prefix of it is a packet.
    assert_eq!(packet::decode(&buf[..n], max), Ok(Some((p, n))));
    for cut in [0, 3, 4, HEADER_LEN - 1, n - 1] {
        assert_eq!(packet::decode(&buf[..cut], max), Ok(None), "prefix of {cut} bytes");
    }
}

/// A stream of packets (as read from a link) splits into whole packets covering the bytes in
/// order, until the rest is partial or refused.
fn split_stream(buf: &[u8], max: usize) {
    let mut used = 0;
    while let Ok(Some((p, n))) = packet::decode(&buf[used..], max) {
        assert_eq!(n, HEADER_LEN + p.ext.len() + p.body.len());
        used += n;
    }
    assert!(used <= buf.len());
}

/// Any header, ext_data and body encode to a packet that decodes to the same fields.
fn encode_then_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let header = Header {
        cmd: input.byte(),
        local_ip: input.u32(),
        local_port: input.u16(),
        client_ip: input.u32(),
        client_port: input.u16(),
        connection_id: input.u32(),
        flag: input.byte(),
        gateway_port: input.u16(),
    };
    let ext = input.short_slice();
    let body = input.rest();
    let mut out = vec![0xAA; data.len() % 3]; // encode appends
    let start = out.len();
    packet::encode(&mut out, &header, ext, body);
    let encoded = &out[start..];
    let len = encoded.len();
    assert_eq!(len, HEADER_LEN + ext.len() + body.len());
    let want = Packet { header, ext, body };
    for max in [len, usize::MAX] {
        assert_eq!(packet::decode(encoded, max), Ok(Some((want, len))));
    }
    if len > HEADER_LEN {
        let e = DecodeError::BadLength { pack_len: len as u64, max: len - 1 };
        assert_eq!(packet::decode(encoded, len - 1), Err(e));
    }
    let mut reply = Vec::new();
    packet::encode_reply(&mut reply, body);
    assert_eq!(be32(&reply) as usize, body.len());
    assert_eq!(&reply[4..], body);
}
