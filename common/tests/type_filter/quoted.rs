//! The check that compiled `_typeFilter` SQL holds user text only inside quoted
//! literals (shared by `fuzz.rs` and `type_filter.rs`).

/// `sql` is made of the compiler's own vocabulary outside its quoted literals: every
/// literal (`'...'` or `E'...'`) is closed, and what lies between them has no
/// character or word a user could have put there. Returns the problem, if any.
pub fn only_quoted_literals(sql: &str) -> Result<(), String> {
    const WORDS: &[&str] = &[
        "EXISTS",
        "SELECT",
        "FROM",
        "AS",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "CROSS",
        "JOIN",
        "LATERAL",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "IS",
        "NULL",
        "AT",
        "TIME",
        "ZONE",
        "true",
        "false",
        "resource",
        "id",
        "ts",
        "tf_s",
        "tf_d",
        "tf_m",
        "tf_r",
        "v",
        "m",
        "s",
        "e",
        "lo",
        "hi",
        "jsonb_path_query",
        "jsonb_typeof",
        "starts_with",
        "strpos",
        "lower",
        "translate",
        "regexp_replace",
        "normalize",
        "NFD",
        "regexp_match",
        "timestamp",
        "timestamptz",
        "make_interval",
        "years",
        "months",
        "days",
        "hours",
        "mins",
        "secs",
        "int",
        "float8",
        "coalesce",
        "left",
        "substr",
        "interval",
        "length",
        "greatest",
        "power",
        "E",
    ];
    let mut outside = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            outside.push(c);
            continue;
        }
        // E'...' escapes backslashes; both double quotes.
        let escaped = outside.ends_with('E');
        outside.push_str("''");
        loop {
            match chars.next() {
                None => return Err("an unterminated literal".into()),
                Some('\\') if escaped => {
                    if chars.next().is_none() {
                        return Err("an unterminated E literal".into());
                    }
                }
                Some('\'') => {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        break;
                    }
                }
                Some(_) => {}
            }
        }
    }
    for bad in [";", "--", "/*", "\""] {
        if outside.contains(bad) {
            return Err(format!("{bad:?} outside literals"));
        }
    }
    if let Some(c) = outside
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " _.,()=<>!:*+-[]'#@?\n".contains(*c)))
    {
        return Err(format!("{c:?} outside literals"));
    }
    let word_chars = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for word in outside.split(|c: char| !word_chars(c)) {
        if word.is_empty() || word.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if !WORDS.contains(&word) {
            return Err(format!("word {word:?} outside literals"));
        }
    }
    Ok(())
}
