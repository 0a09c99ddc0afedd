//! Random `_typeFilter` values for the fuzz target (`fuzz.rs`) and the Postgres check
//! of compiled samples (`type_filter.rs`): mostly well-formed pieces, often hostile.

use proptest::prelude::*;

fn ty() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["Observation", "Patient", "Encounter", "RiskAssessment", "CarePlan"])
            .prop_map(str::to_string),
        1 => "[A-Za-z]{0,12}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    let codes = vec![
        "code",
        "date",
        "status",
        "value-quantity",
        "subject",
        "patient",
        "name",
        "family",
        "birthdate",
        "gender",
        "identifier",
        "telecom",
        "active",
        "probability",
        "_id",
        "_lastUpdated",
        "_tag",
        "_profile",
        "_security",
        "instantiates-canonical",
        "activity-date",
        "address",
        "_include",
        "_has",
        "subject.name",
        "combo-code",
    ];
    let modifiers = vec![
        "",
        ":missing",
        ":exact",
        ":contains",
        ":not",
        ":text",
        ":Patient",
        ":Group",
        ":below",
        ":in",
        ":identifier",
        ":",
        ":x'y",
    ];
    prop_oneof![
        6 => (prop::sample::select(codes), prop::sample::select(modifiers))
            .prop_map(|(c, m)| format!("{c}{m}")),
        1 => "[a-z_:.'\"-]{0,12}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    let prefixes = vec![
        "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx",
    ];
    let atoms = vec![
        "2020",
        "2020-12-31",
        "2021-01-01T00:00:00Z",
        "2021-02-30",
        "2020-01-01T10:00+05:30",
        "100",
        "1e2",
        "-0.5",
        "99999999999999999999999999999",
        "100|http://unitsofmeasure.org|mg",
        "100||mg",
        "http://loinc.org|1234-5",
        "|x",
        "x|",
        "|",
        "Patient/p1",
        "Patient/p1/_history/2",
        "http://ex.org/fhir/Patient/p1",
        "p1",
        "true",
        "muller",
        "Müller",
        "it's",
        "a\\,b",
        "a\\|b",
        "\\",
        "'; DROP TABLE x; --",
        "\"quoted\"",
        "$x",
        "%27",
        "%ZZ",
        "%00",
        "\u{1F600}",
        "a\u{0301}",
        "--",
        "/*",
        "{}",
        "[*]",
        "@ == 1",
        "like_regex",
        "E'x'",
        "\u{7}",
    ];
    prop_oneof![
        6 => (prop::sample::select(prefixes), prop::collection::vec(prop::sample::select(atoms), 1..3))
            .prop_map(|(p, a)| format!("{p}{}", a.join(","))),
        2 => any::<String>(),
        1 => "[-a-z0-9|,:.%/\\\\'\"+ ]{0,20}",
    ]
}

/// Text for string, token and uri values: hostile atoms or any characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "'; DROP TABLE x; --", "it's", "\"q\"", "a\\b", "\\", "$x", "@ == 1", "like_regex",
            "E'x'", "{}", "[*]", "Müller", "a\u{0301}", "\u{1F600}", "\u{7}", "%", "--", "/*",
        ])
        .prop_map(str::to_string),
        3 => "[^\u{0}]{1,10}",
    ]
}

fn prefix() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap",
    ])
}

fn date() -> impl Strategy<Value = String> {
    let zone = prop::sample::select(vec!["", "Z", "+05:30", "-14:00", "+14:00"]);
    (prefix(), 1u32..=9999, 0u32..=12, 1u32..=28, 0u32..3, zone).prop_map(|(p, y, m, d, t, z)| {
        match (m, t) {
            (0, _) => format!("{p}{y:04}"),
            (_, 0) => format!("{p}{y:04}-{m:02}"),
            (_, 1) => format!("{p}{y:04}-{m:02}-{d:02}"),
            _ => format!("{p}{y:04}-{m:02}-{d:02}T23:59:59.999{z}"),
        }
    })
}

fn number() -> impl Strategy<Value = String> {
    (prefix(), "-?[0-9]{1,6}(\\.[0-9]{1,4})?(e-?[0-9]{1,2})?").prop_map(|(p, n)| format!("{p}{n}"))
}

