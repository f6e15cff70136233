//! PHP `serialize` / `unserialize` of [`Value`]s, byte-exact with PHP 8.2.

use std::fmt;

use super::{Array, Key, Value};

/// Why bytes are not an acceptable serialized value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhpError {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for PhpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad serialized PHP value at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for PhpError {}

/// Append PHP `serialize($v)` to `out`, byte-exact with PHP 8.2.
pub fn serialize_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"N;"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"b:1;" } else { b"b:0;" }),
        Value::Int(i) => {
            out.extend_from_slice(format!("i:{i};").as_bytes());
        }
        Value::Float(f) => {
            out.extend_from_slice(b"d:");
            push_float(*f, b'E', out);
            out.push(b';');
        }
        Value::Str(s) => push_str(s, out),
        Value::Array(a) => array_into(a, out),
    }
}

fn push_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("s:{}:\"", s.len()).as_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(b"\";");
}

fn array_into(a: &Array, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("a:{}:{{", a.len()).as_bytes());
    for (k, v) in a {
        match k {
            Key::Int(i) => out.extend_from_slice(format!("i:{i};").as_bytes()),
            Key::Str(s) => push_str(s, out),
        }
        serialize_into(v, out);
    }
    out.push(b'}');
}

/// PHP `serialize($v)`.
pub fn serialize(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_into(v, &mut out);
    out
}

/// PHP `serialize($a)` of an array.
pub fn serialize_array(a: &Array) -> Vec<u8> {
    let mut out = Vec::new();
    array_into(a, &mut out);
    out
}

/// Append a float as PHP prints it with `serialize_precision = -1` (`php_gcvt` with 17
/// digits over the shortest round-trip digits): plain notation while the decimal exponent is
/// in -4..=16 (`0.0001`, `1000000000000000`, no `.0` for integral values), else
/// `1.0E+25` / `1.5E-7`; `INF`, `-INF`, `NAN`, `-0`. `exp` is `E` (serialize) or `e` (JSON).
pub(super) fn push_float(f: f64, exp: u8, out: &mut Vec<u8>) {
    if f.is_nan() {
        return out.extend_from_slice(b"NAN");
    }
    if f.is_infinite() {
        return out.extend_from_slice(if f < 0.0 { b"-INF" } else { b"INF" });
    }
    let (neg, digits, decpt) = shortest_digits(f);
    if neg {
        out.push(b'-');
    }
    if !(-3..=17).contains(&decpt) {
        out.push(digits[0]);
        out.push(b'.');
        out.extend_from_slice(if digits.len() > 1 { &digits[1..] } else { b"0" });
        out.push(exp);
        out.extend_from_slice(format!("{:+}", decpt - 1).as_bytes());
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(&digits);
    } else {
        let int_len = decpt as usize;
        out.extend((0..int_len).map(|i| digits.get(i).copied().unwrap_or(b'0')));
        if digits.len() > int_len {
            out.push(b'.');
            out.extend_from_slice(&digits[int_len..]);
        }
    }
}

