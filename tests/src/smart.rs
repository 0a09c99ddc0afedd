//! SMART Backend Services from the client's side, for tests and benchmarks: keys (ES384
//! made with ring, RS384 made by the `openssl` command, nobody here's code), client
//! assertions, token requests, and a JWK Set served on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA384};
use serde_json::{json, Value};
use siphon::auth::jwt::SigningKey;

/// A client's signing key.
pub enum ClientKey {
    Es384(SigningKey),
    Rs384 { pair: RsaKeyPair, kid: String },
}

impl ClientKey {
    /// A new ES384 key named `kid`.
    pub fn es384(kid: &str) -> Self {
        ClientKey::Es384(SigningKey::from_pkcs8(&SigningKey::generate_pkcs8(), kid).unwrap())
    }

    /// A new 2048-bit RSA key named `kid`, made by `openssl genpkey` (as PKCS#8 DER).
    pub fn rs384(kid: &str) -> Self {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null \
                 | openssl pkcs8 -topk8 -nocrypt -outform DER",
            ])
            .output()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(out.status.success(), "openssl genpkey failed");
        ClientKey::Rs384 {
            pair: RsaKeyPair::from_pkcs8(&out.stdout).expect("openssl wrote PKCS#8"),
            kid: kid.to_string(),
        }
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> Value {
        match self {
            ClientKey::Es384(k) => serde_json::to_value(k.public_jwk()).unwrap(),
            ClientKey::Rs384 { pair, kid } => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig",
                       "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
            }
        }
    }

    /// `{"keys": [this key]}`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.public_jwk()]})
    }

    /// Signs `claims` with `header` fields added (`alg` and `kid` set by the key).
    pub fn sign(&self, claims: &Value, extra_header: &Value) -> String {
        match self {
            ClientKey::Es384(k) if extra_header.as_object().is_none_or(|o| o.is_empty()) => {
                k.sign(claims)
            }
            ClientKey::Es384(_) => {
                panic!("extra headers are for RS384 keys in these tests")
            }
            ClientKey::Rs384 { pair, kid } => {
                let mut header = json!({"alg": "RS384", "typ": "JWT", "kid": kid});
                if let Some(o) = extra_header.as_object() {
                    for (k, v) in o {
                        header[k] = v.clone();
                    }
                }
                let input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA384,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
            }
        }
    }
}

/// The claims of a good assertion of `client` for `token_url`, with `over` merged in
/// (a `null` removes a claim).
pub fn claims(client: &str, token_url: &str, over: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"iss": client, "sub": client, "aud": token_url, "iat": now,
                       "exp": now + 240, "jti": uuid::Uuid::new_v4().to_string()});
    if let Some(o) = over.as_object() {
        for (k, v) in o {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
    }
    c
}

/// The form body of a token request.
pub fn token_form(assertion: &str, scope: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", scope)
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("client_assertion", assertion)
        .finish()
}

/// A JWK Set served at `http://127.0.0.1:<port>/jwks`, replaceable while it runs, that
/// counts the requests it answered.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub set: Arc<Mutex<Value>>,
    pub hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(set: Value) -> Self {
        use http_body_util::Full;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let set = Arc::new(Mutex::new(set));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (set.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = s.lock().unwrap().to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer { addr, set, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
