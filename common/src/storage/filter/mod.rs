//! `_typeFilter` in SQL: a parsed [`TypeFilter`] becomes one boolean condition over a
//! resource row, added to the WHERE of the export's own query (`slice_sql`), so
//! filtering happens inside the single `COPY ... TO STDOUT` pass.
//!
//! Everything a user wrote reaches the SQL as a quoted literal ([`literal`]): jsonpath
//! texts (with values as jsonpath string literals inside), timestamps, folded strings.
//! Element paths come from the generated table and are checked again (ASCII letters and
//! digits); numbers are checked to be jsonpath numbers. Arrays at any step are handled
//! by lax jsonpath (`$."name"[*]."given"[*]` also reads a non-array).
//!
//! How each value type is matched:
//! - token, uri, reference (local), `:exact`, `:missing`, number, quantity:
//!   `resource @? '<jsonpath>'` with the values as constants in the jsonpath. A GIN
//!   index `USING gin (resource jsonb_path_ops)` on a type's table serves the equality
//!   parts (`@.code == "x"`, `@ == "x"`) of token, uri and `:exact` tests and `:missing=false`;
//!   range comparisons, `like_regex` (references) and negations are checked on the rows.
//! - string (starts-with, `:contains`) and token `:text`: `EXISTS` over
//!   `jsonb_path_query` with the folding expression on both sides (no index helps).
//! - date: `EXISTS` over `jsonb_path_query`, each target value's range computed from
//!   its text by arithmetic that cannot fail on odd data (no casts of stored text).
//! - `_id`: the id column (its primary key index serves it); `_lastUpdated`: the `ts`
//!   column (a btree index on `ts` would serve it; resource tables have none today).

mod dates;
mod jsonpath;
mod strings;

use crate::error::{Error, Result};
use crate::fhir::search::filter::{Clause, Query, Target, Test, TypeFilter, Value};
use crate::fhir::search::ParamPath;

use super::read::literal;

/// The columns of the row a condition reads, as SQL expressions (`resource`,
/// `t.resource`): trusted text from the caller, never user input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns<'a> {
    /// The jsonb resource.
    pub resource: &'a str,
    /// The text id.
    pub id: &'a str,
    /// The timestamptz last-updated instant.
    pub ts: &'a str,
}

impl Default for Columns<'_> {
    /// `resource`, `id`, `ts`: a resource table's own columns.
    fn default() -> Self {
        Columns {
            resource: "resource",
            id: "id",
            ts: "ts",
        }
    }
}

fn check_columns(c: &Columns<'_>) -> Result<()> {
    for col in [c.resource, c.id, c.ts] {
        let ok = !col.is_empty()
            && col
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.');
        if !ok {
            return Err(Error::Internal(format!("bad column expression {col:?}")));
        }
    }
    Ok(())
}

/// The condition that a row passes `filter` (any of its queries), in parentheses.
pub fn filter_condition(filter: &TypeFilter, cols: &Columns<'_>) -> Result<String> {
    check_columns(cols)?;
    let mut any = Vec::new();
    for q in &filter.queries {
        any.push(query_condition(q, cols)?);
    }
    Ok(or(any))
}

/// The condition that a row passes one query (all its clauses), in parentheses.
pub fn query_condition(query: &Query, cols: &Columns<'_>) -> Result<String> {
    check_columns(cols)?;
    let mut all = Vec::new();
    for c in &query.clauses {
        all.push(clause_condition(c, cols)?);
    }
    Ok(if all.is_empty() {
        "(true)".into()
    } else {
        format!("({})", all.join(" AND "))
    })
}

