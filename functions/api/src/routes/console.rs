//! `GET /console`: the operator console, three static files compiled into the binary
//! (`functions/api/console/`). Served without credentials (they hold no data); every
//! call the console then makes goes to the API with the user's own credentials.

use lambda_http::http::header::{HeaderName, CACHE_CONTROL};
use siphon::web::{Reply, StatusCode};

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// No inline script or style, nothing from elsewhere, no framing, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

/// `/console` (and `/console/`), `/console/app.js`, `/console/app.css`; `None` for
/// anything else.
pub fn console(path: &str) -> Option<Reply> {
    let (content_type, body, cache) = match path {
        "/console" | "/console/" => ("text/html; charset=utf-8", INDEX_HTML, "no-store"),
        // Not versioned by name: revalidated, so a deploy is picked up at once.
        "/console/app.js" => ("text/javascript; charset=utf-8", APP_JS, "no-cache"),
        "/console/app.css" => ("text/css; charset=utf-8", APP_CSS, "no-cache"),
        _ => return None,
    };
    Some(
        Reply::raw(StatusCode::OK, content_type, body.as_bytes())
            .header(
                HeaderName::from_static("content-security-policy"),
                CONTENT_SECURITY_POLICY,
            )
            .header(HeaderName::from_static("x-content-type-options"), "nosniff")
            .header(HeaderName::from_static("referrer-policy"), "no-referrer")
            .header(CACHE_CONTROL, cache),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_three_files_with_their_headers_and_nothing_else() {
        for (path, ty) in [
            ("/console", "text/html; charset=utf-8"),
            ("/console/", "text/html; charset=utf-8"),
            ("/console/app.js", "text/javascript; charset=utf-8"),
            ("/console/app.css", "text/css; charset=utf-8"),
        ] {
            let reply = console(path).unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            match &reply.body {
                siphon::web::Body::Raw {
                    content_type,
                    bytes,
                } => assert!(*content_type == ty && !bytes.is_empty(), "{path}"),
                other => panic!("{other:?}"),
            }
            let header = |name: &str| {
                reply
                    .headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                header("content-security-policy"),
                Some(CONTENT_SECURITY_POLICY)
            );
            assert_eq!(header("x-content-type-options"), Some("nosniff"));
            assert_eq!(header("referrer-policy"), Some("no-referrer"));
        }
        let html = console("/console").unwrap();
        assert!(html.headers.contains(&(CACHE_CONTROL, "no-store".into())));
        for path in [
            "/console/x",
            "/console/app.js.map",
            "/consoles",
            "/console/../rpc",
        ] {
            assert!(console(path).is_none(), "{path}");
        }
        // Nothing inline for the policy to block, nothing from elsewhere.
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"));
        assert!(!APP_JS.contains("localStorage") && !APP_JS.contains("sessionStorage"));
        assert!(!APP_JS.contains("document.cookie") && !APP_JS.contains("eval("));
    }
}
