//! Byte buffers for non-blocking sockets: `InBuf` collects bytes until a whole message is
//! there, `OutBuf` queues bytes until the socket takes them. Both give their memory back when
//! they run empty, so an idle connection holds no buffer.

use std::io::{self, Read, Write};

/// Incoming bytes not yet consumed by a decoder.
#[derive(Debug, Default)]
pub struct InBuf {
    buf: Vec<u8>,
    start: usize,
}

impl InBuf {
    /// Bytes received and not consumed yet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mark `n` bytes as consumed; frees the memory when nothing is left.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    pub fn extend(&mut self, b: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(b);
    }

    /// One `read` into spare capacity of at least `chunk` bytes. Returns what `read` returned.
    pub fn read_from<R: Read>(&mut self, r: &mut R, chunk: usize) -> io::Result<usize> {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + chunk, 0);
        let res = r.read(&mut self.buf[len..]);
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        res
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Outgoing bytes not yet accepted by the socket.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes not written yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The vector to append to (encoders write straight into it).
    pub fn vec(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    pub fn extend(&mut self, b: &[u8]) {
        self.vec().extend_from_slice(b);
    }

    /// Put `b` in front of everything queued.
    pub fn prepend(&mut self, b: &[u8]) {
        let mut v = Vec::with_capacity(b.len() + self.len());
        v.extend_from_slice(b);
        v.extend_from_slice(&self.buf[self.pos..]);
        self.buf = v;
        self.pos = 0;
    }

    /// Write until empty (`Ok(())`) or the socket would block (`Err(WouldBlock)`, bytes kept).
    /// A `write` returning 0 for a non-empty buffer is reported as `WriteZero`.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf = if self.buf.capacity() <= 4096 {
            let mut v = std::mem::take(&mut self.buf);
            v.clear();
            v
        } else {
            Vec::new()
        };
        self.pos = 0;
        Ok(())
    }

    /// The queued bytes preceded by the last `back` bytes already written (still held: the
    /// buffer drops written bytes only when it is emptied or compacted); `None` when fewer
    /// written bytes are held.
    pub fn with_written(&self, back: usize) -> Option<&[u8]> {
        self.pos.checked_sub(back).map(|from| &self.buf[from..])
    }

    /// The queued bytes after the first `skip`, taken out; the buffer is left empty.
    pub fn take_after(&mut self, skip: usize) -> Vec<u8> {
        let rest = self.buf.get(self.pos + skip..).map(<[u8]>::to_vec).unwrap_or_default();
        self.clear();
        rest
    }

    /// Drop queued bytes and memory (the connection is going away).
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A writer that accepts at most `chunk` bytes per call and blocks every `block_every`
    /// calls: injects short writes and `WouldBlock`.
    pub struct Choppy {
        pub out: Vec<u8>,
        pub chunk: usize,
        pub calls: usize,
        pub block_every: usize,
    }

    impl Write for Choppy {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.block_every > 0 && self.calls.is_multiple_of(self.block_every) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.chunk);
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A reader that returns its input `chunk` bytes at a time, then `WouldBlock`.
    pub struct Trickle {
        pub data: Vec<u8>,
        pub pos: usize,
        pub chunk: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.chunk).min(self.data.len() - self.pos);
            b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn out_buf_survives_short_writes_and_would_block() {
        let mut ob = OutBuf::default();
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        ob.extend(&payload);
        let mut w = Choppy { out: Vec::new(), chunk: 700, calls: 0, block_every: 3 };
        let mut rounds = 0;
        while let Err(e) = ob.write_to(&mut w) {
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            ob.extend(b""); // appending while blocked must not lose or reorder bytes
            rounds += 1;
        }
        assert!(rounds > 3);
        assert_eq!(w.out, payload);
        assert!(ob.is_empty());
    }

    #[test]
    fn out_buf_shows_what_it_wrote_last_and_hands_over_the_rest() {
        let mut ob = OutBuf::default();
        ob.extend(b"abcdefgh");
        let mut w = Choppy { out: Vec::new(), chunk: 3, calls: 0, block_every: 2 };
        assert!(ob.write_to(&mut w).is_err(), "3 bytes, then WouldBlock");
        assert_eq!(ob.with_written(3), Some(&b"abcdefgh"[..]));
        assert_eq!(ob.with_written(1), Some(&b"cdefgh"[..]));
        assert_eq!(ob.with_written(4), None, "only 3 written");
        assert_eq!(ob.take_after(2), b"fgh");
        assert!(ob.is_empty());
        assert_eq!(ob.take_after(0), b"");
    }

    #[test]
    fn in_buf_collects_trickled_bytes_and_frees_when_consumed() {
        let mut ib = InBuf::default();
        let mut r = Trickle { data: b"hello world".to_vec(), pos: 0, chunk: 3 };
        loop {
            match ib.read_from(&mut r, 16) {
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ib.data(), b"hello world");
        ib.consume(6);
        assert_eq!(ib.data(), b"world");
        ib.consume(5);
        assert!(ib.is_empty());
        assert_eq!(ib.buf.capacity(), 0);
    }

    fn would_block(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock
    }
}