fn value_of(kind: &'static str) -> BoxedStrategy<String> {
    match kind {
        "token" => prop_oneof![
            text(),
            (text(), text()).prop_map(|(s, c)| format!("{s}|{c}")),
            text().prop_map(|c| format!("|{c}")),
        ]
        .boxed(),
        "date" => date().boxed(),
        "number" => number().boxed(),
        "quantity" => prop_oneof![
            number(),
            (number(), text(), text()).prop_map(|(n, s, c)| format!("{n}|{s}|{c}")),
            (number(), text()).prop_map(|(n, c)| format!("{n}||{c}")),
        ]
        .boxed(),
        "reference" => prop_oneof![
            "[A-Za-z0-9.-]{1,8}",
            "[A-Za-z0-9.-]{1,8}".prop_map(|id| format!("Patient/{id}")),
            ("[A-Za-z0-9.-]{1,8}", "[A-Za-z0-9.-]{1,4}")
                .prop_map(|(id, v)| format!("Patient/{id}/_history/{v}")),
            ("[a-z:/.?=&'%()*+-]{1,12}", "[A-Za-z0-9.-]{1,8}")
                .prop_map(|(b, id)| format!("http://{b}/Patient/{id}")),
        ]
        .boxed(),
        "missing" => prop::sample::select(vec!["true", "false"])
            .prop_map(str::to_string)
            .boxed(),
        _ => text().boxed(),
    }
}

/// A parameter of `ty` that parses, and its value kind.
fn param(ty: &'static str) -> impl Strategy<Value = (&'static str, &'static str)> {
    let common = [
        ("_id", "text"),
        ("_tag", "token"),
        ("_security", "token"),
        ("_profile", "text"),
        ("_lastUpdated", "date"),
        ("_tag:missing", "missing"),
        ("_profile:missing", "missing"),
    ];
    let own: &[(&str, &str)] = match ty {
        "Observation" => &[
            ("code", "token"),
            ("code:not", "token"),
            ("code:text", "text"),
            ("status", "token"),
            ("date", "date"),
            ("value-quantity", "quantity"),
            ("combo-value-quantity", "quantity"),
            ("subject", "reference"),
            ("patient", "reference"),
            ("subject:Patient", "id"),
            ("value-string", "text"),
            ("value-string:contains", "text"),
            ("date:missing", "missing"),
        ],
        "Patient" => &[
            ("family", "text"),
            ("family:exact", "text"),
            ("name", "text"),
            ("address", "text"),
            ("birthdate", "date"),
            ("gender", "token"),
            ("identifier", "token"),
            ("telecom", "token"),
            ("general-practitioner", "reference"),
            ("active", "token"),
            ("name:contains", "text"),
        ],
        "RiskAssessment" => &[("probability", "number")],
        "CarePlan" => &[
            ("instantiates-canonical", "text"),
            ("activity-date", "date"),
        ],
        _ => &[("date", "date"), ("length", "quantity")],
    };
    prop::sample::select(common.iter().chain(own).copied().collect::<Vec<_>>())
}

/// One `name=value` of `ty`, the value percent-encoded as a client would.
fn pair(ty: &'static str) -> impl Strategy<Value = String> {
    param(ty).prop_flat_map(|(name, kind)| {
        let v = if kind == "id" {
            "[A-Za-z0-9.-]{1,8}".boxed()
        } else {
            value_of(kind)
        };
        (Just(name), prop::collection::vec(v, 1..3)).prop_map(|(n, vs)| {
            let joined = vs.join(",");
            let encoded =
                percent_encoding::utf8_percent_encode(&joined, percent_encoding::NON_ALPHANUMERIC);
            format!("{n}={encoded}")
        })
    })
}

/// A `_typeFilter` value: `Type?name=value&...`; mostly valid, sometimes broken.
pub fn type_filter() -> impl Strategy<Value = String> {
    let valid = prop::sample::select(vec![
        "Observation",
        "Patient",
        "Encounter",
        "RiskAssessment",
        "CarePlan",
    ])
    .prop_flat_map(|ty| {
        prop::collection::vec(pair(ty), 1..4).prop_map(move |ps| format!("{ty}?{}", ps.join("&")))
    });
    let loose = (ty(), prop::collection::vec((name(), value()), 0..4)).prop_map(|(t, params)| {
        let q: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("{t}?{}", q.join("&"))
    });
    prop_oneof![6 => valid, 3 => loose, 1 => any::<String>()]
}
