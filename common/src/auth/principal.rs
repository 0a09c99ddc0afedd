//! Who is calling, and what they may do: the checks every route makes.

use crate::error::{Error, Result};

use super::scopes::{Grants, Perm};

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// HTTP Basic with a Client id and secret (or the configured admin).
    Basic,
    /// A bearer token from the SMART token endpoint.
    Token,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    /// The configured admin: every route, every job.
    pub admin: bool,
    /// What a client may do (empty for the admin, who needs none).
    pub grants: Grants,
    pub via: Via,
}

fn perm_letter(p: Perm) -> &'static str {
    match p {
        Perm::Create => "c",
        Perm::Read => "r",
        Perm::Update => "u",
        Perm::Delete => "d",
        Perm::Search => "s",
    }
}

impl Principal {
    /// The configured admin.
    pub fn admin(client_id: &str) -> Self {
        Principal {
            client_id: client_id.to_string(),
            admin: true,
            grants: Grants::default(),
            via: Via::Basic,
        }
    }

    /// A client with `grants`.
    pub fn client(client_id: &str, grants: Grants, via: Via) -> Self {
        Principal {
            client_id: client_id.to_string(),
            admin: false,
            grants,
            via,
        }
    }

    /// True when `p` on `ty` is allowed (always for the admin).
    pub fn may(&self, ty: &str, p: Perm) -> bool {
        self.admin || self.grants.allows(ty, p)
    }

    /// `Forbidden` unless `p` on `ty` is allowed, naming the scope that would allow it.
    pub fn require(&self, ty: &str, p: Perm) -> Result<()> {
        if self.may(ty, p) {
            return Ok(());
        }
        let what = match p {
            Perm::Create => "create",
            Perm::Read => "read",
            Perm::Update => "update",
            Perm::Delete => "delete",
            Perm::Search => "search",
        };
        Err(Error::Forbidden(if crate::resource_type::is_system(ty) {
            format!("{ty} is managed by the admin only")
        } else {
            format!(
                "client {:?} may not {what} {ty}: it needs the scope system/{ty}.{}",
                self.client_id,
                perm_letter(p)
            )
        }))
    }

    /// `Forbidden` unless `ty` may be both created and updated (what a load does).
    pub fn require_write(&self, ty: &str) -> Result<()> {
        self.require(ty, Perm::Create)?;
        self.require(ty, Perm::Update)
    }

    /// `Forbidden` unless caller-written SQL is allowed.
    pub fn require_sql(&self) -> Result<()> {
        if self.admin || self.grants.allows_sql() {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "client {:?} may not run SQL: it needs the scope {}",
            self.client_id,
            super::scopes::DUMP_SQL
        )))
    }

    /// `Forbidden` unless the caller is the admin; `what` names the route.
    pub fn require_admin(&self, what: &str) -> Result<()> {
        if self.admin {
            return Ok(());
        }
        Err(Error::Forbidden(format!("{what} is for the admin only")))
    }

    /// `Forbidden` unless some type may be written (a load whose types are known only
    /// when its files are read); each line is then checked against [`Principal::writes`].
    pub fn require_some_write(&self) -> Result<()> {
        if self.admin || self.grants.writes_anything() {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "client {:?} may not load anything: it needs create and update on some type (e.g. system/Patient.cu)",
            self.client_id
        )))
    }

    /// Whose jobs the caller sees: `None` for the admin (all; `wanted` filters by owner
    /// when given), else only its own.
    pub fn owner_filter<'a>(&'a self, wanted: Option<&'a str>) -> Option<&'a str> {
        if self.admin {
            wanted
        } else {
            Some(&self.client_id)
        }
    }

    /// True when the caller may see a job owned by `owner` (`None`: started by the
    /// admin or by siphon itself).
    pub fn owns(&self, owner: Option<&str>) -> bool {
        self.admin || owner == Some(self.client_id.as_str())
    }

    /// The owner recorded on a job this caller starts.
    pub fn job_owner(&self) -> Option<String> {
        Some(self.client_id.clone())
    }

    /// The types a load by this caller may write, recorded on its LoaderFiles: `None`
    /// for any (the admin), `["*"]` for every data type, else the type names.
    pub fn writes(&self) -> Option<Vec<String>> {
        if self.admin {
            return None;
        }
        Some(self.grants.writable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_missing_scope() {
        let p = Principal::client("c", Grants::parse("system/Patient.rs"), Via::Token);
        p.require("Patient", Perm::Read).unwrap();
        let e = p
            .require("Observation", Perm::Read)
            .unwrap_err()
            .to_string();
        assert!(e.contains("system/Observation.r"), "{e}");
        let e = p.require_write("Patient").unwrap_err().to_string();
        assert!(e.contains("system/Patient.c"), "{e}");
        assert!(p.require_sql().is_err());
        assert!(p.require_admin("GET /Client").is_err());
        assert!(p.require_some_write().is_err());
        assert_eq!(p.owner_filter(Some("other")), Some("c"));
        assert!(p.owns(Some("c")) && !p.owns(Some("d")) && !p.owns(None));
        let a = Principal::admin("admin");
        a.require("Client", Perm::Read).unwrap();
        a.require_sql().unwrap();
        assert_eq!(a.owner_filter(Some("c")), Some("c"));
        assert_eq!(a.owner_filter(None), None);
        assert!(a.owns(None) && a.owns(Some("c")));
        assert_eq!(a.writes(), None);
        let e = p.require("Client", Perm::Read).unwrap_err().to_string();
        assert!(e.contains("admin only"), "{e}");
    }

    #[test]
    fn writes_list_what_a_load_may_write() {
        let p = Principal::client(
            "c",
            Grants::parse("system/Patient.cu system/Observation.c system/Condition.cruds"),
            Via::Basic,
        );
        assert_eq!(
            p.writes().unwrap(),
            vec!["Patient".to_string(), "Condition".to_string()]
        );
        let all = Principal::client("c", Grants::parse("system/*.cud"), Via::Basic);
        assert_eq!(all.writes().unwrap(), vec!["*".to_string()]);
    }
}
