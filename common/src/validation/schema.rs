//! The R4 structure tables (`fhir::structure`) compiled once into what the walker
//! needs at each JSON property: one table per resource, datatype and backbone element,
//! keyed by JSON property name (choice variants such as `valueQuantity` and the `_x`
//! companions of primitives spelled out), each property knowing its element, its type
//! and whether it is an array. Nothing here restates FHIR by hand: every entry comes from
//! the tables, plus the JSON rules of the format (`resourceType`, `_x`, choice naming).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use super::primitive::Primitive;
use crate::fhir::{self, ElementDef};

/// Index of a complex type in [`Schema::types`].
pub type TypeId = u32;

/// What a property holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A primitive value (index in [`Schema::primitives`]).
    Primitive(u16),
    /// An object of a datatype or backbone element.
    Complex(TypeId),
    /// A whole resource, of the type its own `resourceType` names (`contained`).
    Resource,
}

/// One JSON property of a type.
#[derive(Clone, Copy, Debug)]
pub struct Prop {
    /// The JSON name (`valueQuantity`, `_birthDate`).
    pub name: &'static str,
    /// The element it belongs to (index in [`Complex::elements`]).
    pub element: u8,
    /// Which type of a choice element it is (0 for other elements).
    pub variant: u8,
    /// The element repeats: a JSON array.
    pub many: bool,
    /// The `_x` companion of a primitive (its id and extensions).
    pub underscore: bool,
    pub kind: Kind,
    /// Allowed target types of a `Reference` (`None`: any resource).
    pub targets: Option<&'static [String]>,
    /// `Reference.reference`: the literal reference the refs check resolves.
    pub literal_reference: bool,
}

/// One element of a type, as the tables define it.
#[derive(Clone, Copy, Debug)]
pub struct Element {
    /// The JSON name (choices as `value[x]`).
    pub name: &'static str,
    pub min: u32,
}

/// A resource, a datatype or a backbone element.
#[derive(Debug)]
pub struct Complex {
    /// `Observation`, `Quantity`, `Observation.component`.
    pub name: &'static str,
    pub resource: bool,
    pub props: HashMap<&'static str, Prop, Fnv>,
    pub elements: Vec<Element>,
    /// Elements with `min >= 1`, one bit each.
    pub required: u64,
}

/// Every table, compiled.
#[derive(Debug)]
pub struct Schema {
    pub types: Vec<Complex>,
    pub primitives: Vec<Primitive>,
    /// The `Element` datatype (what a `_x` companion is).
    pub element: TypeId,
    /// The `Reference` datatype.
    pub reference: TypeId,
    resources: HashMap<&'static str, TypeId, Fnv>,
}

impl Schema {
    /// The compiled tables (built on first use, a few milliseconds).
    pub fn get() -> &'static Schema {
        static S: OnceLock<Schema> = OnceLock::new();
        S.get_or_init(build)
    }

    /// The table of a concrete resource type.
    pub fn resource(&self, name: &str) -> Option<TypeId> {
        self.resources.get(name).copied()
    }

    /// The table of `id`.
    pub fn complex(&self, id: TypeId) -> &Complex {
        &self.types[id as usize]
    }
}

/// FNV-1a: property names are short, and the tables are ours (no hostile keys).
#[derive(Default)]
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The hasher of the property tables.
pub type Fnv = BuildHasherDefault<FnvHasher>;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A table to fill: its path and its elements.
struct Pending {
    path: &'static str,
    resource: bool,
    elements: &'static std::collections::BTreeMap<String, ElementDef>,
}

fn build() -> Schema {
    let st = fhir::structure();
    let primitives = st
        .primitives
        .iter()
        .map(|(name, def)| Primitive::compile(name.as_str(), def))
        .collect();
    // Pass 1: a TypeId for every type, resource and backbone element, by path.
    let mut tables = Tables::default();
    for (name, def) in &st.types {
        tables.allocate(name.as_str(), false, &def.elements);
    }
    let mut resources = HashMap::default();
    for (name, def) in st.resources.iter().filter(|(_, d)| !d.is_abstract) {
        resources.insert(name.as_str(), tables.pending.len() as TypeId);
        tables.allocate(name.as_str(), true, &def.elements);
    }
    // Pass 2: the properties of each table.
    let primitive_index = st
        .primitives
        .keys()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i as u16))
        .collect();
    let kinds = Kinds {
        primitives: primitive_index,
        by_path: &tables.by_path,
    };
    let types = tables.pending.iter().map(|p| kinds.table(p)).collect();
    Schema {
        types,
        primitives,
        element: tables.by_path["Element"],
        reference: tables.by_path["Reference"],
        resources,
    }
}

/// The tables to fill, in TypeId order, and their ids by path.
#[derive(Default)]
struct Tables {
    pending: Vec<Pending>,
    by_path: HashMap<&'static str, TypeId>,
}

impl Tables {
    /// A table for `path`, then one for each of its backbone elements.
    fn allocate(
        &mut self,
        path: &'static str,
        resource: bool,
        elements: &'static std::collections::BTreeMap<String, ElementDef>,
    ) {
        self.by_path.insert(path, self.pending.len() as TypeId);
        self.pending.push(Pending {
            path,
            resource,
            elements,
        });
        for (name, e) in elements {
            if !e.elements.is_empty() {
                self.allocate(leak(format!("{path}.{name}")), false, &e.elements);
            }
        }
    }
}

/// What a type code is: a primitive (by index) or a table (by path).
struct Kinds<'a> {
    primitives: HashMap<&'static str, u16>,
    by_path: &'a HashMap<&'static str, TypeId>,
}

