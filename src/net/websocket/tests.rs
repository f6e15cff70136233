use super::*;

const SAMPLE: &str = "GET /chat?token=abc&x[]=1&x[]=2&name=J%C3%BCrgen&empty= HTTP/1.1\r\nHost: 127.0.0.1:14272\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\nUser-Agent: compat-test/1\r\nCookie: sid=s1; theme=dark; enc=a%20b\r\nX-Custom-Header: v1\r\n\r\n";

#[test]
fn accepts_with_workermans_response_bytes() {
    let Handshake::Accepted { response, request, consumed } = handshake(SAMPLE.as_bytes()) else {
        panic!("not accepted")
    };
    assert_eq!(consumed, SAMPLE.len());
    assert_eq!(
        response,
        b"HTTP/1.1 101 Switching Protocol\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    assert_eq!(request.header("x-custom-header"), Some(&b"v1"[..]));
}

#[test]
fn waits_for_the_whole_request_and_keeps_what_follows() {
    for cut in [0, 1, 20, SAMPLE.len() - 1] {
        assert!(matches!(handshake(&SAMPLE.as_bytes()[..cut]), Handshake::Partial), "cut {cut}");
    }
    let mut with_frame = SAMPLE.as_bytes().to_vec();
    with_frame.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
    let Handshake::Accepted { consumed, .. } = handshake(&with_frame) else { panic!() };
    assert_eq!(&with_frame[consumed..], &[0x81, 0x80, 1, 2, 3, 4]);
}

#[test]
fn rejects_like_workerman() {
    let no_key = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let v12 = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n";
    let post = "POST / HTTP/1.1\r\nHost: x\r\n\r\n";
    for (req, status) in
        [(no_key, "400"), (v12, "426"), (post, "400"), ("\x16\x03\x01garbage\r\n\r\n", "400")]
    {
        match handshake(req.as_bytes()) {
            Handshake::Rejected { response, reason } => {
                assert!(response.starts_with(format!("HTTP/1.1 {status}").as_bytes()), "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{req:?}: {other:?}"),
        }
    }
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST));
    assert!(matches!(handshake(huge.as_bytes()), Handshake::Rejected { .. }));
}

#[test]
fn the_size_limit_does_not_depend_on_how_the_request_arrives() {
    // Found by the ws_handshake fuzz target: a complete request over MAX_REQUEST read in one
    // piece was answered (here 426, or accepted), in pieces it was refused as too big.
    let head =
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for version in ["13", "12"] {
        let request = |size: usize| {
            let tail = format!("Sec-WebSocket-Version: {version}\r\n\r\n");
            let pad = "p".repeat(size - head.len() - tail.len() - "X: \r\n".len());
            format!("{head}X: {pad}\r\n{tail}").into_bytes()
        };
        let at_limit = request(MAX_REQUEST);
        assert_eq!(at_limit.len(), MAX_REQUEST);
        assert!(!matches!(handshake(&at_limit), Handshake::Rejected { response: BAD_REQUEST, .. }));
        let over = request(MAX_REQUEST + 1);
        assert!(matches!(handshake(&over[..MAX_REQUEST]), Handshake::Rejected { response: BAD_REQUEST, .. }));
        assert!(matches!(handshake(&over), Handshake::Rejected { response: BAD_REQUEST, .. }));
    }
}

#[test]
fn frames_use_the_shortest_length_form() {
    let mut out = Vec::new();
    encode_frame(&mut out, OP_TEXT, b"hi");
    assert_eq!(out, b"\x81\x02hi");
    out.clear();
    encode_frame(&mut out, OP_BINARY, &[0u8; 126]);
    assert_eq!(&out[..4], &[0x82, 126, 0, 126]);
    out.clear();
    encode_frame(&mut out, OP_TEXT, &vec![0u8; 70_000]);
    assert_eq!(&out[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    out.clear();
    encode_close(&mut out, 1000);
    assert_eq!(out, [0x88, 2, 3, 0xe8]);
}

#[test]
fn a_frame_is_whole_only_with_its_last_byte() {
    for size in [0usize, 5, 125, 126, 300, 70_000] {
        let mut f = Vec::new();
        encode_frame(&mut f, OP_BINARY, &vec![1u8; size]);
        for cut in 0..f.len().min(140) {
            assert_eq!(frame_len(&f[..cut], 1 << 20), None, "size {size} cut at {cut}");
        }
        assert_eq!(frame_len(&f[..f.len() - 1], 1 << 20), None);
        assert_eq!(frame_len(&f, 1 << 20), Some(f.len()));
        let mut two = f.clone();
        two.extend_from_slice(b"\x81\x00");
        assert_eq!(frame_len(&two, 1 << 20), Some(f.len()), "only the first frame");
    }
    // Masked (as clients send): 4 more header bytes.
    let masked = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    assert_eq!(frame_len(&masked[..7], 100), None);
    assert_eq!(frame_len(&masked, 100), Some(8));
    // Over the limit: the header alone, so the decoder refuses it before the payload comes.
    assert_eq!(frame_len(&[0x82, 0xfe, 0x01, 0x00, 9, 9, 9, 9], 100), Some(8));
    assert_eq!(frame_len(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0], 100), Some(10));
    assert_eq!(frame_len(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3], 100), None);
    let head = |b| FrameHead::of(&[b]);
    assert_eq!(head(0x01), FrameHead { fin: false, control: false, continuation: false });
    assert_eq!(head(0x80), FrameHead { fin: true, control: false, continuation: true });
    assert_eq!(head(0x89), FrameHead { fin: true, control: true, continuation: false });
}
