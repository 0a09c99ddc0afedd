//! FHIR ids: the rule every resource id and session id follows.

/// FHIR id: 1 to 64 of `[A-Za-z0-9\-\.]`. The error says what is wrong with `id`.
pub fn check_id(id: &str) -> Result<(), String> {
    if is_valid_id(id) {
        return Ok(());
    }
    let shown: String = id.chars().take(80).collect();
    Err(format!(
        "id {shown:?} is not a valid FHIR id (1-64 characters of A-Z a-z 0-9 - .)"
    ))
}

/// The rule itself, without allocating.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_ids() {
        for ok in ["a", "A-1.b", &"x".repeat(64)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65), "a\u{0}"] {
            assert!(check_id(bad).unwrap_err().contains("not a valid FHIR id"));
        }
    }
}