impl Kinds<'_> {
    fn of(&self, code: &str, path: &str) -> Kind {
        if let Some(i) = self.primitives.get(code) {
            Kind::Primitive(*i)
        } else if code == "Resource" {
            Kind::Resource
        } else {
            Kind::Complex(
                *self
                    .by_path
                    .get(code)
                    .unwrap_or_else(|| panic!("{path}: unknown type {code}")),
            )
        }
    }

    /// The properties of one table.
    fn table(&self, p: &Pending) -> Complex {
        assert!(p.elements.len() <= 64, "{}: more than 64 elements", p.path);
        let mut props = HashMap::default();
        let mut elements = Vec::new();
        let mut required = 0u64;
        for (index, (name, e)) in p.elements.iter().enumerate() {
            elements.push(Element {
                name: name.as_str(),
                min: e.min,
            });
            if e.min >= 1 {
                required |= 1 << index;
            }
            let literal_reference = p.path == "Reference" && name == "reference";
            for key in self.keys(p.path, name, e) {
                self.add(&mut props, e, index, literal_reference, key);
            }
        }
        Complex {
            name: p.path,
            resource: p.resource,
            props,
            elements,
            required,
        }
    }

    /// The JSON keys of element `name` of table `table`, each with its choice variant
    /// and kind: one per type of a choice (`value[x]`: `valueString`, ...), else one.
    fn keys(
        &self,
        table: &str,
        name: &'static str,
        e: &ElementDef,
    ) -> Vec<(&'static str, u8, Kind)> {
        let path = format!("{table}.{name}");
        if let Some(base) = name.strip_suffix("[x]") {
            e.types
                .iter()
                .enumerate()
                .map(|(variant, code)| {
                    let mut chars = code.chars();
                    let first = chars.next().expect("type codes are not empty");
                    let key = leak(format!(
                        "{base}{}{}",
                        first.to_ascii_uppercase(),
                        chars.as_str()
                    ));
                    (key, variant as u8, self.of(code, &path))
                })
                .collect()
        } else if let Some(target) = &e.content_ref {
            let id = *self
                .by_path
                .get(target.as_str())
                .unwrap_or_else(|| panic!("{path}: unknown contentReference {target}"));
            vec![(name, 0, Kind::Complex(id))]
        } else if !e.elements.is_empty() {
            vec![(name, 0, Kind::Complex(self.by_path[path.as_str()]))]
        } else {
            let code = e.types.first().unwrap_or_else(|| panic!("{path}: no type"));
            vec![(name, 0, self.of(code, &path))]
        }
    }

    /// The property `key` of element `index`, and for a primitive its `_key` companion
    /// (an `Element`).
    fn add(
        &self,
        props: &mut HashMap<&'static str, Prop, Fnv>,
        e: &'static ElementDef,
        index: usize,
        literal_reference: bool,
        (key, variant, kind): (&'static str, u8, Kind),
    ) {
        let targets = e
            .targets
            .get("Reference")
            .filter(|t| !t.iter().any(|t| t == "Resource"))
            .map(Vec::as_slice);
        let prop = Prop {
            name: key,
            element: index as u8,
            variant,
            many: e.is_array(),
            underscore: false,
            kind,
            targets,
            literal_reference,
        };
        if matches!(kind, Kind::Primitive(_)) {
            let companion = leak(format!("_{key}"));
            props.insert(
                companion,
                Prop {
                    name: companion,
                    underscore: true,
                    kind: Kind::Complex(self.by_path["Element"]),
                    literal_reference: false,
                    ..prop
                },
            );
        }
        props.insert(key, prop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(ty: &str, key: &str) -> Prop {
        let s = Schema::get();
        let t = s.complex(s.resource(ty).unwrap());
        t.props[key]
    }

    #[test]
    fn every_table_compiles_with_its_choices_and_companions() {
        let s = Schema::get();
        assert!(s.resource("Patient").is_some() && s.resource("Resource").is_none());
        assert_eq!(s.resources.len(), fhir::resource_types().len());
        let obs = s.complex(s.resource("Observation").unwrap());
        let value = obs.props["valueQuantity"];
        assert_eq!(obs.elements[value.element as usize].name, "value[x]");
        assert!(matches!(value.kind, Kind::Complex(t) if s.complex(t).name == "Quantity"));
        assert!(obs.props.contains_key("valueDateTime") && obs.props.contains_key("_valueString"));
        assert!(!obs.props.contains_key("value") && !obs.props.contains_key("_valueQuantity"));
        let status = obs.props["status"];
        assert!(obs.required & (1 << status.element) != 0);
        assert!(prop("Patient", "name").many && !prop("Patient", "gender").many);
        assert!(prop("Patient", "_birthDate").underscore);
        assert_eq!(prop("Patient", "contained").kind, Kind::Resource);
        let subject = prop("Observation", "subject");
        assert!(subject.targets.unwrap().iter().any(|t| t == "Patient"));
        assert!(
            prop("Observation", "focus").targets.is_none(),
            "any resource"
        );
    }

    #[test]
    fn backbone_elements_and_content_references_have_tables() {
        let s = Schema::get();
        let Kind::Complex(item) = prop("Questionnaire", "item").kind else {
            panic!()
        };
        assert_eq!(s.complex(item).name, "Questionnaire.item");
        let nested = s.complex(item).props["item"];
        assert_eq!(nested.kind, Kind::Complex(item), "item.item reuses item");
        let reference = s.complex(s.reference);
        assert!(reference.props["reference"].literal_reference);
        assert!(!reference.props["display"].literal_reference);
    }
}
