//! JSON Web Tokens as SMART Backend Services uses them: compact JWS only.
//!
//! - Client assertions are verified with the client's public keys (JWK): RS256/384/512
//!   (RSASSA-PKCS1-v1_5, 2048-bit keys and up) and ES256/ES384 (raw `r||s` signatures).
//!   `none` and every HMAC algorithm are refused: a client's key is public.
//! - siphon's own access tokens are HS256 under the token signing key; verifying one is
//!   one HMAC, no database.
//! - siphon signs its own client assertions (when it pulls from another server) with an
//!   ES384 key ([`SigningKey`]) whose public half it publishes as a JWK Set.
//!
//! Signatures come from `ring`; nothing here is hand-written cryptography.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest token looked at (a client assertion is a few hundred bytes to 2 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. Shown to operators in logs, never detailed to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("the key does not fit the algorithm")]
    KeyMismatch,
    #[error("bad signature")]
    Signature,
}

/// A JWS header.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jku: Option<String>,
}

/// A decoded, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Jws<'a> {
    pub header: Header,
    pub claims: Value,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)
}

/// Splits and decodes a compact JWS (`header.claims.signature`); checks nothing else.
pub fn decode(token: &str) -> Result<Jws<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
    let claims: Value = serde_json::from_slice(&b64(c)?).map_err(|_| JwtError::Malformed)?;
    if !claims.is_object() {
        return Err(JwtError::Malformed);
    }
    Ok(Jws {
        header,
        claims,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature: b64(s)?,
    })
}

/// A public key of a JWK Set (the members siphon reads).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A JWK Set (`{"keys": [...]}`); members siphon cannot read are skipped.
pub fn keys_of(set: &Value) -> Vec<Jwk> {
    set.get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| serde_json::from_value(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The asymmetric algorithms accepted for client assertions.
pub const ASSERTION_ALGORITHMS: [&str; 5] = ["RS384", "ES384", "RS256", "RS512", "ES256"];

impl Jwk {
    /// True when this key may verify a signature made with `alg`.
    pub fn fits(&self, alg: &str) -> bool {
        let kty_ok = match alg {
            "RS256" | "RS384" | "RS512" => self.kty == "RSA",
            "ES256" => self.kty == "EC" && self.crv.as_deref() == Some("P-256"),
            "ES384" => self.kty == "EC" && self.crv.as_deref() == Some("P-384"),
            _ => false,
        };
        let use_ok = self.use_.as_deref().is_none_or(|u| u == "sig");
        let ops_ok = self
            .key_ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == "verify"));
        kty_ok && use_ok && ops_ok && self.alg.as_deref().is_none_or(|a| a == alg)
    }
}

impl Jws<'_> {
    /// Verifies the signature with `key` under the header's algorithm, which must be one
    /// of [`ASSERTION_ALGORITHMS`] and fit the key.
    pub fn verify_with(&self, key: &Jwk) -> Result<(), JwtError> {
        let alg = self.header.alg.as_str();
        if !ASSERTION_ALGORITHMS.contains(&alg) {
            return Err(JwtError::Algorithm(alg.chars().take(16).collect()));
        }
        if !key.fits(alg) {
            return Err(JwtError::KeyMismatch);
        }
        let field = |v: &Option<String>| -> Result<Vec<u8>, JwtError> {
            b64(v.as_deref().ok_or(JwtError::KeyMismatch)?).map_err(|_| JwtError::KeyMismatch)
        };
        let msg = self.signing_input.as_bytes();
        let ok = match alg {
            "RS256" | "RS384" | "RS512" => {
                let params = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                };
                let (n, e) = (field(&key.n)?, field(&key.e)?);
                RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(params, msg, &self.signature)
                    .is_ok()
            }
            _ => {
                let (algorithm, len) = if alg == "ES256" {
                    (&signature::ECDSA_P256_SHA256_FIXED, 32)
                } else {
                    (&signature::ECDSA_P384_SHA384_FIXED, 48)
                };
                let (x, y) = (field(&key.x)?, field(&key.y)?);
                if x.len() != len || y.len() != len {
                    return Err(JwtError::KeyMismatch);
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                UnparsedPublicKey::new(algorithm, point)
                    .verify(msg, &self.signature)
                    .is_ok()
            }
        };
        ok.then_some(()).ok_or(JwtError::Signature)
    }
}

