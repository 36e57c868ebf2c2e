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

    /// Parses an integer that may be written as a float with no fraction (`"3"` or `"3.0"`).
    pub fn integral(&self, column: &str, bytes: &[u8], min: i64, max: i64) -> Result<i64> {
        let s = self.utf8(column, bytes)?;
        let t = s.trim();
        let v = match t.parse::<i64>() {
            Ok(v) => v,
            Err(_) => match t.parse::<f64>() {
                Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                // Digits only, but too many for 64 bits: out of range, not malformed.
                _ if {
                    let digits = t.strip_prefix('-').unwrap_or(t);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                } =>
                {
                    return Err(self.err(
                        column,
                        s,
                        format!("out of range (expected {min}..={max})"),
                    ));
                }
                _ => return Err(self.err(column, s, "not an integer")),
            },
        };
        if v < min || v > max {
            return Err(self.err(column, s, format!("out of range (expected {min}..={max})")));
        }
        Ok(v)
    }
}