/// The shortest round-trip decimal digits of a finite float, as `zend_dtoa` mode 0 gives them:
/// (negative, digits without leading/trailing zeros (`"0"` for zero), decpt) with
/// value = 0.DIGITS × 10^decpt. Rust's `{:e}` prints exactly those digits: "-1.5e-7", "0e0".
fn shortest_digits(f: f64) -> (bool, Vec<u8>, i32) {
    let sci = format!("{f:e}");
    let (mantissa, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let decpt = e.parse::<i32>().unwrap_or(0) + 1;
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    (neg, mantissa.bytes().filter(|c| *c != b'.').collect(), decpt)
}

// ---------------------------------------------------------------------------------------------
// unserialize

/// Deepest array nesting `unserialize` accepts (PHP's default is 4096; sessions are shallow).
pub const MAX_DEPTH: usize = 128;

/// Smallest serialized array element: `i:0;N;`.
const MIN_ELEMENT_LEN: usize = 6;

/// PHP `unserialize($b, ['allowed_classes' => false])`, refusing objects (`O:`, `C:`, `E:`),
/// references (`r:`, `R:`), the legacy escaped string `S:`, out-of-range integers and
/// anything malformed. The whole input must be consumed. Nesting is limited to [`MAX_DEPTH`]
/// and declared lengths/counts are checked against the input before anything is allocated.
/// Duplicate array keys: the later value wins, in the first key's position (as PHP).
pub fn unserialize(b: &[u8]) -> Result<Value, PhpError> {
    let mut p = Parser { b, pos: 0 };
    let v = p.value(0)?;
    if p.pos != b.len() {
        return Err(p.err("trailing bytes after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> PhpError {
        PhpError { offset: self.pos, reason }
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn next(&mut self) -> Result<u8, PhpError> {
        let c = *self.b.get(self.pos).ok_or_else(|| self.err("unexpected end of input"))?;
        self.pos += 1;
        Ok(c)
    }

    fn expect(&mut self, want: u8, reason: &'static str) -> Result<(), PhpError> {
        let at = self.pos;
        match self.next()? {
            c if c == want => Ok(()),
            _ => Err(PhpError { offset: at, reason }),
        }
    }

    /// Bytes up to (not including) `end`, which is consumed; error at end of input.
    fn until(&mut self, end: u8) -> Result<&[u8], PhpError> {
        let start = self.pos;
        let len = self.b[start..].iter().position(|c| *c == end);
        let eof = PhpError { offset: self.b.len(), reason: "unexpected end of input" };
        let len = len.ok_or(eof)?;
        self.pos = start + len + 1;
        Ok(&self.b[start..start + len])
    }

    fn value(&mut self, depth: usize) -> Result<Value, PhpError> {
        let at = self.pos;
        let tag = self.next()?;
        let fail = |reason| Err(PhpError { offset: at, reason });
        match tag {
            b'N' => self.expect(b';', "expected ';'").map(|_| Value::Null),
            b'b' => self.boolean().map(Value::Bool),
            b'i' => self.int().map(Value::Int),
            b'd' => self.float().map(Value::Float),
            b's' => self.string().map(Value::Str),
            b'a' => self.array(depth).map(Value::Array),
            b'O' | b'C' | b'E' => fail("objects are refused"),
            b'r' | b'R' => fail("references are refused"),
            b'S' => fail("escaped strings (S:) are not supported"),
            _ => fail("unknown type"),
        }
    }

    fn boolean(&mut self) -> Result<bool, PhpError> {
        self.expect(b':', "expected ':'")?;
        let at = self.pos;
        let v = match self.next()? {
            b'0' => false,
            b'1' => true,
            _ => {
                return Err(PhpError { offset: at, reason: "bad boolean" });
            }
        };
        self.expect(b';', "expected ';'")?;
        Ok(v)
    }

    /// `:[+-]?[0-9]+;` after the tag, within i64.
    fn int(&mut self) -> Result<i64, PhpError> {
        self.expect(b':', "expected ':'")?;
        let at = self.pos;
        let text = self.until(b';')?;
        let digits = text.strip_prefix(b"-").or_else(|| text.strip_prefix(b"+")).unwrap_or(text);
        let bad = |reason| PhpError { offset: at, reason };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("bad integer"));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("bad integer"))?;
        text.parse().map_err(|_| bad("integer out of range"))
    }

    /// `:<float>;` after the tag: PHP's `iv | nv | nvexp | NAN | -?INF` grammar.
    fn float(&mut self) -> Result<f64, PhpError> {
        self.expect(b':', "expected ':'")?;
        let at = self.pos;
        let text = self.until(b';')?;
        match text {
            b"NAN" => return Ok(f64::NAN),
            b"INF" => return Ok(f64::INFINITY),
            b"-INF" => return Ok(f64::NEG_INFINITY),
            _ => {}
        }
        let bad = PhpError { offset: at, reason: "bad float" };
        if !is_php_number(text) {
            return Err(bad);
        }
        std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(bad)
    }

    /// An unsigned decimal (`[0-9]+`) ended by `end`, as a length or count.
    fn length(&mut self, end: u8) -> Result<usize, PhpError> {
        let at = self.pos;
        let text = self.until(end)?;
        let bad = |reason| PhpError { offset: at, reason };
        if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
            return Err(bad("bad length"));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("bad length"))?;
        text.parse().map_err(|_| bad("length out of range"))
    }

    /// `:<len>:"<bytes>";` after the tag.
    fn string(&mut self) -> Result<Vec<u8>, PhpError> {
        self.expect(b':', "expected ':'")?;
        let len = self.length(b':')?;
        self.expect(b'"', "expected '\"'")?;
        if len > self.remaining().saturating_sub(2) {
            return Err(self.err("string length exceeds the input"));
        }
        let s = self.b[self.pos..self.pos + len].to_vec();
        self.pos += len;
        self.expect(b'"', "string length does not match")?;
        self.expect(b';', "expected ';'")?;
        Ok(s)
    }

    /// `:<count>:{<key><value>...}` after the tag.
    fn array(&mut self, depth: usize) -> Result<Array, PhpError> {
        if depth >= MAX_DEPTH {
            return Err(PhpError { offset: self.pos - 1, reason: "nesting too deep" });
        }
        self.expect(b':', "expected ':'")?;
        let count = self.length(b':')?;
        self.expect(b'{', "expected '{'")?;
        if count > self.remaining() / MIN_ELEMENT_LEN {
            return Err(self.err("array count exceeds the input"));
        }
        let mut a = Array::with_capacity(count);
        for _ in 0..count {
            let k = self.key()?;
            let v = self.value(depth + 1)?;
            a.insert(k, v);
        }
        self.expect(b'}', "expected '}'")?;
        Ok(a)
    }

    /// An array key: `i:..;` or `s:..;` (normalised as PHP does).
    fn key(&mut self) -> Result<Key, PhpError> {
        let at = self.pos;
        match self.next()? {
            b'i' => self.int().map(Key::Int),
            b's' => self.string().map(|s| Key::from_bytes(&s)),
            _ => Err(PhpError { offset: at, reason: "bad array key" }),
        }
    }
}

/// `[+-]? (digits | digits? '.' digits | digits '.' digits?) ([eE] [+-]? digits)?`
fn is_php_number(t: &[u8]) -> bool {
    let digits = |t: &[u8]| t.iter().take_while(|c| c.is_ascii_digit()).count();
    let t = t.strip_prefix(b"-").or_else(|| t.strip_prefix(b"+")).unwrap_or(t);
    let int_len = digits(t);
    let mut rest = &t[int_len..];
    let mut frac_len = 0;
    if let Some(r) = rest.strip_prefix(b".") {
        frac_len = digits(r);
        rest = &r[frac_len..];
    }
    if int_len + frac_len == 0 {
        return false;
    }
    match rest.first() {
        None => true,
        Some(b'e' | b'E') => {
            let e = &rest[1..];
            let e = e.strip_prefix(b"-").or_else(|| e.strip_prefix(b"+")).unwrap_or(e);
            !e.is_empty() && digits(e) == e.len()
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::php::build::{arr, k, s};
    use crate::wire::php::{Array, Key, Value};

    fn sample() -> Value {
        let inner = arr(vec![(k("name"), s("Zoë")), (Key::Int(0), Value::Float(0.75))]);
        arr(vec![
            (k("n"), Value::Null),
            (k("t"), Value::Bool(true)),
            (k("i"), Value::Int(i64::MIN)),
            (k("s"), Value::Str(vec![0, b'"', b';', 0xff])),
            (Key::Int(42), inner),
            (k("e"), Value::Array(Array::new())),
        ])
    }

    #[test]
    fn serialize_forms() {
        let text = serialize(&sample());
        let mut want = b"a:6:{s:1:\"n\";N;s:1:\"t\";b:1;s:1:\"i\";i:-9223372036854775808;".to_vec();
        want.extend_from_slice(b"s:1:\"s\";s:4:\"\0\";\xff\";i:42;a:2:{s:4:\"name\";s:4:\"Zo\xc3\xab\";");
        want.extend_from_slice(b"i:0;d:0.75;}s:1:\"e\";a:0:{}}");
        assert_eq!(text, want);
        assert_eq!(unserialize(&text), Ok(sample()));
    }

    #[test]
    fn float_text() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (100.0, "100"),
            (0.0, "0"),
            (-0.0, "-0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e15, "1000000000000000"),
            (1e16, "10000000000000000"),
            (1e17, "1.0E+17"),
            (1.5e25, "1.5E+25"),
            (0.0001, "0.0001"),
            (0.00001, "1.0E-5"),
            (-1.25e-10, "-1.25E-10"),
            (f64::INFINITY, "INF"),
            (f64::NEG_INFINITY, "-INF"),
            (f64::NAN, "NAN"),
        ];
        for (f, want) in cases {
            let mut out = Vec::new();
            push_float(*f, b'E', &mut out);
            assert_eq!(String::from_utf8_lossy(&out), *want, "{f:?}");
            if f.is_finite() {
                let back = unserialize(&serialize(&Value::Float(*f)));
                assert_eq!(
                    back.map(|v| matches!(v, Value::Float(g) if g.to_bits() == f.to_bits())),
                    Ok(true)
                );
            }
        }
    }

    #[test]
    fn duplicate_keys_later_wins_in_first_position() {
        let v = unserialize(b"a:3:{i:1;s:1:\"a\";s:1:\"k\";N;s:1:\"1\";s:1:\"b\";}").unwrap();
        assert_eq!(v, arr(vec![(Key::Int(1), s("b")), (k("k"), Value::Null)]));
    }

    #[test]
    fn lenient_where_php_is() {
        assert_eq!(unserialize(b"i:+5;"), Ok(Value::Int(5)));
        assert_eq!(unserialize(b"i:007;"), Ok(Value::Int(7)));
        assert_eq!(unserialize(b"d:.5;"), Ok(Value::Float(0.5)));
        assert_eq!(unserialize(b"d:5.;"), Ok(Value::Float(5.0)));
        assert_eq!(unserialize(b"d:1e3;"), Ok(Value::Float(1000.0)));
        assert_eq!(unserialize(b"d:-1.5E-2;"), Ok(Value::Float(-0.015)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = serialize(&sample());
        for n in 0..full.len() {
            assert!(unserialize(&full[..n]).is_err(), "prefix {n} accepted");
        }
        let mut longer = full.clone();
        longer.push(b' ');
        assert_eq!(unserialize(&longer).map_err(|e| e.reason), Err("trailing bytes after the value"));
    }

    #[test]
    fn malformed_inputs() {
        let bad: &[&[u8]] = &[
            b"",
            b"N",
            b"x:1;",
            b"b:2;",
            b"b:1",
            b"i:;",
            b"i:1x;",
            b"i:-;",
            b"i:9223372036854775808;",
            b"d:;",
            b"d:1.2.3;",
            b"d:inf;",
            b"d:+INF;",
            b"d:-NAN;",
            b"d:e5;",
            b"d:1e;",
            b"d:0x10;",
            b"s:3:\"ab\";",
            b"s:1:\"ab\";",
            b"s:2:\"ab\"",
            b"s:2:'ab';",
            b"s:-1:\"\";",
            b"s::\"\";",
            b"a:1:{i:0;N;",
            b"a:1:{N;N;}",
            b"a:1:{d:1;N;}",
            b"a:0:{",
            b"a:0:[]",
            b"a:2:{i:0;N;}",
            b"a:1:{i:0;N;i:1;N;}",
            b"S:1:\"a\";",
            b"r:1;",
            b"R:1;",
            b"C:3:\"Foo\":0:{}",
            b"O:8:\"stdClass\":1:{s:1:\"a\";i:1;}",
            b"a:1:{s:1:\"o\";O:8:\"stdClass\":0:{}}",
            b"E:7:\"Foo:Bar\";",
        ];
        for b in bad {
            assert!(unserialize(b).is_err(), "accepted {:?}", String::from_utf8_lossy(b));
        }
        let e = unserialize(b"O:8:\"stdClass\":1:{s:1:\"a\";i:1;}").unwrap_err();
        assert_eq!(e, PhpError { offset: 0, reason: "objects are refused" });
        assert_eq!(
            unserialize(b"a:1:{i:0;s:5:\"ab\";}").unwrap_err().reason,
            "string length exceeds the input"
        );
    }

    #[test]
    fn hostile_sizes_and_depth() {
        let e = unserialize(b"s:18446744073709551615:\"\";").unwrap_err();
        assert_eq!(e.reason, "string length exceeds the input");
        assert_eq!(
            unserialize(b"s:99999999999999999999999:\"\";").unwrap_err().reason,
            "length out of range"
        );
        assert_eq!(
            unserialize(b"a:4000000000:{i:0;N;}").unwrap_err().reason,
            "array count exceeds the input"
        );
        let deep = |n: usize| {
            let mut b = b"a:1:{i:0;".repeat(n);
            b.extend_from_slice(b"N;");
            b.extend(std::iter::repeat_n(b'}', n));
            b
        };
        assert!(unserialize(&deep(MAX_DEPTH)).is_ok());
        assert_eq!(unserialize(&deep(MAX_DEPTH + 1)).unwrap_err().reason, "nesting too deep");
        assert!(unserialize(&deep(100_000)).is_err());
    }
}
