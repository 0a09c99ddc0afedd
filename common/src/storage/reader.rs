//! The read-only role caller-written SQL runs as (`$dump-sql`, query dumps), and the
//! check that it is one: a login of its own ([`super::Db::reader`]), not the service
//! user switched with `SET ROLE` (which a query could switch back), with SELECT on
//! resource tables and nothing else.
//!
//! [`check`] runs on the first reader connection of a process and refuses to go on when
//! the role is a superuser, may create roles or databases, bypasses row security, can act
//! as the owner of a table, holds any privilege but SELECT on a table, or can execute a
//! function of `infra/sql/reader-forbidden.sql` (SQL given as text, settings, locks,
//! large objects, files and server functions): `infra/sql/reader-role.sh` takes those
//! from PUBLIC.

use crate::storage::statements::Statements;
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// The SELECT of forbidden functions (`regprocedure` names), shared with the script.
const FORBIDDEN: &str = include_str!("../../../infra/sql/reader-forbidden.sql");

/// The forbidden SELECT without its comment lines.
fn forbidden_select() -> String {
    FORBIDDEN
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks that the connection's role can do no more than read resource tables; see the
/// module docs. `allow_functions` accepts forbidden functions (logged) where they cannot
/// be revoked.
pub(super) async fn check(client: &Client, user: &str, allow_functions: bool) -> Result<()> {
    let refuse = |why: String| {
        Error::Internal(format!(
            "the read-only role {user:?} {why}; caller-written SQL is refused until it is fixed (see docs/authorization.md)"
        ))
    };
    if let Some(what) = power(client).await? {
        return Err(refuse(what.to_string()));
    }
    let owns: i64 = client.row(OWNED_TABLES, &[]).await?.get(0);
    if owns > 0 {
        return Err(refuse(format!(
            "owns (or can act as the owner of) {owns} tables"
        )));
    }
    let writes: i64 = client.row(WRITABLE_TABLES, &[]).await?.get(0);
    if writes > 0 {
        return Err(refuse(format!("may write {writes} tables")));
    }
    let executable = forbidden_executable(client).await?;
    if executable.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = executable.iter().take(5).map(String::as_str).collect();
    let why = format!(
        "can execute {} functions it must not ({}{}): run infra/sql/reader-role.sh as a superuser",
        executable.len(),
        shown.join(", "),
        if executable.len() > 5 { ", ..." } else { "" }
    );
    if !allow_functions {
        return Err(refuse(why));
    }
    tracing::warn!(
        role = user,
        functions = executable.len(),
        "the read-only role {why}; accepted (SIPHON_READER_UNRESTRICTED_FUNCTIONS=allow)"
    );
    Ok(())
}

/// Tables (and views, sequences) the role owns or can act as the owner of.
const OWNED_TABLES: &str = "SELECT count(*) FROM pg_class c
  WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    AND pg_has_role(current_user, c.relowner, 'USAGE')";

/// Tables the role may change.
const WRITABLE_TABLES: &str = "SELECT count(*) FROM pg_class c
  WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    AND c.relkind IN ('r', 'p')
    AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
         OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))";

/// The first power the role has beyond reading: superuser, creating roles or
/// databases, bypassing row security.
async fn power(client: &Client) -> Result<Option<&'static str>> {
    let me = client
        .row(
            "SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    Ok([
        "is a superuser",
        "may create roles",
        "may create databases",
        "bypasses row security",
    ]
    .into_iter()
    .enumerate()
    .find(|(i, _)| me.get::<_, bool>(*i))
    .map(|(_, what)| what))
}

/// The forbidden functions the role may execute.
async fn forbidden_executable(client: &Client) -> Result<Vec<String>> {
    Ok(client
        .rows(
            &format!(
                "SELECT f FROM ({}) x(f)
                  WHERE has_function_privilege(f::regprocedure, 'EXECUTE') ORDER BY 1",
                forbidden_select()
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forbidden_list_is_one_select_without_comments() {
        let s = forbidden_select();
        assert!(s.trim_start().starts_with("SELECT"));
        assert!(!s.contains("--"));
        assert!(!s.contains(';'));
        for family in [
            "to_xml",
            "ts_stat",
            "set_config",
            "advisory",
            "lo_",
            "pg_read_file",
            "pg_sleep",
        ] {
            assert!(s.contains(family), "{family}");
        }
    }
}
