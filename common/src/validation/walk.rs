//! One pass over a line's JSON with serde_json's streaming deserializer, steered by the
//! compiled tables: no `Value` tree is built, strings are borrowed from the line, and
//! every finding is recorded (with its element path) without stopping the walk. Only
//! broken JSON stops it.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::primitive::{Json, Number};
use super::refs::{parse_reference, FoundRef};
use super::schema::{Complex, Kind, Prop, Schema, TypeId};

/// At most this many findings are described per line (all are counted).
const MAX_ISSUES: usize = 20;

/// Markers that stop the first walk of a line: its type must be read another way.
const NOT_FIRST: &str = "siphon: resourceType is not the first property";
const UNKNOWN: &str = "siphon: not an R4 resource type";

/// A segment of an element path.
#[derive(Clone, Copy, Debug)]
enum Seg {
    Name(&'static str),
    Index(u32),
}

/// What walking one line found.
#[derive(Debug, Default)]
pub struct Found<'de> {
    /// The top-level `resourceType` and `id`, when they are strings.
    pub resource_type: Option<Cow<'de, str>>,
    pub id: Option<Cow<'de, str>>,
    /// A problem with `resourceType` or `id` themselves: the line cannot load.
    pub hard: Option<String>,
    /// Structure findings, each `path: what`.
    pub issues: Vec<String>,
    /// Findings counted beyond [`MAX_ISSUES`].
    pub more: usize,
    /// References to a type their element does not allow.
    pub target_issues: Vec<String>,
    /// Literal references (`Type/id`), when references are collected.
    pub refs: Vec<FoundRef>,
}

struct Ctx<'de> {
    schema: &'static Schema,
    collect_refs: bool,
    root: &'static str,
    path: Vec<Seg>,
    /// Allowed targets of the innermost `Reference` being walked.
    targets: Option<&'static [String]>,
    found: Found<'de>,
}

impl Ctx<'_> {
    fn path_string(&self, extra: Option<&str>, drop_last: bool) -> String {
        let mut s = String::from(self.root);
        let segs = if drop_last && !self.path.is_empty() {
            &self.path[..self.path.len() - 1]
        } else {
            &self.path[..]
        };
        for seg in segs {
            match seg {
                Seg::Name(n) => {
                    s.push('.');
                    s.push_str(n);
                }
                Seg::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
            }
        }
        if let Some(extra) = extra {
            s.push('.');
            s.push_str(extra);
        }
        s
    }

    fn issue(&mut self, extra: Option<&str>, what: fmt::Arguments<'_>) {
        if self.found.issues.len() >= MAX_ISSUES {
            self.found.more += 1;
            return;
        }
        let path = self.path_string(extra, false);
        self.found.issues.push(format!("{path}: {what}"));
    }

    fn mismatch(&mut self, prop: &Prop, found: &str) {
        let expected = self.expected(prop);
        self.issue(None, format_args!("expected {expected}, found {found}"));
    }

    fn expected(&self, prop: &Prop) -> String {
        match prop.kind {
            Kind::Primitive(p) => {
                let p = &self.schema.primitives[p as usize];
                format!("{} ({})", p.json.article(), p.name)
            }
            Kind::Complex(t) => {
                let name = self.schema.complex(t).name;
                if name.contains('.') {
                    "an object".to_string()
                } else {
                    format!("an object ({name})")
                }
            }
            Kind::Resource => "a resource (an object)".to_string(),
        }
    }

    fn primitive_value(
        &mut self,
        prop: &Prop,
        got: Json,
        check: impl FnOnce(&super::primitive::Primitive) -> Option<String>,
    ) {
        let Kind::Primitive(p) = prop.kind else {
            return self.mismatch(prop, got.article());
        };
        let primitive = &self.schema.primitives[p as usize];
        if primitive.json != got {
            return self.mismatch(prop, got.article());
        }
        if let Some(what) = check(primitive) {
            self.issue(None, format_args!("{what}"));
        }
    }

    fn string_value(&mut self, prop: &Prop, value: &str) {
        self.primitive_value(prop, Json::String, |p| {
            if value.is_empty() {
                Some("empty string".to_string())
            } else if !p.matches(value.as_bytes()) {
                Some(format!("{} is not a valid {}", shown(value), p.name))
            } else {
                None
            }
        });
        if prop.literal_reference && self.collect_refs {
            self.reference(value);
        }
    }

    fn reference(&mut self, value: &str) {
        let Some((target_type, id)) = parse_reference(value) else {
            return;
        };
        let path = self.path_string(None, true);
        if let Some(allowed) = self.targets {
            if !allowed.iter().any(|t| t == target_type) {
                self.found.target_issues.push(format!(
                    "{path}: {value} is not an allowed target (allowed: {})",
                    allowed.join(", ")
                ));
            }
        }
        self.found.refs.push(FoundRef {
            path,
            target_type,
            id: id.to_string(),
        });
    }
}

