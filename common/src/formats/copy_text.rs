//! Rows of `COPY ... TO STDOUT` in Postgres' text format: a row is fields separated by
//! tabs, `\N` for NULL, backslash escapes inside a field. Every text format starts here.

/// One field of a COPY text row: `None` for NULL (`\N`).
pub fn unescape(field: &[u8]) -> Option<String> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (next - b'0') as u32;
                for _ in 0..2 {
                    match field.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Splits a COPY text row (without its newline) into its key and its other fields, raw.
pub fn split_row(row: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'\t', row) {
        Some(i) => (&row[..i], &row[i + 1..]),
        None => (row, b""),
    }
}

/// The fields of a COPY text row, unescaped.
pub fn fields(rest: &[u8]) -> Vec<Option<String>> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(|b| *b == b'\t').map(unescape).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_unescape() {
        assert_eq!(unescape(b"\\N"), None);
        assert_eq!(unescape(b"a\\tb\\nc\\\\d\\re").unwrap(), "a\tb\nc\\d\re");
        assert_eq!(unescape(br#"{"x": "q\\"z"}"#).unwrap(), r#"{"x": "q\"z"}"#);
        assert_eq!(unescape(b"\\101\\x42").unwrap(), "AB");
        assert_eq!(unescape("é".as_bytes()).unwrap(), "é");
        let (key, rest) = split_row(b"p-1\tx\t\\N\t");
        assert_eq!(key, b"p-1");
        assert_eq!(fields(rest), vec![Some("x".into()), None, Some("".into())]);
    }
}
