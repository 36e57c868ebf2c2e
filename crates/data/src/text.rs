//! Small helpers for the line-oriented readers: lines with numbers, field splitting, decoding
//! and number parsing that report file, line, column and value on failure.

use std::path::Path;

use crate::error::{DataError, Result};

/// Reads a whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// The UTF-8 byte order mark, which some editors put at the start of a text file.
pub(crate) const BOM: &[u8] = b"\xef\xbb\xbf";

/// The non-blank lines of `data` with their 1-based numbers; a trailing `\r` is removed, and
/// so is a UTF-8 byte order mark at the start of the file.
pub(crate) fn lines(data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    data.strip_prefix(BOM)
        .unwrap_or(data)
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.is_empty())
}

/// An error for a file that holds no record: `what` says what was expected (e.g. "ratings").
pub(crate) fn empty_file(file: &Path, what: &str) -> DataError {
    DataError::parse(
        file,
        1,
        "(file)",
        "",
        format!("empty file: no {what} (truncated or not the right file?)"),
    )
}

/// Position of a value in a file, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub file: &'a Path,
    pub line: u64,
}

impl At<'_> {
    pub fn err(&self, column: &str, value: &str, reason: impl Into<String>) -> DataError {
        DataError::parse(self.file, self.line, column, value, reason)
    }

    /// Splits `line` on `sep` and checks the number of fields.
    pub fn fields<'l>(&self, line: &'l [u8], sep: u8, expected: usize) -> Result<Vec<&'l [u8]>> {
        let f: Vec<&[u8]> = line.split(|&b| b == sep).collect();
        if f.len() != expected {
            return Err(self.err(
                "(row)",
                &String::from_utf8_lossy(line),
                format!(
                    "expected {expected} fields separated by {:?}, found {}",
                    sep as char,
                    f.len()
                ),
            ));
        }
        Ok(f)
    }

    /// Decodes a UTF-8 field.
    pub fn utf8<'b>(&self, column: &str, bytes: &'b [u8]) -> Result<&'b str> {
        std::str::from_utf8(bytes).map_err(|e| {
            self.err(
                column,
                &String::from_utf8_lossy(bytes),
                format!(
                    "bad encoding: not UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })
    }

    /// Decodes a latin-1 (ISO-8859-1) field. Control characters (C0 other than tab, DEL, and
    /// the C1 range 0x80-0x9F, which never occurs in latin-1 text) are refused, and so is a
    /// field that is valid multi-byte UTF-8: that file was re-encoded and would be misread.
    pub fn latin1(&self, column: &str, bytes: &[u8]) -> Result<String> {
        if let Some(&b) = bytes
            .iter()
            .find(|&&b| (b < 0x20 && b != b'\t') || (0x7f..0xa0).contains(&b))
        {
            return Err(self.err(
                column,
                &String::from_utf8_lossy(bytes),
                format!("bad encoding: byte 0x{b:02x} is a control character, not latin-1 text"),
            ));
        }
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_ok() {
            return Err(self.err(
                column,
                &String::from_utf8_lossy(bytes),
                "bad encoding: this looks like UTF-8, but the GroupLens files are latin-1",
            ));
        }
        Ok(bytes.iter().map(|&b| b as char).collect())
    }

    /// Parses an integer that may be written as a float with no fraction (`"3"`, `"3.0"` or
    /// `"3e0"`); the decimal text must denote an integer exactly (`"1.00000000000000001"`
    /// is not one, though it rounds to 1 as an f64).
    pub fn integral(&self, column: &str, bytes: &[u8], min: i64, max: i64) -> Result<i64> {
        let s = self.utf8(column, bytes)?;
        let t = s.trim();
        let v = match t.parse::<i64>() {
            Ok(v) => v,
            Err(_) => match exact_integer(t) {
                Some(Ok(v)) => v,
                // An integer, but too large for 64 bits: out of range, not malformed.
                Some(Err(())) => {
                    return Err(self.err(
                        column,
                        s,
                        format!("out of range (expected {min}..={max})"),
                    ));
                }
                None => return Err(self.err(column, s, "not an integer")),
            },
        };
        if v < min || v > max {
            return Err(self.err(column, s, format!("out of range (expected {min}..={max})")));
        }
        Ok(v)
    }
}

/// The integer a decimal literal `[+-]digits[.digits][(e|E)[+-]digits]` denotes exactly:
/// `None` when the text is not such a literal or has a fraction (however small: the digits
/// are checked, not an f64 rounding of them), `Some(Err(()))` when it is an integer beyond
/// `i64`.
pub(crate) fn exact_integer(t: &str) -> Option<std::result::Result<i64, ()>> {
    let (negative, rest) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(k) => {
            let e = &rest[k + 1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Clamped: beyond this any non-zero mantissa is out of range or a fraction.
            let x: i64 = digits.parse().unwrap_or(i64::MAX).min(1 << 40);
            (&rest[..k], if e.starts_with('-') { -x } else { x })
        }
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // All digits, and where the decimal point falls among them.
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let lead = digits.iter().take_while(|&&b| b == b'0').count();
    let digits = &digits[lead..];
    if digits.is_empty() {
        return Some(Ok(0));
    }
    let point = int.len() as i64 - lead as i64 + exponent;
    if point <= 0 {
        return None; // 0.xyz with a non-zero digit: a fraction
    }
    let whole = (point as usize).min(digits.len());
    if digits[whole..].iter().any(|&b| b != b'0') {
        return None;
    }
    if point > 19 {
        return Some(Err(()));
    }
    let mut text: String = digits[..whole].iter().map(|&b| b as char).collect();
    text.extend(std::iter::repeat_n('0', point as usize - whole));
    let magnitude: i128 = text.parse().ok()?;
    let v = if negative { -magnitude } else { magnitude };
    Some(i64::try_from(v).map_err(|_| ()))
}

#[cfg(test)]
mod exact_integer_tests {
    use super::exact_integer;

    #[test]
    fn decimal_literals_denote_integers_exactly() {
        for (t, want) in [
            ("3", Some(Ok(3))),
            ("+3.000", Some(Ok(3))),
            ("-0.0", Some(Ok(0))),
            ("1.5e1", Some(Ok(15))),
            ("150E-1", Some(Ok(15))),
            ("007.", Some(Ok(7))),
            // Beyond f64's 53 bits, still exact.
            ("9007199254740993.0", Some(Ok(9_007_199_254_740_993))),
            ("-9223372036854775808.0", Some(Ok(i64::MIN))),
            ("9223372036854775808.0", Some(Err(()))),
            ("1e19", Some(Err(()))),
            ("1e999999999999", Some(Err(()))),
            ("0e999999999999", Some(Ok(0))),
            // Fractions, however small, and what is not a decimal literal.
            ("1.00000000000000001", None),
            ("4503599627370496.5", None),
            ("1e-1", None),
            ("15e-1", None),
            (".", None),
            ("", None),
            ("1e", None),
            ("0x10", None),
            ("inf", None),
            ("1_000", None),
        ] {
            assert_eq!(exact_integer(t), want, "{t:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    //! The helpers against a model of the line splitting and against std's parsing. Seeded,
    //! so a failure reproduces; shrunk to a minimal input.

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    /// 256 cases from seed 0, unless `REC_FUZZ_CASES` / `REC_FUZZ_SEED` say otherwise (as for
    /// the readers' properties in tests/fuzz.rs and tests/roundtrip.rs).
    fn config() -> Config {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        Config {
            cases: env("REC_FUZZ_CASES").map_or(256, |n: u64| n as u32),
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(env("REC_FUZZ_SEED").unwrap_or(0)),
            ..Config::default()
        }
    }

    fn at() -> At<'static> {
        At {
            file: Path::new("f.txt"),
            line: 7,
        }
    }

    /// A byte of a line: often one that matters (`\r`, tab, the bytes of a BOM, NUL, 0xFF).
    fn line_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => b'a'..=b'z',
            3 => prop::sample::select(b"\r\t |\xef\xbb\xbf\x00\xff".to_vec()),
            1 => any::<u8>().prop_filter("not a line break", |&b| b != b'\n'),
        ]
    }

    fn reason(e: DataError) -> String {
        match e {
            DataError::Parse { reason, .. } => reason,
            other => panic!("expected a parse error, got {other}"),
        }
    }

    /// Latin-1 text as the GroupLens files hold it: tab, printable ASCII, 0xA0..=0xFF.
    fn latin1_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => prop::char::range(' ', '~'),
            2 => prop::char::range('\u{a0}', '\u{ff}'),
            1 => Just('\t'),
        ]
    }

    /// An integer spelled as the readers accept it; float spellings only where an f64 is exact.
    fn spell(v: i64, how: u8) -> String {
        let exact = v.unsigned_abs() < 9_000_000_000_000_000;
        match how {
            1 => format!("{v:+}"),
            2 => format!("  {v} "),
            3 if v >= 0 => format!("000{v}"),
            3 => format!("-000{}", v.unsigned_abs()),
            4 if exact => format!("{v}.0"),
            5 if exact => format!("{v}.000"),
            6 if exact => format!("{v}e0"),
            7 if exact => format!("{v}E+0"),
            _ => v.to_string(),
        }
    }

    /// The ranges the readers ask for (ids, ages, ratings, timestamps) and the widest one.
    fn range() -> impl Strategy<Value = (i64, i64)> {
        prop::sample::select(vec![
            (1, u32::MAX as i64),
            (0, 255),
            (1, 5),
            (0, i64::MAX / 2),
            (i64::MIN, i64::MAX),
        ])
    }

    proptest! {
        #![proptest_config(config())]

        /// `lines` numbers every line from 1, drops blank lines, removes one `\r` before a
        /// `\n` (or at the end) and a BOM at the very start, and nothing else.
        #[test]
        fn lines_match_a_model(
            content in prop::collection::vec(
                (prop::collection::vec(line_byte(), 0..6), any::<bool>()),
                0..8,
            ),
            bom in any::<bool>(),
            trailing in any::<bool>(),
        ) {
            let n = content.len();
            let mut data = if bom { BOM.to_vec() } else { Vec::new() };
            let mut want = Vec::new();
            for (j, (text, crlf)) in content.iter().enumerate() {
                data.extend_from_slice(text);
                let end = j + 1 < n || trailing;
                if end {
                    data.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                }
                let mut line: &[u8] = text;
                if j == 0 && !bom {
                    // Bytes that happen to form a BOM at the start of the file are one.
                    line = line.strip_prefix(BOM).unwrap_or(line);
                }
                if !(end && *crlf) {
                    line = line.strip_suffix(b"\r").unwrap_or(line);
                }
                if !line.is_empty() {
                    want.push((j as u64 + 1, line.to_vec()));
                }
            }
            let got: Vec<(u64, Vec<u8>)> = lines(&data).map(|(i, l)| (i, l.to_vec())).collect();
            prop_assert_eq!(got, want);
        }

        /// `fields` gives the separated fields when their number is the expected one, and an
        /// error naming the row otherwise.
        #[test]
        fn fields_split_on_the_separator(
            sep in prop::sample::select(b"\t|,".to_vec()),
            parts in prop::collection::vec(prop::collection::vec(line_byte(), 0..5), 1..6),
            off in 1usize..3,
        ) {
            let parts: Vec<Vec<u8>> = parts
                .into_iter()
                .map(|p| p.into_iter().filter(|&b| b != sep).collect())
                .collect();
            let line = parts.join(&sep);
            let got = at().fields(&line, sep, parts.len()).unwrap();
            prop_assert_eq!(got, parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
            for wrong in [parts.len() + off, parts.len().saturating_sub(off)] {
                if wrong != parts.len() {
                    let r = reason(at().fields(&line, sep, wrong).unwrap_err());
                    let found = format!("found {}", parts.len());
                    prop_assert!(r.contains(&found), "{}", r);
                }
            }
        }

        /// `utf8` accepts exactly what std accepts, and says where the first bad byte is.
        #[test]
        fn utf8_agrees_with_std(bytes in prop::collection::vec(line_byte(), 0..12)) {
            match (at().utf8("c", &bytes), std::str::from_utf8(&bytes)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(e), Err(std_err)) => {
                    let r = reason(e);
                    let offset = format!("offset {}", std_err.valid_up_to());
                    prop_assert!(r.contains(&offset), "{}", r);
                }
                (a, b) => prop_assert!(false, "{:?} vs std {:?}", a.map_err(reason), b),
            }
        }

        /// Latin-1 text round-trips through `latin1`, unless its bytes happen to be valid
        /// multi-byte UTF-8 (refused: a re-encoded file).
        #[test]
        fn latin1_round_trips(text in prop::collection::vec(latin1_char(), 0..10)) {
            let text: String = text.into_iter().collect();
            let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
            let got = at().latin1("c", &bytes);
            if !bytes.is_ascii() && std::str::from_utf8(&bytes).is_ok() {
                let r = reason(got.unwrap_err());
                prop_assert!(r.contains("looks like UTF-8"), "{}", r);
            } else {
                prop_assert_eq!(got.map_err(reason), Ok(text));
            }
        }

        /// Any bytes: accepted exactly when no byte is a control character and the field is
        /// not multi-byte UTF-8; then every byte is the character of the same number.
        #[test]
        fn latin1_accepts_only_text(bytes in prop::collection::vec(any::<u8>(), 0..10)) {
            let control = bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || (0x7f..0xa0).contains(&b));
            let utf8 = !bytes.is_ascii() && std::str::from_utf8(&bytes).is_ok();
            match at().latin1("c", &bytes) {
                Ok(s) => {
                    prop_assert!(!control && !utf8);
                    prop_assert_eq!(s.chars().map(|c| c as u32).collect::<Vec<_>>(),
                        bytes.iter().map(|&b| u32::from(b)).collect::<Vec<_>>());
                }
                Err(e) => {
                    prop_assert!(control || utf8, "{}", e);
                    prop_assert!(reason(e).contains("bad encoding"));
                }
            }
        }

        /// An integer in range reads back from every accepted spelling; out of range, it is an
        /// error that says so.
        #[test]
        fn integral_round_trips(
            v in prop_oneof![-300i64..300, any::<i64>(), 0i64..=u32::MAX as i64],
            how in 0u8..8,
            (min, max) in range(),
        ) {
            let s = spell(v, how);
            let got = at().integral("n", s.as_bytes(), min, max);
            if (min..=max).contains(&v) {
                prop_assert_eq!(got.map_err(reason), Ok(v), "{:?}", s);
            } else {
                let r = reason(got.unwrap_err());
                prop_assert!(r.starts_with("out of range"), "{:?}: {}", s, r);
            }
        }

        /// On any text, `integral` agrees with std: what `i64::from_str` reads (trimmed) it
        /// reads the same, and what it accepts otherwise is an f64 with that integer value.
        /// Digit strings too long for 64 bits are out of range, not malformed.
        #[test]
        fn integral_agrees_with_std(
            text in prop::collection::vec(
                prop::sample::select(b"0123456789000000-+.eE x_".to_vec()),
                0..24,
            ),
        ) {
            let s = String::from_utf8(text).unwrap();
            let t = s.trim();
            let got = at().integral("n", s.as_bytes(), i64::MIN, i64::MAX);
            match (t.parse::<i64>(), got) {
                (Ok(a), got) => prop_assert_eq!(got.map_err(reason), Ok(a), "{:?}", s),
                (Err(_), Ok(v)) => prop_assert_eq!(t.parse::<f64>(), Ok(v as f64), "{:?}", s),
                (Err(_), Err(e)) => {
                    let digits = t.strip_prefix('-').unwrap_or(t);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        let r = reason(e);
                        prop_assert!(r.starts_with("out of range"), "{:?}: {}", s, r);
                    }
                }
            }
        }

        /// A number with a non-zero fraction is not an integer.
        #[test]
        fn integral_refuses_any_fraction(
            int in 0i64..1_000_000_000_000_000,
            zeros in 0usize..20,
            digit in 1u8..=9,
        ) {
            let s = format!("{int}.{}{digit}", "0".repeat(zeros));
            let got = at().integral("n", s.as_bytes(), i64::MIN, i64::MAX);
            prop_assert!(got.is_err(), "{:?} read as {:?}", s, got.map_err(reason));
        }
    }
}
