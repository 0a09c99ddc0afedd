//! SMART scopes (App Launch 2.x, `system/` context): what a caller may do, written down.
//!
//! A scope is `system/<Type|*>.<permissions>`: v2 permissions are letters out of `cruds`
//! in that order (create, read, update, delete, search), v1 names (`read` = `rs`,
//! `write` = `cud`, `*` = `cruds`) are taken as their v2 equivalents. siphon adds one
//! scope of its own, [`DUMP_SQL`] (`system/$dump-sql`): running caller-written SQL
//! (`$dump-sql`, query dumps) is more than reading types.
//!
//! A scope names an R4 resource type or `*`. `*` covers every data type (types of
//! one's own included) and never a system type (`Client`, `AccessPolicy`,
//! `LoaderFile`, `Inventory`: see [`crate::resource_type::is_system`]); those are the
//! admin's. Scopes with a v2 query (`system/Observation.rs?category=...`) or another
//! context (`patient/`, `user/`) grant nothing here: granting them wider than written
//! would be worse than refusing.

use std::fmt;

use crate::resource_type::is_system;

/// The scope that allows caller-written SQL (`$dump-sql`, dump-to-bucket with `query`).
pub const DUMP_SQL: &str = "system/$dump-sql";

/// What `engine: allow` grants (the seed's demo policy): every data type, every
/// permission, and SQL dumps. Never the admin's routes.
pub const ENGINE_ALLOW: &str = "system/*.cruds system/$dump-sql";

/// One permission letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Perm {
    fn bit(self) -> u8 {
        match self {
            Perm::Create => 1,
            Perm::Read => 2,
            Perm::Update => 4,
            Perm::Delete => 8,
            Perm::Search => 16,
        }
    }

    fn letter(self) -> char {
        match self {
            Perm::Create => 'c',
            Perm::Read => 'r',
            Perm::Update => 'u',
            Perm::Delete => 'd',
            Perm::Search => 's',
        }
    }

    const ALL: [Perm; 5] = [
        Perm::Create,
        Perm::Read,
        Perm::Update,
        Perm::Delete,
        Perm::Search,
    ];
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Perms(u8);

impl Perms {
    /// `c`, `r`, `u`, `d`, `s` in that order, each at most once; or a v1 name.
    fn parse(s: &str) -> Option<Perms> {
        match s {
            "read" => return Some(Perms(2 | 16)),
            "write" => return Some(Perms(1 | 4 | 8)),
            "*" => return Some(Perms(31)),
            _ => {}
        }
        let mut bits = 0u8;
        let mut next = 0;
        for ch in s.chars() {
            let at = Perm::ALL[next..].iter().position(|p| p.letter() == ch)?;
            bits |= Perm::ALL[next + at].bit();
            next += at + 1;
        }
        (bits != 0).then_some(Perms(bits))
    }

    pub fn has(self, p: Perm) -> bool {
        self.0 & p.bit() != 0
    }

    fn and(self, other: Perms) -> Perms {
        Perms(self.0 & other.0)
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in Perm::ALL {
            if self.has(p) {
                write!(f, "{}", p.letter())?;
            }
        }
        Ok(())
    }
}

/// What a scope is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `*`: every data type.
    AllData,
    /// One resource type.
    Type(String),
}

impl Target {
    fn covers(&self, ty: &str) -> bool {
        match self {
            Target::AllData => !is_system(ty),
            Target::Type(t) => t == ty,
        }
    }

    fn and(&self, other: &Target) -> Option<Target> {
        match (self, other) {
            (Target::AllData, t) | (t, Target::AllData) => match t {
                Target::Type(ty) if is_system(ty) => None,
                t => Some(t.clone()),
            },
            (Target::Type(a), Target::Type(b)) => (a == b).then(|| Target::Type(a.clone())),
        }
    }
}

/// One `system/<target>.<perms>` scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub target: Target,
    pub perms: Perms,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::AllData => write!(f, "system/*.{}", self.perms),
            Target::Type(t) => write!(f, "system/{t}.{}", self.perms),
        }
    }
}

