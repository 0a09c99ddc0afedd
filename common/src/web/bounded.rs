//! YAML bodies read within a budget.
//!
//! YAML anchors and aliases let a few kilobytes stand for gigabytes (`a: &a [x, x]`,
//! `b: &b [*a, *a]`, ...): the parser replays an aliased node each time it is named.
//! Reading into a value that counts what it builds (one unit per node, one per byte of
//! every string and key) and stops at [`budget_for`] the body's size keeps the parsed
//! document within a small multiple of the bytes sent, whatever the aliases; nesting
//! is bounded by the parser (128 levels).

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::Error;

/// How much a body of `len` bytes may build: four units a byte, and a little room.
pub fn budget_for(len: usize) -> usize {
    len.saturating_mul(4).saturating_add(1024)
}

const SPENT: &str =
    "the YAML document expands to more than a few times its size (anchors and aliases?)";

/// Parses a YAML body into a JSON value within [`budget_for`] its length.
pub fn from_yaml(body: &[u8]) -> Result<Value, Error> {
    let budget = Budget(Cell::new(budget_for(body.len())));
    let de = serde_norway::Deserializer::from_slice(body);
    Seed(&budget).deserialize(de).map_err(|e| {
        let e = e.to_string();
        if e.contains(SPENT) {
            Error::BadRequest(SPENT.to_string())
        } else {
            Error::BadRequest(format!("the body is not valid YAML: {e}"))
        }
    })
}

struct Budget(Cell<usize>);

impl Budget {
    fn spend<E: serde::de::Error>(&self, units: usize) -> Result<(), E> {
        let left = self.0.get();
        if units > left {
            self.0.set(0);
            return Err(E::custom(SPENT));
        }
        self.0.set(left - units);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Seed<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

struct Key<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        // Keys may be any scalar in YAML; JSON wants a string.
        let v = Seed(self.0).deserialize(d)?;
        Ok(match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(1 + v.len())?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(1 + v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(Key(self.0))? {
            let v = map.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_yaml_reads_as_json() {
        let v = from_yaml(b"method: aidbox.bulk/load-from-bucket\nparams:\n  bucket: s3://b\n  thread-num: 4\n  upsert?: true\n  list: [1, 2.5, null, x]\n").unwrap();
        assert_eq!(
            v,
            json!({"method": "aidbox.bulk/load-from-bucket",
                   "params": {"bucket": "s3://b", "thread-num": 4, "upsert?": true, "list": [1, 2.5, null, "x"]}})
        );
        // An alias used a few times is fine.
        let v = from_yaml(b"a: &x {k: v}\nb: *x\nc: *x\n").unwrap();
        assert_eq!(v["c"], json!({"k": "v"}));
    }

    #[test]
    fn a_billion_laughs_is_refused_within_its_budget() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in "bcdefghi".chars() {
            doc.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = name;
        }
        let started = std::time::Instant::now();
        let e = from_yaml(doc.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("expands"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn deep_nesting_and_garbage_are_refused() {
        let deep = "[".repeat(10_000);
        assert!(from_yaml(deep.as_bytes()).is_err());
        let e = from_yaml(b"a: [1").unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
    }
}
