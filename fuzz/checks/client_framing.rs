//! The `text` and `frame` client protocols (`net::text`, `net::frame`): what a gateway reads
//! from its clients, buffered as the gateway buffers it.

use gatewayworker::internals::net::{frame, text};

use super::input::{Chunks, Input, be32};

/// How a stream ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Waiting for more bytes, this many buffered.
    Waiting(usize),
    /// `text`: a line over the limit.
    TooLong,
    /// `frame`: an impossible announced length.
    BadLength(u32),
}

/// One byte picks the limit, then the read sizes (see [`Input::chunks`]); the rest is the
/// stream, read as text and as frames.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let max = limit(input.byte());
    let chunks = input.chunks();
    let stream = input.rest();

    text_call(stream, max);
    let want = text_model(stream, max);
    assert_eq!(drive(stream, Chunks::whole(), max, text_step), want);
    assert_eq!(drive(stream, chunks.clone(), max, text_step), want);

    frame_call(stream, max);
    let want = frame_model(stream, max);
    assert_eq!(drive(stream, Chunks::whole(), max, frame_step), want);
    assert_eq!(drive(stream, chunks, max, frame_step), want);
}

/// Small limits (to reach them), a middle one, the default `max_package_size`, and none.
fn limit(b: u8) -> usize {
    match b >> 6 {
        0 => (b & 0x3f) as usize,
        1 => (b & 0x3f) as usize * 64,
        2 => 10_485_760,
        _ => usize::MAX,
    }
}

/// One message out of `buf`: `Ok(Some((message, consumed)))`, `Ok(None)` to wait.
type Step = fn(&[u8], usize) -> Result<Option<(Vec<u8>, usize)>, End>;

/// Feed `stream` in reads as `Client::next` does: after each read, take every whole message.
fn drive(stream: &[u8], chunks: Chunks, max: usize, step: Step) -> (Vec<Vec<u8>>, End) {
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    for read in chunks.split(stream) {
        buf.extend_from_slice(read);
        loop {
            match step(&buf, max) {
                Ok(Some((msg, used))) => {
                    assert!(msg.len() <= max, "message of {} bytes over the limit {max}", msg.len());
                    assert!(used > 0 && used <= buf.len());
                    messages.push(msg);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(end) => return (messages, end),
            }
        }
    }
    (messages, End::Waiting(buf.len()))
}

fn text_step(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, End> {
    match text::input(buf, max) {
        Ok(Some((len, used))) => Ok(Some((buf[..len].to_vec(), used))),
        Ok(None) => Ok(None),
        Err(text::TooLong) => Err(End::TooLong),
    }
}

fn frame_step(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, End> {
    match frame::input(buf, max) {
        Ok(Some(total)) => Ok(Some((buf[4..total].to_vec(), total))),
        Ok(None) => Ok(None),
        Err(frame::BadLength(n)) => Err(End::BadLength(n)),
    }
}

/// `text::input` on one buffer, against the definition: the first line (up to `\n`) without
/// its trailing `\r`s, refused when longer than `max`.
fn text_call(buf: &[u8], max: usize) {
    let newline = buf.iter().position(|&b| b == b'\n');
    match text::input(buf, max) {
        Ok(Some((len, used))) => {
            assert_eq!(Some(used - 1), newline);
            assert!(len <= max && len < used);
            assert!(buf[len..used - 1].iter().all(|&b| b == b'\r'));
            assert!(len == 0 || buf[len - 1] != b'\r');
            // The message encodes back to a line that decodes to it.
            let mut out = Vec::new();
            text::encode(&mut out, &buf[..len]);
            assert_eq!(text::input(&out, max), Ok(Some((len, len + 1))));
        }
        Ok(None) => assert!(newline.is_none() && buf.len() <= max),
        Err(text::TooLong) => assert!(newline.is_none_or(|p| p > max) && buf.len() > max),
    }
}

fn text_model(mut rest: &[u8], max: usize) -> (Vec<Vec<u8>>, End) {
    let mut messages = Vec::new();
    loop {
        let Some(pos) = rest.iter().position(|&b| b == b'\n') else {
            let end = if rest.len() > max { End::TooLong } else { End::Waiting(rest.len()) };
            return (messages, end);
        };
        if pos > max {
            return (messages, End::TooLong);
        }
        let mut line = &rest[..pos];
        while let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        messages.push(line.to_vec());
        rest = &rest[pos + 1..];
    }
}

/// `frame::input` on one buffer, against the definition: a u32 total length (4..=max+4),
/// then the payload.
fn frame_call(buf: &[u8], max: usize) {
    let res = frame::input(buf, max);
    if buf.len() < 4 {
        return assert_eq!(res, Ok(None));
    }
    let total = be32(buf);
    match res {
        Ok(Some(n)) => {
            assert_eq!(n, total as usize);
            assert!(n >= 4 && n - 4 <= max && n <= buf.len());
            let mut out = Vec::new();
            frame::encode(&mut out, &buf[4..n]);
            assert_eq!(out, &buf[..n]);
        }
        Ok(None) => assert!(total >= 4 && (total as usize - 4) <= max && buf.len() < total as usize),
        Err(frame::BadLength(n)) => {
            assert_eq!(n, total);
            assert!(n < 4 || n as usize - 4 > max);
        }
    }
}

fn frame_model(mut rest: &[u8], max: usize) -> (Vec<Vec<u8>>, End) {
    let mut messages = Vec::new();
    loop {
        if rest.len() < 4 {
            return (messages, End::Waiting(rest.len()));
        }
        let total = be32(rest);
        if total < 4 || total as usize - 4 > max {
            return (messages, End::BadLength(total));
        }
        if rest.len() < total as usize {
            return (messages, End::Waiting(rest.len()));
        }
        messages.push(rest[4..total as usize].to_vec());
        rest = &rest[total as usize..];
    }
}
