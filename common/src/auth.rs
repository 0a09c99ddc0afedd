//! HTTP Basic authentication against `Client` resources, authorised by `AccessPolicy`
//! (`engine: allow` linked to the client), as in the Aidbox demo.
//!
//! Client secrets are stored as Argon2id hashes (`secret` is replaced on write and never
//! returned) and checked in constant time. The bootstrap admin client comes from
//! configuration (`SIPHON_ADMIN_CLIENT_ID` / `SIPHON_ADMIN_CLIENT_SECRET`, or in AWS the
//! secret `SIPHON_ADMIN_SECRET_ARN`), never from the repository.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::resource_type::ResourceType;
use crate::storage::Db;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub admin: bool,
}

/// Hashes a client secret (Argon2id, random salt, PHC string).
pub fn hash_secret(secret: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash a secret: {e}")))
}

/// Checks a secret against its stored hash (constant time inside Argon2).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// Prepares a resource for storage: a `Client`'s plain `secret` becomes `secretHash`.
pub fn protect(ty: &ResourceType, mut resource: Value) -> Result<Value> {
    if ty.as_str() == "Client" {
        if let Some(obj) = resource.as_object_mut() {
            if let Some(secret) = obj.remove("secret") {
                let secret = secret
                    .as_str()
                    .ok_or_else(|| Error::BadRequest("Client.secret must be a string".into()))?;
                obj.insert("secretHash".into(), Value::String(hash_secret(secret)?));
            }
        }
    }
    Ok(resource)
}

/// Removes what must never leave the service from a resource about to be returned.
pub fn redact(mut resource: Value) -> Value {
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("secretHash");
        obj.remove("secret");
        // A LoaderFile read from a presigned URL: the query string is a credential.
        if obj.get("resourceType").and_then(Value::as_str) == Some("LoaderFile") {
            if let Some(Value::String(url)) = obj.get_mut("url") {
                if let Some(cut) = url.find(['?', '#']) {
                    url.truncate(cut);
                }
            }
        }
    }
    resource
}

/// Checks `Authorization` headers.
pub struct Authenticator {
    db: Db,
    admin: OnceCell<Option<(String, String)>>,
}

impl Authenticator {
    pub fn new(db: Db) -> Self {
        Authenticator {
            db,
            admin: OnceCell::new(),
        }
    }

    async fn admin(&self) -> Result<&Option<(String, String)>> {
        self.admin
            .get_or_try_init(|| async {
                if let (Ok(id), Ok(secret)) = (
                    std::env::var("SIPHON_ADMIN_CLIENT_ID"),
                    std::env::var("SIPHON_ADMIN_CLIENT_SECRET"),
                ) {
                    if !id.is_empty() && !secret.is_empty() {
                        return Ok(Some((id, secret)));
                    }
                }
                match std::env::var("SIPHON_ADMIN_SECRET_ARN") {
                    Ok(arn) if !arn.is_empty() => {
                        let raw = crate::secrets::secret_string(&arn, "the admin secret").await?;
                        let v: Value = serde_json::from_str(&raw)
                            .map_err(|_| Error::Internal("the admin secret is not JSON".into()))?;
                        match (v["client_id"].as_str(), v["client_secret"].as_str()) {
                            (Some(id), Some(s)) => Ok(Some((id.to_string(), s.to_string()))),
                            _ => Err(Error::Internal(
                                "the admin secret needs client_id and client_secret".into(),
                            )),
                        }
                    }
                    _ => Ok(None),
                }
            })
            .await
    }

    /// Authenticates and authorises one request from its `Authorization` header.
    /// 401 without or with wrong credentials, 403 when no AccessPolicy allows.
    pub async fn check(&self, authorization: Option<&str>) -> Result<Principal> {
        let (id, secret) = parse_basic(authorization)?;
        if let Some((admin_id, admin_secret)) = self.admin().await? {
            if id == *admin_id {
                return if bool::from(secret.as_bytes().ct_eq(admin_secret.as_bytes())) {
                    Ok(Principal {
                        client_id: id,
                        admin: true,
                    })
                } else {
                    Err(unauthorized())
                };
            }
        }
        let client_type = ResourceType::parse("Client").expect("valid");
        let stored = self.db.get(&client_type, &id).await.map_err(|e| match e {
            Error::BadRequest(_) => unauthorized(),
            other => other,
        })?;
        let hash = stored
            .as_ref()
            .and_then(|c| c.resource["secretHash"].as_str().map(str::to_string));
        // Verify against a dummy hash when the client is unknown, so timing tells nothing.
        let ok = match &hash {
            Some(h) => verify_secret(&secret, h),
            None => {
                static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let dummy = DUMMY.get_or_init(|| hash_secret("not-a-client").unwrap_or_default());
                let _ = verify_secret(&secret, dummy);
                false
            }
        };
        if !ok {
            return Err(unauthorized());
        }
        let client = self.db.client().await?;
        let allowed = match client
            .query_opt(
                "SELECT 1 FROM public.\"accesspolicy\" WHERE resource->>'engine' = 'allow'
                   AND resource->'link' @> jsonb_build_array(jsonb_build_object('id', $1::text, 'resourceType', 'Client'))
                 LIMIT 1",
                &[&id],
            )
            .await
        {
            Ok(row) => row.is_some(),
            Err(e) if e.code().is_some_and(|c| c.code() == "42P01") => false,
            Err(e) => return Err(e.into()),
        };
        if !allowed {
            return Err(Error::Forbidden(format!(
                "no AccessPolicy allows client {id:?}"
            )));
        }
        Ok(Principal {
            client_id: id,
            admin: false,
        })
    }
}

fn unauthorized() -> Error {
    Error::Unauthorized(
        "wrong or missing credentials (HTTP Basic with a Client id and secret)".into(),
    )
}

fn parse_basic(header: Option<&str>) -> Result<(String, String)> {
    let value = header.ok_or_else(unauthorized)?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (id, secret) = text.split_once(':').ok_or_else(unauthorized)?;
    Ok((id.to_string(), secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("s3cret"));
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cret!", &h));
    }

    #[test]
    fn basic_headers_parse() {
        assert_eq!(
            parse_basic(Some("Basic YnVsay1jbGllbnQ6c2VjcmV0")).unwrap(),
            ("bulk-client".into(), "secret".into())
        );
        for bad in [
            None,
            Some("Bearer x"),
            Some("Basic !!!"),
            Some("Basic Ym9ndXM="),
        ] {
            assert_eq!(parse_basic(bad).unwrap_err().http_status(), 401);
        }
    }

    #[test]
    fn clients_are_stored_hashed_and_returned_without_secrets() {
        let client = ResourceType::parse("Client").unwrap();
        let stored = protect(
            &client,
            serde_json::json!({"secret": "secret", "grant_types": ["basic"]}),
        )
        .unwrap();
        assert!(stored.get("secret").is_none());
        assert!(verify_secret(
            "secret",
            stored["secretHash"].as_str().unwrap()
        ));
        assert_eq!(
            redact(stored),
            serde_json::json!({"grant_types": ["basic"]})
        );
    }
}