/// A value shown in a message: quoted, at most 40 characters.
fn shown(value: &str) -> String {
    if value.chars().count() <= 40 {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(40).collect();
        format!("{cut:?}...")
    }
}

/// Walks one line (a JSON object). `collect_refs` gathers literal references.
pub fn walk(line: &str, collect_refs: bool) -> Result<Found<'_>, serde_json::Error> {
    let schema = Schema::get();
    let mut ctx = Ctx {
        schema,
        collect_refs,
        root: "",
        path: Vec::with_capacity(16),
        targets: None,
        found: Found::default(),
    };
    let mut de = serde_json::Deserializer::from_str(line);
    match (&mut de).deserialize_map(Top { ctx: &mut ctx }) {
        Ok(()) => {
            de.end()?;
            return Ok(ctx.found);
        }
        Err(e)
            if e.is_data()
                && (e.to_string().starts_with(NOT_FIRST) || e.to_string().starts_with(UNKNOWN)) => {
        }
        Err(e) => return Err(e),
    }
    // `resourceType` is not first, or names no R4 type: read the head, then walk knowing it.
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "resourceType", borrow, default)]
        resource_type: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
    }
    let head: Head = serde_json::from_str(line)?;
    let mut ctx = Ctx {
        found: Found {
            resource_type: head.resource_type,
            id: head.id,
            ..Found::default()
        },
        ..ctx
    };
    ctx.path.clear();
    let Some(rt) = ctx.found.resource_type.clone() else {
        return Ok(ctx.found);
    };
    match schema.resource(&rt) {
        Some(ty) => {
            ctx.root = schema.complex(ty).name;
            let mut de = serde_json::Deserializer::from_str(line);
            (&mut de).deserialize_map(Resource {
                ctx: &mut ctx,
                ty,
                top: true,
            })?;
        }
        None => ctx.issue(
            None,
            format_args!("{} is not an R4 resource type", shown(&rt)),
        ),
    }
    Ok(ctx.found)
}

/// The top level when its type is not known yet: `resourceType` must come first.
struct Top<'a, 'de> {
    ctx: &'a mut Ctx<'de>,
}

impl<'de> Visitor<'de> for Top<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match map.next_key_seed(KeySeed)? {
            Some(k) if &*k == "resourceType" => {}
            Some(_) => return Err(de::Error::custom(NOT_FIRST)),
            None => return Ok(()),
        }
        let Some(rt) = map.next_value_seed(MaybeStr)? else {
            return Err(de::Error::custom(NOT_FIRST)); // not a string: the head says how
        };
        let Some(ty) = self.ctx.schema.resource(&rt) else {
            return Err(de::Error::custom(UNKNOWN));
        };
        self.ctx.root = self.ctx.schema.complex(ty).name;
        self.ctx.found.resource_type = Some(rt);
        walk_map(self.ctx, ty, map, true, true)
    }
}

/// A resource of a known type.
struct Resource<'a, 'de> {
    ctx: &'a mut Ctx<'de>,
    ty: TypeId,
    top: bool,
}

impl<'de> Visitor<'de> for Resource<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a resource")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        walk_map(self.ctx, self.ty, map, self.top, false)
    }
}

