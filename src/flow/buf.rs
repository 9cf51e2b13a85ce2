//! The output buffer of the formats' hot path: a cursor over one growable
//! byte buffer, written with fixed-size copies and digit writers of our
//! own, so a flow line costs no allocation, no `fmt` machinery and no
//! `memcpy` call per field.
//!
//! Why it is written this way: the shipped binary is built at opt-level
//! "z", where the inliner only inlines what makes the code smaller. Std's
//! helpers that can panic (`copy_from_slice`, indexing by a range, `Vec`'s
//! `Index`) stay calls there, and a copy whose length is not a constant is
//! a call to the C library's `memcpy` (musl's starts with `rep movs`, slow
//! for a few bytes); `Vec::push` and `extend_from_slice` are calls too.
//! Written with them, listing 200k flows spent more user time than the
//! kernel spent building the dump. So every write here is `#[inline(always)]`
//! and built only from what inlines at "z": `get_mut` and
//! `first_chunk_mut` (they cannot panic) and an array assignment, which
//! becomes a few immediate stores. A literal is a constant-size copy, a
//! name from a table is one 16-byte copy of a padded entry, and a number
//! is formatted in a small array and copied the same way.
//!
//! Every write first makes room (one compare; growing is the cold path),
//! so no write can go out of bounds whatever the flow holds.

/// Bytes past the written part every fixed-size write may touch: the
/// widest padded table entry.
const SCRATCH: usize = 16;

/// Bytes a buffer grows by beyond what a write needs, so that the writes
/// of one flow into a short buffer grow it a few times, not at each write
/// (growing zeroes the new bytes).
const GROW_AHEAD: usize = 256;

/// A write cursor over a byte buffer: what is written is `buf[..pos]`;
/// the bytes after it are scratch (kept initialized, so reusing the buffer
/// never clears it again).
#[derive(Debug)]
pub struct Out<'a> {
    buf: &'a mut Vec<u8>,
    pos: usize,
}

/// Two decimal digits for every number below 100.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// A name padded to 16 bytes, with the length to keep: the form of the
/// tables [`Out::name`] copies from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name16 {
    bytes: [u8; 16],
    len: u8,
}

impl Name16 {
    /// `s` (at most 16 bytes; longer names are cut) padded with blanks.
    pub const fn new(s: &str) -> Name16 {
        let b = s.as_bytes();
        let mut bytes = [b' '; 16];
        let mut i = 0;
        while i < b.len() && i < 16 {
            bytes[i] = b[i];
            i += 1;
        }
        Name16 {
            bytes,
            len: i as u8,
        }
    }

    /// `s` in double quotes (at most 14 bytes of it), padded with blanks.
    pub const fn quoted(s: &str) -> Name16 {
        let b = s.as_bytes();
        let mut bytes = [b' '; 16];
        bytes[0] = b'"';
        let mut i = 0;
        while i < b.len() && i < 14 {
            bytes[i + 1] = b[i];
            i += 1;
        }
        bytes[i + 1] = b'"';
        Name16 {
            bytes,
            len: i as u8 + 2,
        }
    }

    /// `s` padded with blanks and kept at `width` bytes (C's `%-*s`, for
    /// names shorter than the width).
    pub const fn padded(s: &str, width: usize) -> Name16 {
        let mut n = Name16::new(s);
        if (n.len as usize) < width && width <= 16 {
            n.len = width as u8;
        }
        n
    }

