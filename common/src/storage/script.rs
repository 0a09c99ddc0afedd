//! SQL scripts as files: `INSERT` statements that `psql` runs back into a table (the
//! `sql` format of `$dump-sql` and dump-to-bucket). Postgres quoting lives here, with
//! the rest of siphon's SQL.

/// A Postgres literal: NULL, a quoted string, or an escape string (`E'...'`) when the
/// value holds a backslash or a control character, so every statement stays on one line.
pub fn sql_literal(value: Option<&str>) -> String {
    let Some(v) = value else {
        return "NULL".into();
    };
    if !v.chars().any(|c| c == '\\' || c.is_ascii_control()) {
        return format!("'{}'", v.replace('\'', "''"));
    }
    let mut out = String::with_capacity(v.len() + 8);
    out.push_str("E'");
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A double-quoted identifier.
pub fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An INSERT statement of one row (without its newline).
pub fn sql_insert(table: &str, columns: &[String], values: &[Option<String>]) -> Vec<u8> {
    let cols: Vec<String> = columns.iter().map(|c| sql_ident(c)).collect();
    let vals: Vec<String> = values.iter().map(|v| sql_literal(v.as_deref())).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({});",
        sql_ident(table),
        cols.join(", "),
        vals.join(", ")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_quote_every_value_on_one_line() {
        let ins = sql_insert(
            "t\"x",
            &["id".into(), "v".into()],
            &[Some("o'k".into()), None],
        );
        assert_eq!(
            String::from_utf8(ins).unwrap(),
            r#"INSERT INTO "t""x" ("id", "v") VALUES ('o''k', NULL);"#
        );
        assert_eq!(sql_literal(Some("a\\b'")), r"E'a\\b'''");
        assert_eq!(sql_literal(Some("a\nb\tc\u{1}")), r"E'a\nb\tc\x01'");
        assert_eq!(sql_literal(None), "NULL");
    }
}