fn compact(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Signs `claims` as an HS256 JWS under `key` (siphon's access tokens).
pub fn sign_hs256(key: &[u8], claims: &Value) -> String {
    let input = compact(&serde_json::json!({"alg": "HS256", "typ": "JWT"}), claims);
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        input.as_bytes(),
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Verifies an HS256 JWS made by [`sign_hs256`] under `key` (constant time) and returns
/// its claims. Any other algorithm is refused.
pub fn verify_hs256(key: &[u8], token: &str) -> Result<Value, JwtError> {
    let jws = decode(token)?;
    if jws.header.alg != "HS256" {
        return Err(JwtError::Algorithm(
            jws.header.alg.chars().take(16).collect(),
        ));
    }
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        jws.signing_input.as_bytes(),
        &jws.signature,
    )
    .map_err(|_| JwtError::Signature)?;
    Ok(jws.claims)
}

/// An ES384 private key siphon signs its own client assertions with.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A key from its PKCS#8 DER bytes; `kid` names it in the published JWK Set.
    pub fn from_pkcs8(der: &[u8], kid: &str) -> Result<Self, JwtError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|_| JwtError::KeyMismatch)?;
        Ok(SigningKey {
            pair,
            kid: kid.to_string(),
        })
    }

    /// A new random key (PKCS#8 DER), for local settings and tests.
    pub fn generate_pkcs8() -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .expect("the system random source works")
        .as_ref()
        .to_vec()
    }

    /// The public half, as a JWK (`kty: EC`, `crv: P-384`, `alg: ES384`).
    pub fn public_jwk(&self) -> Jwk {
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(48);
        Jwk {
            kty: "EC".into(),
            kid: Some(self.kid.clone()),
            alg: Some("ES384".into()),
            use_: Some("sig".into()),
            crv: Some("P-384".into()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: Some(URL_SAFE_NO_PAD.encode(y)),
            ..Jwk::default()
        }
    }

    /// Signs `claims` as an ES384 JWS with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = serde_json::json!({"alg": "ES384", "typ": "JWT", "kid": self.kid});
        let input = compact(&header, claims);
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing does not fail");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8(), "k1").unwrap()
    }

    #[test]
    fn an_es384_assertion_verifies_with_its_public_jwk_only() {
        let k = key();
        let token = k.sign(&json!({"iss": "c", "sub": "c"}));
        let jws = decode(&token).unwrap();
        assert_eq!(jws.header.alg, "ES384");
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        assert_eq!(jws.claims["iss"], "c");
        jws.verify_with(&k.public_jwk()).unwrap();
        // Another key, a tampered payload, a tampered signature.
        let other = key().public_jwk();
        assert_eq!(jws.verify_with(&other), Err(JwtError::Signature));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"iss": "admin", "sub": "c"}).to_string());
        parts[1] = &forged;
        let tampered = parts.join(".");
        assert_eq!(
            decode(&tampered).unwrap().verify_with(&k.public_jwk()),
            Err(JwtError::Signature)
        );
        let cut = &token[..token.len() - 4];
        assert!(decode(cut).map_or(true, |j| j.verify_with(&k.public_jwk()).is_err()));
    }

    #[test]
    fn none_hmac_and_mismatched_keys_are_refused() {
        let k = key();
        let jwk = k.public_jwk();
        for alg in ["none", "HS256", "HS384", "PS384", "", "ES512"] {
            let token = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string()),
                URL_SAFE_NO_PAD.encode("{}")
            );
            assert!(
                matches!(
                    decode(&token).unwrap().verify_with(&jwk),
                    Err(JwtError::Algorithm(_))
                ),
                "{alg}"
            );
        }
        // An HS256 token whose HMAC key is the public JWK's bytes (algorithm confusion).
        let confused = sign_hs256(jwk.x.as_ref().unwrap().as_bytes(), &json!({"iss": "c"}));
        assert!(decode(&confused).unwrap().verify_with(&jwk).is_err());
        // ES384 signature against an RSA key, or a P-256 key.
        let token = k.sign(&json!({}));
        let rsa = Jwk {
            kty: "RSA".into(),
            n: Some("AQAB".into()),
            e: Some("AQAB".into()),
            ..Jwk::default()
        };
        assert_eq!(
            decode(&token).unwrap().verify_with(&rsa),
            Err(JwtError::KeyMismatch)
        );
        let p256 = Jwk {
            crv: Some("P-256".into()),
            ..jwk.clone()
        };
        assert_eq!(
            decode(&token).unwrap().verify_with(&p256),
            Err(JwtError::KeyMismatch)
        );
        let enc = Jwk {
            use_: Some("enc".into()),
            ..jwk.clone()
        };
        assert_eq!(
            decode(&token).unwrap().verify_with(&enc),
            Err(JwtError::KeyMismatch)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.",
            "e30.!!.",
            "e30.W10.",
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(decode(bad).is_err(), "{bad:.20}");
        }
    }

    #[test]
    fn hs256_tokens_round_trip_and_refuse_another_key() {
        let t = sign_hs256(b"key-1", &json!({"sub": "c", "exp": 1}));
        assert_eq!(verify_hs256(b"key-1", &t).unwrap()["sub"], "c");
        assert_eq!(verify_hs256(b"key-2", &t), Err(JwtError::Signature));
        let es = key().sign(&json!({"sub": "c"}));
        assert!(matches!(
            verify_hs256(b"key-1", &es),
            Err(JwtError::Algorithm(_))
        ));
    }

    #[test]
    fn jwk_sets_skip_what_they_cannot_read() {
        let set = json!({"keys": [{"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "kid": "1"}, 7, {"nokty": true}]});
        let keys = keys_of(&set);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("1"));
        assert!(keys_of(&json!([])).is_empty());
    }
}