/// Walks the properties of an object of table `ty`. `top`: the line's own resource
/// (its `id` and `resourceType` are taken); `type_seen`: `resourceType` was read.
fn walk_map<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx<'de>,
    ty: TypeId,
    mut map: A,
    top: bool,
    mut type_seen: bool,
) -> Result<(), A::Error> {
    let table = ctx.schema.complex(ty);
    let mut seen = Seen::default();
    let mut empty = !type_seen;
    while let Some(key) = map.next_key_seed(KeySeed)? {
        empty = false;
        let Some(prop) = table.props.get(&*key) else {
            type_seen = other_key(ctx, table, &mut map, &key, top, type_seen)?;
            continue;
        };
        match seen.mark(prop) {
            Mark::New => {}
            Mark::OtherChoice => {
                let element = table.elements[prop.element as usize].name;
                ctx.issue(
                    Some(&key),
                    format_args!("only one type of {element} may be present"),
                );
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            Mark::Again => {
                if top && prop.name == "id" {
                    ctx.found.hard = Some("duplicate field `id`".into());
                }
                ctx.issue(Some(&key), format_args!("duplicate property"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
        }
        if top && prop.name == "id" {
            match map.next_value_seed(MaybeStr)? {
                Some(id) => ctx.found.id = Some(id),
                None => ctx.found.hard = Some("id must be a string".into()),
            }
            continue;
        }
        ctx.path.push(Seg::Name(prop.name));
        map.next_value_seed(Value { ctx, prop: *prop })?;
        ctx.path.pop();
    }
    if empty {
        ctx.issue(None, format_args!("empty object"));
    }
    report_missing(ctx, table, seen.elements());
    Ok(())
}

/// Which elements of an object were present so far (values and `_` companions apart),
/// and which type of each choice.
struct Seen {
    values: u64,
    companions: u64,
    chosen: [u8; 64],
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            values: 0,
            companions: 0,
            chosen: [0; 64],
        }
    }
}

/// What a property is to the object so far.
enum Mark {
    New,
    /// Another type of a choice element already present.
    OtherChoice,
    /// Present already.
    Again,
}

impl Seen {
    fn mark(&mut self, prop: &Prop) -> Mark {
        let bit = 1u64 << prop.element;
        let slot = &mut self.chosen[prop.element as usize];
        let set = if prop.underscore {
            &mut self.companions
        } else {
            &mut self.values
        };
        if *slot != 0 && *slot != prop.variant + 1 {
            return Mark::OtherChoice;
        }
        if *set & bit != 0 {
            return Mark::Again;
        }
        *set |= bit;
        *slot = prop.variant + 1;
        Mark::New
    }

    /// The elements present, by value or companion.
    fn elements(&self) -> u64 {
        self.values | self.companions
    }
}

/// A key that is no property of `table`: `resourceType` of a resource (checked; returns
/// whether it has been read now), or an unknown element (reported, its value skipped).
fn other_key<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx<'de>,
    table: &Complex,
    map: &mut A,
    key: &Key<'de>,
    top: bool,
    type_seen: bool,
) -> Result<bool, A::Error> {
    if &**key != "resourceType" || !table.resource {
        ctx.issue(Some(key), format_args!("unknown element"));
        map.next_value::<IgnoredAny>()?;
        return Ok(type_seen);
    }
    let value = map.next_value_seed(MaybeStr)?;
    if type_seen {
        if top {
            ctx.found.hard = Some("duplicate field `resourceType`".into());
        } else {
            ctx.issue(Some("resourceType"), format_args!("duplicate property"));
        }
    } else if value.as_deref() != Some(table.name) {
        ctx.issue(
            Some("resourceType"),
            format_args!("expected {:?}", table.name),
        );
    }
    Ok(true)
}

/// An issue for each required element of `table` not among `present`.
fn report_missing(ctx: &mut Ctx<'_>, table: &Complex, present: u64) {
    let missing = table.required & !present;
    if missing == 0 {
        return;
    }
    for (i, element) in table.elements.iter().enumerate() {
        if missing & (1 << i) != 0 {
            ctx.issue(
                Some(element.name),
                format_args!("missing (min {})", element.min),
            );
        }
    }
}

/// An object key, borrowed from the line when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl std::ops::Deref for Key<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_string()))
    }
}

/// A string value, or `None` (anything else, skipped).
struct MaybeStr;

impl<'de> DeserializeSeed<'de> for MaybeStr {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MaybeStr {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// The value of a property: an array when the element repeats, else one item.
struct Value<'a, 'de> {
    ctx: &'a mut Ctx<'de>,
    prop: Prop,
}

impl<'de> DeserializeSeed<'de> for Value<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.prop.many {
            d.deserialize_any(Many {
                ctx: self.ctx,
                prop: self.prop,
            })
        } else {
            Item {
                ctx: self.ctx,
                prop: self.prop,
                in_array: false,
            }
            .deserialize(d)
        }
    }
}

/// A repeating element: a non-empty array of items.
struct Many<'a, 'de> {
    ctx: &'a mut Ctx<'de>,
    prop: Prop,
}