    /// The bytes kept.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Number of decimal digits of `v`.
#[inline(always)]
fn digits_u32(v: u32) -> usize {
    match v {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        10000..=99999 => 5,
        100000..=999999 => 6,
        1000000..=9999999 => 7,
        10000000..=99999999 => 8,
        100000000..=999999999 => 9,
        _ => 10,
    }
}

/// `v / 100` without a division instruction (exact for every u32).
#[inline(always)]
fn div100(v: u32) -> u32 {
    ((v as u64 * 1_374_389_535) >> 37) as u32
}

impl<'a> Out<'a> {
    /// A cursor that appends to the content of `buf`; [`Out::finish`]
    /// leaves `buf` holding exactly what was written.
    pub fn append(buf: &'a mut Vec<u8>) -> Out<'a> {
        let pos = buf.len();
        Out { buf, pos }
    }

    /// A cursor writing at `pos` of `buf`, whose bytes from `pos` on are
    /// scratch (a buffer kept at its full length between uses).
    pub fn resume(buf: &'a mut Vec<u8>, pos: usize) -> Out<'a> {
        let pos = pos.min(buf.len());
        Out { buf, pos }
    }

    /// How many bytes of the buffer are written.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// What is written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// Ends an [`Out::append`]: cuts the scratch bytes off the buffer.
    pub fn finish(self) {
        self.buf.truncate(self.pos);
    }

    /// Makes sure `n` bytes (and the scratch margin) fit after `pos`.
    #[inline(always)]
    fn room(&mut self, n: usize) {
        if self.buf.len() < self.pos + n + SCRATCH {
            self.grow(n);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, n: usize) {
        // `resize` reallocates with doubling, so growth stays amortized
        self.buf.resize(self.pos + n + SCRATCH + GROW_AHEAD, 0);
    }

    /// Forgets the last `n` bytes written (the formats' trailing blank).
    pub fn unwrite(&mut self, n: usize) {
        self.pos = self.pos.saturating_sub(n);
    }

    /// Writes a literal: a constant-size copy.
    #[inline(always)]
    pub fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.chunk(s, N);
    }

    /// Writes one byte.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        self.room(1);
        if let Some(d) = self.buf.get_mut(self.pos) {
            *d = b;
        }
        self.pos += 1;
    }

    /// Writes bytes of any length (names from outside: helpers, labels,
    /// security contexts).
    pub fn bytes(&mut self, s: &[u8]) {
        self.room(s.len());
        let p = self.pos;
        if let Some(d) = self.buf.get_mut(p..p + s.len()) {
            d.copy_from_slice(s);
        }
        self.pos = p + s.len();
    }

    /// Writes the first `len` bytes of a padded table entry: one copy of
    /// the whole entry (a constant size), then the cursor moves `len`.
    #[inline(always)]
    pub fn chunk<const N: usize>(&mut self, entry: &[u8; N], len: usize) {
        self.room(N);
        let p = self.pos;
        if let Some(d) = self.buf.get_mut(p..).and_then(|t| t.first_chunk_mut::<N>()) {
            *d = *entry;
        }
        self.pos = p + if len < N { len } else { N };
    }

    /// The next `N` bytes of the buffer, for a writer that fills them in
    /// place and then moves the cursor with [`Out::advance`] (formatting
    /// straight into the buffer: no copy of a local array, whose reload
    /// right after its byte stores would stall).
    #[inline(always)]
    pub fn slot<const N: usize>(&mut self) -> Option<&mut [u8; N]> {
        self.room(N);
        self.buf
            .get_mut(self.pos..)
            .and_then(|t| t.first_chunk_mut::<N>())
    }

    /// Moves the cursor past `n` bytes a writer filled in through
    /// [`Out::slot`].
    #[inline(always)]
    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Writes a name from a padded table.
    #[inline(always)]
    pub fn name(&mut self, n: &Name16) {
        self.chunk(&n.bytes, n.len as usize);
    }

    /// Writes `v` in decimal.
    #[inline(always)]
    pub fn u32(&mut self, v: u32) {
        let n = digits_u32(v);
        if let Some(t) = self.slot::<10>() {
            digits_into(t, n, v);
        }
        self.pos += n;
    }

    /// Writes `v` in decimal (counters, nanosecond times).
    #[inline(always)]
    pub fn u64(&mut self, v: u64) {
        if v <= u32::MAX as u64 {
            self.u32(v as u32);
        } else {
            self.u64_wide(v);
        }
    }

    /// Writes a `v` above `u32::MAX` in decimal.
    #[inline(never)]
    fn u64_wide(&mut self, v: u64) {
        // at most three parts of up to 9 digits: the low ones zero-padded
        const E9: u64 = 1_000_000_000;
        let (high, mid, low) = (v / (E9 * E9), (v / E9) % E9, (v % E9) as u32);
        if high > 0 {
            self.u32(high as u32);
            self.u32_padded9(mid as u32);
        } else {
            self.u32(mid as u32);
        }
        self.u32_padded9(low);
    }

    /// Writes `v` (below 10^9) as exactly nine digits.
    fn u32_padded9(&mut self, v: u32) {
        if let Some(t) = self.slot::<10>() {
            *t = *b"0000000000";
            digits_into(t, 9, v);
        }
        self.pos += 9;
    }

    /// Writes `v` in decimal with a minus sign when negative.
    pub fn i64(&mut self, v: i64) {
        if v < 0 {
            self.byte(b'-');
        }
        self.u64(v.unsigned_abs());
    }

    /// Writes `v` in lower-case hex without leading zeros.
    #[inline(always)]
    pub fn hex(&mut self, v: u32) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = (8 - v.leading_zeros() as usize / 4).max(1);
        if let Some(t) = self.slot::<8>() {
            let mut i = 0;
            while i < n && i < 8 {
                let shift = 4 * (n - 1 - i);
                t[i] = HEX[((v >> shift) & 0xf) as usize];
                i += 1;
            }
        }
        self.pos += n;
    }

