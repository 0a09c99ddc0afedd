//! FHIR primitive values: the JSON kind the tables give each primitive type, and its
//! regex compiled once into a full DFA (one table lookup per byte, no allocation).
//!
//! The regexes come from the R4 StructureDefinitions, which write them for XML Schema
//! where `\s` is ASCII whitespace. They are compiled byte-wise with Unicode classes off,
//! so `\S` accepts every non-ASCII character (a no-break space in a `string` is fine).

use std::io::Write;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::{primitives::StateID, start, syntax};
use regex_automata::Anchored;

use crate::fhir::PrimitiveDef;

/// The JSON kind of a primitive's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Json {
    String,
    Boolean,
    Number,
}

impl Json {
    /// `a string`, `a boolean`, `a number`.
    pub fn article(self) -> &'static str {
        match self {
            Json::String => "a string",
            Json::Boolean => "a boolean",
            Json::Number => "a number",
        }
    }
}

/// One primitive type, ready to check values.
pub struct Primitive {
    /// The FHIR type code (`date`).
    pub name: &'static str,
    pub json: Json,
    /// The regex as a DFA and its start state (every search starts at a value's start).
    regex: Option<(dense::DFA<Vec<u32>>, StateID)>,
}

impl std::fmt::Debug for Primitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Primitive({})", self.name)
    }
}

impl Primitive {
    /// Compiles a primitive of the tables. Panics on a table the build cannot read (a
    /// unit test compiles them all).
    pub fn compile(name: &'static str, def: &PrimitiveDef) -> Primitive {
        let json = match def.json.as_str() {
            "string" => Json::String,
            "boolean" => Json::Boolean,
            "number" => Json::Number,
            other => panic!("primitive {name}: unknown json kind {other}"),
        };
        let regex = def.regex.as_deref().map(|re| {
            let dfa = dense::Builder::new()
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .thompson(thompson::Config::new().utf8(false))
                .configure(dense::Config::new().start_kind(StartKind::Anchored))
                .build(&format!("^(?:{re})$"))
                .unwrap_or_else(|e| panic!("primitive {name}: regex {re:?}: {e}"));
            let start = dfa
                .start_state(&start::Config::new().anchored(Anchored::Yes))
                .unwrap_or_else(|e| panic!("primitive {name}: regex {re:?}: {e}"));
            (dfa, start)
        });
        Primitive { name, json, regex }
    }

    /// True when the whole of `value` (its lexical form) matches the type's regex.
    pub fn matches(&self, value: &[u8]) -> bool {
        let Some((dfa, start)) = &self.regex else {
            return true;
        };
        let mut state = *start;
        for &b in value {
            state = dfa.next_state(state, b);
            if dfa.is_dead_state(state) {
                return false;
            }
        }
        dfa.is_match_state(dfa.next_eoi_state(state))
    }

    /// Checks a JSON number by its lexical form: integers as written, other numbers
    /// (a fraction or an exponent) as Rust prints them, which keeps a `.` or an `e`.
    pub fn matches_number(&self, n: Number) -> bool {
        let mut buf = [0u8; 40];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let written = match n {
            Number::U(v) => write!(cursor, "{v}"),
            Number::I(v) => write!(cursor, "{v}"),
            Number::F(v) => write!(cursor, "{v:?}"),
        };
        let len = cursor.position() as usize;
        written.is_ok() && self.matches(&buf[..len])
    }
}

/// A JSON number as the parser gives it.
#[derive(Clone, Copy, Debug)]
pub enum Number {
    U(u64),
    I(i64),
    F(f64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::structure;

    fn primitive(name: &'static str) -> Primitive {
        Primitive::compile(name, &structure().primitives[name])
    }

    #[test]
    fn every_primitive_of_the_tables_compiles() {
        for (name, def) in &structure().primitives {
            let name: &'static str = Box::leak(name.clone().into_boxed_str());
            Primitive::compile(name, def);
        }
    }

    #[test]
    fn values_are_checked_by_the_tables_regexes() {
        let date = primitive("date");
        for ok in ["2024", "2024-02", "2024-02-29", "1900-01-01"] {
            assert!(date.matches(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "yesterday",
            "2024-13",
            "2024-02-30x",
            "24-01-01",
            "",
            "2024-1-1",
        ] {
            assert!(!date.matches(bad.as_bytes()), "{bad}");
        }
        let date_time = primitive("dateTime");
        assert!(date_time.matches(b"2015-02-07T13:28:17.239+02:00"));
        assert!(
            !date_time.matches(b"2015-02-07T13:28"),
            "seconds and zone needed"
        );
        let instant = primitive("instant");
        assert!(instant.matches(b"2015-02-07T13:28:17Z"));
        assert!(!instant.matches(b"2015-02-07"));
        let code = primitive("code");
        assert!(code.matches(b"final") && code.matches(b"a b"));
        assert!(!code.matches(b" final") && !code.matches(b"a  b"));
        let string = primitive("string");
        assert!(string.matches("tab\there\nnbsp\u{a0}é中".as_bytes()));
        assert!(!string.matches(b""));
        let uri = primitive("uri");
        assert!(uri.matches(b"http://x.org/a") && !uri.matches(b"has space"));
        let b64 = primitive("base64Binary");
        assert!(b64.matches(b"aGVsbG8=") && !b64.matches(b"abc"));
        let id = primitive("id");
        assert!(id.matches(b"a-1.B") && !id.matches(&[b'a'; 65]));
        let boolean = primitive("boolean");
        assert_eq!(boolean.json, Json::Boolean);
    }

    #[test]
    fn numbers_are_checked_by_their_lexical_form() {
        let integer = primitive("integer");
        assert_eq!(integer.json, Json::Number);
        assert!(integer.matches_number(Number::I(-5)));
        assert!(integer.matches_number(Number::U(0)));
        assert!(
            !integer.matches_number(Number::F(1.0)),
            "1.0 is not an integer"
        );
        let positive = primitive("positiveInt");
        assert!(positive.matches_number(Number::U(1)));
        assert!(!positive.matches_number(Number::U(0)));
        assert!(!positive.matches_number(Number::I(-1)));
        let unsigned = primitive("unsignedInt");
        assert!(unsigned.matches_number(Number::U(0)) && !unsigned.matches_number(Number::I(-3)));
        let decimal = primitive("decimal");
        for n in [
            Number::F(0.125),
            Number::F(1.5e-300),
            Number::F(-2e300),
            Number::U(7),
        ] {
            assert!(decimal.matches_number(n), "{n:?}");
        }
    }
}