impl Many<'_, '_> {
    fn not_an_array(self, found: &str) {
        let expected = self.ctx.expected(&self.prop);
        self.ctx.issue(
            None,
            format_args!("expected an array (of {expected}), found {found}"),
        );
    }
}

impl<'de> Visitor<'de> for Many<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0u32;
        loop {
            self.ctx.path.push(Seg::Index(n));
            let item = seq.next_element_seed(Item {
                ctx: self.ctx,
                prop: self.prop,
                in_array: true,
            });
            self.ctx.path.pop();
            if item?.is_none() {
                break;
            }
            n += 1;
        }
        if n == 0 {
            self.ctx.issue(None, format_args!("empty array"));
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.not_an_array("an object");
        Ok(())
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<(), E> {
        self.not_an_array("a string");
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_an_array("a string");
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_an_array("a boolean");
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_an_array("a number");
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_an_array("a number");
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_an_array("a number");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.ctx.issue(None, format_args!("null is not allowed"));
        Ok(())
    }
}

/// One value of an element.
struct Item<'a, 'de> {
    ctx: &'a mut Ctx<'de>,
    prop: Prop,
    in_array: bool,
}

impl<'de> DeserializeSeed<'de> for Item<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.prop.kind == Kind::Resource {
            let raw = <&'de RawValue>::deserialize(d)?;
            walk_contained(self.ctx, raw.get());
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

/// A resource inside the line (`contained`, `Bundle.entry.resource`): the type is read
/// from its own `resourceType`, wherever that property is.
fn walk_contained<'de>(ctx: &mut Ctx<'de>, raw: &'de str) {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "resourceType", borrow, default)]
        resource_type: Option<Cow<'a, str>>,
    }
    let head = serde_json::from_str::<Head>(raw);
    let rt = match head {
        Ok(Head {
            resource_type: Some(rt),
        }) => rt,
        Ok(_) => return ctx.issue(None, format_args!("a resource needs a resourceType")),
        Err(_) => {
            return ctx.issue(
                None,
                format_args!("expected a resource (an object with a resourceType)"),
            )
        }
    };
    let Some(ty) = ctx.schema.resource(&rt) else {
        return ctx.issue(
            None,
            format_args!("{} is not an R4 resource type", shown(&rt)),
        );
    };
    let mut de = serde_json::Deserializer::from_str(raw);
    let outer_targets = ctx.targets.take();
    let walked = (&mut de).deserialize_map(Resource {
        ctx: &mut *ctx,
        ty,
        top: false,
    });
    ctx.targets = outer_targets;
    if let Err(e) = walked {
        ctx.issue(None, format_args!("{e}"));
    }
}

impl<'de> Visitor<'de> for Item<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an element value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Kind::Complex(ty) = self.prop.kind else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            self.ctx.mismatch(&self.prop, "an object");
            return Ok(());
        };
        let is_reference = ty == self.ctx.schema.reference;
        let outer = self.ctx.targets;
        if is_reference {
            self.ctx.targets = self.prop.targets;
        }
        let walked = walk_map(self.ctx, ty, map, false, false);
        self.ctx.targets = outer;
        walked
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        let expected = self.ctx.expected(&self.prop);
        let what = if self.in_array {
            format!("expected {expected}, found an array")
        } else {
            format!("expected a single value (max 1) of {expected}, found an array")
        };
        self.ctx.issue(None, format_args!("{what}"));
        Ok(())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.ctx.string_value(&self.prop, v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.ctx.string_value(&self.prop, v);
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.ctx
            .primitive_value(&self.prop, Json::Boolean, |_| None);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.number(Number::U(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.number(Number::I(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.number(Number::F(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        // In arrays of primitives, null keeps a value and its `_x` companion aligned.
        let aligned =
            self.in_array && (self.prop.underscore || matches!(self.prop.kind, Kind::Primitive(_)));
        if !aligned {
            self.ctx.issue(None, format_args!("null is not allowed"));
        }
        Ok(())
    }
}

impl Item<'_, '_> {
    fn number(self, n: Number) {
        self.ctx.primitive_value(&self.prop, Json::Number, |p| {
            (!p.matches_number(n)).then(|| {
                let lexical = match n {
                    Number::U(v) => v.to_string(),
                    Number::I(v) => v.to_string(),
                    Number::F(v) => format!("{v:?}"),
                };
                format!("{lexical} is not a valid {}", p.name)
            })
        });
    }
}