    /// Writes a number below 100 as two digits (`%02d`).
    pub fn two_digits(&mut self, v: u8) {
        let d = (if v < 100 { v } else { 99 } as usize) * 2;
        self.lit(&[DIGIT_PAIRS[d], DIGIT_PAIRS[d + 1]]);
    }
}

/// Writes the `n` decimal digits of `v` into `t[..n]` (`n` at least the
/// number of digits; zeros before them are left as they are).
#[inline(always)]
fn digits_into(t: &mut [u8; 10], n: usize, mut v: u32) {
    let mut end = if n < 10 { n } else { 10 };
    while v >= 100 && end >= 2 {
        let q = div100(v);
        let d = ((v - q * 100) * 2) as usize;
        v = q;
        end -= 2;
        t[end] = DIGIT_PAIRS[d];
        t[end + 1] = DIGIT_PAIRS[d + 1];
    }
    if v >= 10 && end >= 2 {
        let d = (v * 2) as usize;
        t[end - 2] = DIGIT_PAIRS[d];
        t[end - 1] = DIGIT_PAIRS[d + 1];
    } else if end >= 1 {
        t[end - 1] = b'0' + v as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Out)) -> String {
        let mut v = b"x".to_vec();
        let mut o = Out::append(&mut v);
        f(&mut o);
        o.finish();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn decimal_numbers_at_every_width() {
        let mut n: u64 = 1;
        for _ in 0..20 {
            for v in [
                n - 1,
                n,
                n + 1,
                n.saturating_mul(9),
                n.saturating_mul(10) - 1,
            ] {
                assert_eq!(with(|o| o.u64(v)), format!("x{v}"), "{v}");
                if let Ok(s) = u32::try_from(v) {
                    assert_eq!(with(|o| o.u32(s)), format!("x{v}"));
                }
            }
            n = n.saturating_mul(10);
        }
        for v in [u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX, 1 << 40] {
            assert_eq!(with(|o| o.u64(v)), format!("x{v}"));
        }
        assert_eq!(with(|o| o.i64(-42)), "x-42");
        assert_eq!(with(|o| o.i64(i64::MIN)), format!("x{}", i64::MIN));
        // the division shortcut agrees with `/` everywhere it is used
        for v in (0..u32::MAX).step_by(9973).chain([u32::MAX, 99, 100, 101]) {
            assert_eq!(div100(v), v / 100, "{v}");
        }
    }

    #[test]
    fn hex_and_two_digits() {
        assert_eq!(with(|o| o.hex(0)), "x0");
        assert_eq!(with(|o| o.hex(0x10ab)), "x10ab");
        assert_eq!(with(|o| o.hex(0xffff_ffff)), "xffffffff");
        assert_eq!(with(|o| o.hex(0x0f)), "xf");
        assert_eq!(with(|o| o.two_digits(7)), "x07");
        assert_eq!(with(|o| o.two_digits(42)), "x42");
    }

    #[test]
    fn names_literals_and_growth() {
        const TCP: Name16 = Name16::padded("tcp", 8);
        const LONG: Name16 = Name16::new("ESTABLISHED");
        let s = with(|o| {
            o.name(&TCP);
            o.lit(b"|");
            o.name(&LONG);
            o.byte(b' ');
            o.bytes(b"abc");
            o.unwrite(1);
        });
        assert_eq!(s, "xtcp     |ESTABLISHED ab");
        assert_eq!(Name16::new("01234567890123456789").as_bytes().len(), 16);
        assert_eq!(Name16::quoted("ASSURED").as_bytes(), b"\"ASSURED\"");
        assert_eq!(
            Name16::quoted("0123456789abcdefgh").as_bytes(),
            b"\"0123456789abcd\""
        );
        // far past the first allocation
        let big = with(|o| {
            for _ in 0..10_000 {
                o.lit(b"0123456789");
            }
        });
        assert_eq!(big.len(), 100_001);
    }

    #[test]
    fn resume_keeps_the_buffer_length() {
        let mut v = Vec::new();
        let mut o = Out::resume(&mut v, 0);
        o.lit(b"abc");
        assert_eq!(o.written(), b"abc");
        let pos = o.pos();
        assert!(v.len() >= pos + SCRATCH);
        let mut o = Out::resume(&mut v, pos);
        o.u32(7);
        assert_eq!(o.written(), b"abc7");
    }
}