impl Scope {
    /// A resource scope, or `None` for anything else (other contexts, v2 queries,
    /// unknown permissions, names that are not resource types).
    pub fn parse(s: &str) -> Option<Scope> {
        let rest = s.strip_prefix("system/")?;
        let (target, perms) = rest.rsplit_once('.')?;
        let target = match target {
            "*" => Target::AllData,
            // FHIR resource types only (a type of one's own is covered by `*`); system
            // types are the admin's: no scope names them.
            t if crate::fhir::is_resource_type(t) => Target::Type(t.to_string()),
            _ => return None,
        };
        Some(Scope {
            target,
            perms: Perms::parse(perms)?,
        })
    }
}

/// What a caller may do: resource scopes and the SQL scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    scopes: Vec<Scope>,
    dump_sql: bool,
}

impl Grants {
    /// The scopes of a space-separated list; strings that are not scopes siphon knows
    /// grant nothing (see [`Grants::unknown`] to list them).
    pub fn parse(list: &str) -> Grants {
        let mut g = Grants::default();
        for s in list.split_ascii_whitespace() {
            if s == DUMP_SQL {
                g.dump_sql = true;
            } else if let Some(scope) = Scope::parse(s) {
                g.add(scope);
            }
        }
        g
    }

    /// The strings of `list` that are not scopes siphon grants.
    pub fn unknown(list: &str) -> Vec<&str> {
        list.split_ascii_whitespace()
            .filter(|s| *s != DUMP_SQL && Scope::parse(s).is_none())
            .collect()
    }

    fn add(&mut self, scope: Scope) {
        match self.scopes.iter_mut().find(|s| s.target == scope.target) {
            Some(s) => s.perms = Perms(s.perms.0 | scope.perms.0),
            None => self.scopes.push(scope),
        }
    }

    /// Everything `self` or `other` allows.
    pub fn union(mut self, other: &Grants) -> Grants {
        for s in &other.scopes {
            self.add(s.clone());
        }
        self.dump_sql |= other.dump_sql;
        self
    }

    /// What both allow: the scope a token gets is `requested ∩ allowed`.
    pub fn intersect(&self, other: &Grants) -> Grants {
        let mut g = Grants {
            scopes: Vec::new(),
            dump_sql: self.dump_sql && other.dump_sql,
        };
        for a in &self.scopes {
            for b in &other.scopes {
                if let Some(target) = a.target.and(&b.target) {
                    let perms = a.perms.and(b.perms);
                    if !perms.is_empty() {
                        g.add(Scope { target, perms });
                    }
                }
            }
        }
        g
    }

    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && !self.dump_sql
    }

    /// True when `p` is granted on type `ty`.
    pub fn allows(&self, ty: &str, p: Perm) -> bool {
        self.scopes
            .iter()
            .any(|s| s.perms.has(p) && s.target.covers(ty))
    }

    /// True when caller-written SQL is granted.
    pub fn allows_sql(&self) -> bool {
        self.dump_sql
    }

    /// True when some type may be written (created and updated).
    pub fn writes_anything(&self) -> bool {
        self.scopes
            .iter()
            .any(|s| s.perms.has(Perm::Create) && s.perms.has(Perm::Update))
    }

    /// What a load may write (create and update): `["*"]` for every data type, else
    /// the type names, in the order granted.
    pub fn writable(&self) -> Vec<String> {
        let cu = |s: &&Scope| s.perms.has(Perm::Create) && s.perms.has(Perm::Update);
        if self
            .scopes
            .iter()
            .filter(cu)
            .any(|s| s.target == Target::AllData)
        {
            return vec!["*".to_string()];
        }
        self.scopes
            .iter()
            .filter(cu)
            .filter_map(|s| match &s.target {
                Target::Type(t) => Some(t.clone()),
                Target::AllData => None,
            })
            .collect()
    }

    /// True when every data type may be read (`system/*.r`).
    pub fn reads_all(&self) -> bool {
        self.scopes
            .iter()
            .any(|s| s.target == Target::AllData && s.perms.has(Perm::Read))
    }

    /// Of `types`, those that may be read.
    pub fn readable<'a>(&self, types: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        types
            .into_iter()
            .filter(|t| self.allows(t, Perm::Read))
            .collect()
    }
}

