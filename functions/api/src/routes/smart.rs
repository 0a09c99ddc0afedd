//! SMART App Launch 2.x discovery (`/.well-known/smart-configuration`), the Backend
//! Services token endpoint (`POST /auth/token`), and `GET /$me` (who the caller is and
//! what it may do: what the console shows and enables).

use lambda_http::http::header::{CACHE_CONTROL, PRAGMA, RETRY_AFTER};
use lambda_http::Request;
use serde_json::json;
use siphon::auth::backend::OAuthError;
use siphon::auth::jwt::ASSERTION_ALGORITHMS;
use siphon::auth::scopes::DUMP_SQL;
use siphon::auth::{Principal, Via};
use siphon::web::{self, Reply, StatusCode};

use crate::App;

/// The absolute URL of the token endpoint, as clients must write it in `aud`.
pub fn token_url(app: &App, request: &Request) -> String {
    let base = web::base_url(request.headers(), app.public_url.as_deref());
    format!("{base}{}", super::TOKEN_PATH)
}

/// The scopes siphon understands (v2 and their v1 names), as `scopes_supported`.
pub const SCOPES_SUPPORTED: [&str; 7] = [
    "system/*.rs",
    "system/*.cruds",
    "system/*.cud",
    "system/*.read",
    "system/*.write",
    "system/*.*",
    DUMP_SQL,
];

/// `GET /.well-known/smart-configuration`.
pub fn configuration(app: &App, request: &Request) -> Reply {
    let mut doc = json!({
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    });
    if app.auth.tokens_enabled() {
        doc["token_endpoint"] = json!(token_url(app, request));
    }
    Reply::ok(doc)
}

/// `POST /auth/token`: an access token for a client assertion, or an RFC 6749 error.
pub async fn token(app: &App, request: &Request) -> Reply {
    let url = token_url(app, request);
    let source = crate::source_ip(request);
    let issued = if web::check_content_type(request.method(), request.headers(), true).is_err() {
        Err(OAuthError::InvalidRequest(format!(
            "the token request must be {}",
            web::FORM_TYPE
        )))
    } else {
        app.auth
            .issue_token(request.body().as_ref(), &url, source)
            .await
    };
    let reply = match issued {
        Ok(issued) => Reply::ok(serde_json::to_value(issued).unwrap_or_default()),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut r = Reply::value(status, e.body());
            if let OAuthError::Throttled { retry_after_secs } = e {
                r = r.header(RETRY_AFTER, retry_after_secs.to_string());
            }
            r
        }
    };
    // RFC 6749 section 5.1: token responses are never cached.
    reply
        .header(CACHE_CONTROL, "no-store")
        .header(PRAGMA, "no-cache")
}

/// `GET /$me`: the caller's id, whether it is the admin, how it signed in and its scopes.
pub fn me(who: &Principal) -> Reply {
    Reply::ok(json!({
        "client_id": who.client_id,
        "admin": who.admin,
        "via": match who.via { Via::Basic => "basic", Via::Token => "token" },
        "scope": if who.admin { "admin".to_string() } else { who.grants.to_string() },
    }))
}

/// `GET /.well-known/jwks.json`: the public half of siphon's own client key, which a
/// remote Bulk Data server registers to verify siphon's assertions (pull imports with
/// `auth` type `smart`). `{"keys": []}` when siphon holds no key.
pub async fn jwks(app: &App) -> Reply {
    match app.remote_credentials.jwks().await {
        Ok(set) => Reply::raw(StatusCode::OK, "application/json", set.to_string())
            .header(CACHE_CONTROL, "max-age=300"),
        Err(e) => web::error_reply(&e, web::ErrorStyle::Plain),
    }
}
