//! Reading fuzz input as a sequence of small decisions, and feeding a byte stream in chunks.

/// A cursor over fuzz input that never fails: past the end, numbers read as 0 and slices
/// as empty.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = (self.pos + 1).min(self.data.len());
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.data.len());
        let s = &self.data[self.pos..end];
        self.pos = end;
        s
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }

    /// A length-prefixed slice: one byte says how many bytes follow (at most 255).
    pub fn short_slice(&mut self) -> &'a [u8] {
        let n = self.byte() as usize;
        self.take(n)
    }

    /// How a stream is cut into reads: a count byte `n` (mod 8) then `n` size bytes, used in
    /// a cycle (size byte `b` is a read of `b + 1` bytes). `n == 0` delivers everything at once.
    pub fn chunks(&mut self) -> Chunks {
        let n = (self.byte() % 8) as usize;
        Chunks { sizes: self.take(n).iter().map(|&b| b as usize + 1).collect(), next: 0 }
    }
}

/// Read sizes for a stream (see [`Input::chunks`]).
#[derive(Clone, Debug)]
pub struct Chunks {
    sizes: Vec<usize>,
    next: usize,
}

impl Chunks {
    /// Everything in one read.
    pub fn whole() -> Chunks {
        Chunks { sizes: Vec::new(), next: 0 }
    }

    /// Size of the next read.
    pub fn next_size(&mut self) -> usize {
        if self.sizes.is_empty() {
            return usize::MAX;
        }
        let s = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        s
    }

    /// `stream` cut into reads.
    pub fn split(mut self, mut stream: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while !stream.is_empty() {
            let (head, tail) = stream.split_at(self.next_size().min(stream.len()));
            out.push(head);
            stream = tail;
        }
        out
    }
}

/// Big-endian u32 at the start of `b` (which has at least 4 bytes).
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Big-endian u16 at the start of `b` (which has at least 2 bytes).
pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