impl fmt::Display for Grants {
    /// The v2 scope string (space-separated), as a token response's `scope`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.scopes.iter().map(Scope::to_string).collect();
        if self.dump_sql {
            parts.push(DUMP_SQL.to_string());
        }
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_and_v1_scopes_parse_to_the_same_permissions() {
        let v2 = Grants::parse("system/Patient.rs system/Observation.cud");
        let v1 = Grants::parse("system/Patient.read system/Observation.write");
        assert_eq!(v2, v1);
        assert_eq!(v2.to_string(), "system/Patient.rs system/Observation.cud");
        assert!(v2.allows("Patient", Perm::Read));
        assert!(v2.allows("Patient", Perm::Search));
        assert!(!v2.allows("Patient", Perm::Create));
        assert!(v2.allows("Observation", Perm::Update));
        assert!(!v2.allows("Observation", Perm::Read));
        let star = Grants::parse("system/*.*");
        assert_eq!(star.to_string(), "system/*.cruds");
        assert!(star.allows("Condition", Perm::Delete));
    }

    #[test]
    fn what_is_not_a_system_scope_siphon_knows_grants_nothing() {
        for s in [
            "patient/*.rs",
            "user/Patient.read",
            "system/Patient.sr", // out of order
            "system/Patient.rr",
            "system/Patient.x",
            "system/Patient.",
            "system/patient.rs",           // not a type name
            "system/UnknownResource.read", // not an R4 type
            "system/Observation.rs?category=laboratory",
            "openid",
            "launch",
            "system/$dump",
            "",
        ] {
            let g = Grants::parse(s);
            assert!(g.is_empty(), "{s:?} granted {g}");
        }
        assert_eq!(
            Grants::unknown("system/Patient.rs bogus system/$dump-sql x/y.z"),
            vec!["bogus", "x/y.z"]
        );
    }

    #[test]
    fn star_never_covers_system_types() {
        let g = Grants::parse(ENGINE_ALLOW);
        assert!(g.allows("Patient", Perm::Read));
        assert!(
            g.allows("MyCustomType", Perm::Create),
            "* covers types of one's own"
        );
        assert!(g.allows_sql());
        for t in ["Client", "AccessPolicy", "LoaderFile", "Inventory"] {
            for p in Perm::ALL {
                assert!(!g.allows(t, p), "{t} {p:?}");
            }
        }
        // Not even when named (in any case: `CLIENT` shares the `client` table).
        for named in [
            "system/Client.rs",
            "system/CLIENT.cruds",
            "system/Loaderfile.c",
        ] {
            assert!(Grants::parse(named).is_empty(), "{named}");
        }
    }

    #[test]
    fn a_token_gets_what_was_asked_and_allowed() {
        let allowed = Grants::parse("system/Patient.rs system/Observation.cruds");
        let asked = Grants::parse("system/*.rs system/$dump-sql");
        let granted = asked.intersect(&allowed);
        assert_eq!(
            granted.to_string(),
            "system/Patient.rs system/Observation.rs"
        );
        assert!(!granted.allows_sql());
        let asked = Grants::parse("system/Condition.read");
        assert!(asked.intersect(&allowed).is_empty());
        let all = Grants::parse(ENGINE_ALLOW);
        assert_eq!(
            Grants::parse("system/*.read").intersect(&all).to_string(),
            "system/*.rs"
        );
        assert_eq!(
            Grants::parse("system/Patient.c system/Patient.u")
                .union(&Grants::parse("system/$dump-sql"))
                .to_string(),
            "system/Patient.cu system/$dump-sql"
        );
    }

    #[test]
    fn readable_types_and_writers() {
        let g = Grants::parse("system/Patient.r system/Observation.cu");
        assert_eq!(
            g.readable(["Patient", "Observation", "Client"]),
            vec!["Patient"]
        );
        assert!(g.writes_anything());
        assert!(!g.reads_all());
        assert!(Grants::parse("system/*.rs").reads_all());
        assert!(!Grants::parse("system/Patient.c").writes_anything());
    }
}
