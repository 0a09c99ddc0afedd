//! A parsed `_typeFilter` as plain data (built by `exporting::type_filter`, compiled to
//! SQL by `storage::filter`). Values are already checked and resolved: dates are
//! instant ranges, numbers are decimal bounds, references are split into type and id.
//! It serializes, so an export can keep it with its tasks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ParamPath;

/// Every `_typeFilter` of one resource type: a resource is kept when any query matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeFilter {
    /// The resource type (`Observation`).
    pub resource_type: String,
    /// The type's `_typeFilter` values, ORed.
    pub queries: Vec<Query>,
}

/// One `_typeFilter` value: a resource matches when every clause does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The value as given (`Observation?code=1234-5&date=ge2020`).
    pub text: String,
    /// Its parameters, ANDed (none: every resource matches).
    pub clauses: Vec<Clause>,
}

/// One parameter of a query (`code:not=a,b`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    /// The parameter name as written, modifier included (`code:not`).
    pub name: String,
    /// What is compared.
    pub target: Target,
    pub test: Test,
}

/// What a clause compares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// `_id`: the row's id column.
    Id,
    /// `_lastUpdated`: the row's `ts` column (what `_since` compares too).
    LastUpdated,
    /// Elements of the resource: any of them may match.
    Elements(Vec<ParamPath>),
}

/// How a clause matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Test {
    /// `:missing=true` (`true`: no element has a value) or `:missing=false`.
    Missing(bool),
    /// Some element matches one of the values (comma-separated values are ORed);
    /// `negate` (`:not`): no element matches any of them.
    AnyOf { negate: bool, values: Vec<Value> },
}

/// One search value, resolved for its parameter type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// token: `[system]|[code]` forms.
    Token(Token),
    /// token `:text`: starts-with on the text or display of a concept (folded).
    TokenText(String),
    /// string: compared as `mode` says.
    String { mode: StringMode, text: String },
    /// date: the target's range compared with this range as `prefix` says.
    Date { prefix: Prefix, range: DateRange },
    /// number.
    Number(NumberTest),
    /// quantity: the number on `value`, plus unit.
    Quantity {
        number: NumberTest,
        /// `Some` when the value names a system (`|http://unitsofmeasure.org|mg`).
        system: Option<String>,
        /// `Some` when the value names a code (compared with `code`, or with `code`
        /// or `unit` when no system is given).
        code: Option<String>,
    },
    /// reference.
    Reference(Reference),
    /// uri: exact match.
    Uri(String),
    /// `_id`: exact id.
    Id(String),
}

/// A token value. `code` is `None` for `system|` (any code of the system).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub system: System,
    pub code: Option<String>,
}

/// The system part of a token value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum System {
    /// `code`: any system, or none.
    Any,
    /// `|code`: no system.
    Absent,
    /// `system|code`.
    Is(String),
}

/// How a string value is compared (case and accents folded except for `Exact`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringMode {
    /// Default: the element starts with the value.
    StartsWith,
    /// `:contains`: the element contains the value.
    Contains,
    /// `:exact`: the element equals the value (case and accents count).
    Exact,
}

/// A comparison prefix (`eq` when none is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// The range a date search value stands for: `[low, high)`. For `ap` it is already
/// widened by the tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    pub low: DateTime<Utc>,
    pub high: DateTime<Utc>,
}

/// A number test, resolved: `Eq`/`Ne`/`Ap` test `low <= x < high` (`Ap`: `<=` high),
/// the others compare with `value`. Decimals are written as jsonpath numbers
/// (`-?[0-9]+(e-?[0-9]+)?`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberTest {
    pub prefix: Prefix,
    pub value: String,
    pub low: String,
    pub high: String,
}

/// A reference value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The value as given (matched as is against `canonical` and `uri` elements).
    pub raw: String,
    /// The resource it names, when it names one (`Type/id`, `id`, `.../Type/id`).
    pub local: Option<LocalRef>,
}

/// The `Type/id` a reference value names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRef {
    /// The possible types (one when written; the parameter's targets for a bare id,
    /// empty meaning any type).
    pub types: Vec<String>,
    /// A FHIR id (`[A-Za-z0-9.-]{1,64}`).
    pub id: String,
    /// `_history/<version>`, when given.
    pub version: Option<String>,
    /// The base URL before `Type/id` of an absolute value (`http://x/fhir/`).
    pub base: Option<String>,
}