fn or(parts: Vec<String>) -> String {
    if parts.is_empty() {
        "(false)".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

fn clause_condition(c: &Clause, cols: &Columns<'_>) -> Result<String> {
    match &c.test {
        Test::Missing(missing) => {
            let present = match &c.target {
                Target::Id => "true".to_string(),
                Target::LastUpdated => format!("{} IS NOT NULL", cols.ts),
                Target::Elements(paths) => {
                    let mut any = Vec::new();
                    for p in paths {
                        any.push(format!(
                            "{} @? {}",
                            cols.resource,
                            literal(&jsonpath::path(p)?)
                        ));
                    }
                    or(any)
                }
            };
            Ok(if *missing {
                format!("(NOT coalesce({present}, false))")
            } else {
                format!("coalesce({present}, false)")
            })
        }
        Test::AnyOf { negate, values } => {
            let mut any = Vec::new();
            for v in values {
                any.push(value_condition(&c.target, v, cols)?);
            }
            let any = or(any);
            Ok(if *negate {
                format!("(NOT coalesce({any}, false))")
            } else {
                any
            })
        }
    }
}

fn value_condition(target: &Target, value: &Value, cols: &Columns<'_>) -> Result<String> {
    match (target, value) {
        (Target::Id, Value::Id(id)) => Ok(format!("{} = {}", cols.id, literal(id))),
        (Target::LastUpdated, Value::Date { prefix, range }) => {
            Ok(dates::point(cols.ts, *prefix, range))
        }
        (Target::Elements(paths), v) => {
            let mut any = Vec::new();
            for p in paths {
                for ty in &p.types {
                    if let Some(cond) = element_condition(p, ty, v, cols.resource)? {
                        any.push(cond);
                    }
                }
            }
            Ok(or(any))
        }
        (t, v) => Err(Error::Internal(format!(
            "a {v:?} value cannot be compared with {t:?}"
        ))),
    }
}

/// The condition for element `p` of FHIR type `ty`, or `None` when that type cannot
/// hold such a value.
fn element_condition(p: &ParamPath, ty: &str, v: &Value, res: &str) -> Result<Option<String>> {
    let exists = |jp: Option<String>| jp.map(|jp| format!("{res} @? {}", literal(&jp)));
    Ok(match v {
        Value::Token(t) => exists(jsonpath::token(p, ty, t)?),
        Value::TokenText(text) => strings::token_text(p, ty, text, res)?,
        Value::String { mode, text } => strings::string(p, ty, *mode, text, res)?,
        Value::Date { prefix, range } => dates::element(p, ty, *prefix, range, res)?,
        Value::Number(n) => exists(jsonpath::number(p, ty, n)?),
        Value::Quantity {
            number,
            system,
            code,
        } => exists(jsonpath::quantity(p, ty, number, system, code)?),
        Value::Reference(r) => exists(jsonpath::reference(p, ty, r)?),
        Value::Uri(u) => exists(jsonpath::uri(p, ty, u)?),
        Value::Id(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::filter::{Prefix, System, Token};

    fn clause(target: Target, values: Vec<Value>) -> Query {
        Query {
            text: String::new(),
            clauses: vec![Clause {
                name: "x".into(),
                target,
                test: Test::AnyOf {
                    negate: false,
                    values,
                },
            }],
        }
    }

    fn elements(path: &str, ty: &str) -> Target {
        Target::Elements(vec![ParamPath {
            path: path.into(),
            types: vec![ty.into()],
            targets: vec![],
        }])
    }

    #[test]
    fn values_are_quoted_inside_jsonpath_inside_literals() {
        let token = Value::Token(Token {
            system: System::Is("s'\"\\".into()),
            code: Some("c\u{1}".into()),
        });
        let q = clause(elements("code", "CodeableConcept"), vec![token]);
        let sql = query_condition(&q, &Columns::default()).unwrap();
        assert_eq!(
            sql,
            r#"(((resource @? E'$."code"[*]."coding"[*] ? (@."code" == "c\\u0001" && @."system" == "s''\\"\\\\")')))"#
        );
    }

    #[test]
    fn untrusted_shapes_are_refused() {
        let q = clause(Target::Id, vec![Value::Id("a".into())]);
        let bad = Columns {
            resource: "resource; drop",
            ..Columns::default()
        };
        assert!(query_condition(&q, &bad).is_err());
        let q = clause(elements("code\"x", "code"), vec![Value::Uri("a".into())]);
        assert!(query_condition(&q, &Columns::default()).is_err());
        let n = crate::fhir::search::filter::NumberTest {
            prefix: Prefix::Gt,
            value: "1) || true".into(),
            low: "0".into(),
            high: "2".into(),
        };
        let q = clause(elements("value", "decimal"), vec![Value::Number(n)]);
        assert!(query_condition(&q, &Columns::default()).is_err());
        // A value of a kind its target cannot hold is a bug, not a silent false.
        let q = clause(Target::Id, vec![Value::Uri("a".into())]);
        assert!(query_condition(&q, &Columns::default()).is_err());
    }

    #[test]
    fn empty_filters_keep_or_drop_everything() {
        let all = Query {
            text: String::new(),
            clauses: vec![],
        };
        assert_eq!(
            query_condition(&all, &Columns::default()).unwrap(),
            "(true)"
        );
        let none = TypeFilter {
            resource_type: "Patient".into(),
            queries: vec![],
        };
        assert_eq!(
            filter_condition(&none, &Columns::default()).unwrap(),
            "(false)"
        );
        // An element type a value cannot match contributes nothing.
        let q = clause(
            elements("active", "boolean"),
            vec![Value::Token(Token {
                system: System::Any,
                code: Some("maybe".into()),
            })],
        );
        assert_eq!(
            query_condition(&q, &Columns::default()).unwrap(),
            "(((false)))"
        );
    }
}
