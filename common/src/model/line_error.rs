//! A line that did not load, and why (or that loaded with validation findings).

/// A line that will not load, and why; or, with `loaded`, a line that loaded although
/// asynchronous validation found it invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the file.
    pub line: u64,
    pub reason: String,
    /// The first 200 bytes of the line, lossily decoded, without NUL characters.
    pub excerpt: String,
    /// The line is in its table all the same (`validation.enable: async`).
    pub loaded: bool,
}

impl LineError {
    pub fn new(line: u64, reason: impl Into<String>, raw: &[u8]) -> Self {
        LineError {
            line,
            reason: reason.into(),
            excerpt: excerpt(raw),
            loaded: false,
        }
    }

    /// A finding on a line that loaded anyway.
    pub fn finding(line: u64, reason: impl Into<String>, raw: &[u8]) -> Self {
        LineError {
            loaded: true,
            ..LineError::new(line, reason, raw)
        }
    }
}

/// The first 200 bytes of a line, safe to store as text.
pub fn excerpt(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(200)];
    String::from_utf8_lossy(cut).replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_storable() {
        let long = vec![b'a'; 500];
        assert_eq!(excerpt(&long).len(), 200);
        assert_eq!(excerpt(b"a\0b\xff"), "ab\u{fffd}");
    }
}
