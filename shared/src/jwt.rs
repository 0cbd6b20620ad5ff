//! JSON Web Tokens: verifying what clients present, and minting tokens for tests and `up`.
//!
//! Two ways to verify, as DESIGN.md configures them: HS256 with a shared secret
//! (`REALTIME_JWT_SECRET`, Supabase's default), and RS256/RS384/RS512/PS*/ES256/ES384/EdDSA with
//! public keys from a JWKS (`REALTIME_JWT_JWKS`). A token's algorithm picks the way, and only
//! keys of that family are tried: `alg: none` cannot even be parsed, an HS256 token is refused
//! when no secret is configured (so an RSA public key can never be used as an HMAC secret), and
//! a token naming a `kid` is checked against that key only.
//!
//! `exp` is checked with no leeway, and refused tokens say how long ago they expired; a token
//! without `exp` is accepted (Supabase's own keys carry one, self-minted service tokens may
//! not). `nbf` is honoured when present. Audiences are not checked: Supabase tokens carry
//! `aud: authenticated`, and authorization is the database's business (RLS).
//!
//! Registered claims must have the types RFC 7519 gives them, or the token is refused with the
//! claim named: `exp`, `nbf` and `iat` are NumericDates (JSON numbers; a string `exp` would
//! otherwise be a token that never expires), `iss`, `sub` and `jti` strings, `aud` a string or an
//! array of strings; and the claims that pick the database role (`role`,
//! `x-hasura-default-role`) are strings, so a malformed role is never silently `anon`.
//!
//! [`Claims`] reads both claim styles our users have: Supabase's (`role`, `sub`) and
//! Hasura/nself's (`https://hasura.io/jwt/claims` with `x-hasura-*`).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

/// The claim object Hasura (and nself) tokens carry their `x-hasura-*` claims in.
pub const HASURA_CLAIMS: &str = "https://hasura.io/jwt/claims";

/// A token was refused. Messages are for the client and name what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("Token has expired {ago_secs} seconds ago")]
    Expired { ago_secs: i64 },
    #[error("the token is not valid yet: its nbf is {in_secs} seconds from now")]
    NotYetValid { in_secs: i64 },
    /// A registered (or role) claim has the wrong JSON type.
    #[error("the token's {claim:?} claim must be {expected}")]
    BadClaim {
        claim: &'static str,
        expected: &'static str,
    },
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("{0}-signed tokens are not accepted by this server")]
    AlgorithmNotAllowed(String),
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKey(String),
}

/// The verification settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("REALTIME_JWT_SECRET must not be empty")]
    EmptySecret,
    #[error(
        "REALTIME_JWT_JWKS is not a JWKS ({0}); give a file path or the JSON {{\"keys\": [...]}}"
    )]
    BadJwks(String),
    #[error("REALTIME_JWT_JWKS: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("REALTIME_JWT_JWKS holds no usable key")]
    NoKeys,
}

/// Verified claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    pub fn from_map(map: Map<String, Value>) -> Claims {
        Claims(map)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The claims as one JSON object (what `request.jwt.claims` holds).
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    fn hasura(&self) -> Option<&Map<String, Value>> {
        self.0.get(HASURA_CLAIMS).and_then(Value::as_object)
    }

    /// The database role: the `role` claim, else Hasura's `x-hasura-default-role`.
    pub fn role(&self) -> Option<&str> {
        self.0
            .get("role")
            .and_then(Value::as_str)
            .or_else(|| self.hasura()?.get("x-hasura-default-role")?.as_str())
    }

    /// The subject: `sub`, else Hasura's `x-hasura-user-id`.
    pub fn sub(&self) -> Option<&str> {
        self.0
            .get("sub")
            .and_then(Value::as_str)
            .or_else(|| self.hasura()?.get("x-hasura-user-id")?.as_str())
    }

    /// Expiry, in seconds since the Unix epoch.
    pub fn exp(&self) -> Option<i64> {
        numeric(self.0.get("exp")?)
    }

    /// The `x-hasura-*` claims as a JSON object (what `hasura.user` holds); `x-hasura-user-id`
    /// and `x-hasura-role` are filled from `sub` and the role when the token lacks them.
    pub fn hasura_user(&self) -> Map<String, Value> {
        let mut user: Map<String, Value> = self
            .hasura()
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| k.starts_with("x-hasura-"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(sub) = self.sub() {
            user.entry("x-hasura-user-id")
                .or_insert_with(|| Value::String(sub.to_string()));
        }
        if let Some(role) = self.role() {
            user.entry("x-hasura-role")
                .or_insert_with(|| Value::String(role.to_string()));
        }
        user
    }
}

fn numeric(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
}

/// A public key from the JWKS.
struct Jwk {
    kid: Option<String>,
    key: DecodingKey,
    /// Algorithms this key verifies (its declared `alg`, else every one of its family).
    algorithms: Vec<Algorithm>,
}

/// Verifies tokens.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Vec<Jwk>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.secret.is_some())
            .field("jwks_keys", &self.jwks.len())
            .finish()
    }
}

/// `REALTIME_JWT_JWKS` is "a JWKS file or JSON": returns the JSON text either way.
pub fn load_jwks(value: &str) -> Result<String, JwtConfigError> {
    let trimmed = value.trim();
    if trimmed.starts_with('{') {
        return Ok(trimmed.to_string());
    }
    std::fs::read_to_string(trimmed).map_err(|source| JwtConfigError::Read {
        path: trimmed.to_string(),
        source,
    })
}

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret` and/or tokens signed by the keys of the
    /// JWKS JSON `jwks`.
    pub fn new(secret: Option<&str>, jwks: Option<&str>) -> Result<Verifier, JwtConfigError> {
        let secret = match secret {
            Some("") => return Err(JwtConfigError::EmptySecret),
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let mut keys = Vec::new();
        if let Some(jwks) = jwks {
            let set: JwkSet =
                serde_json::from_str(jwks).map_err(|e| JwtConfigError::BadJwks(e.to_string()))?;
            for jwk in &set.keys {
                use jsonwebtoken::jwk::AlgorithmParameters as P;
                let family: Vec<Algorithm> = match &jwk.algorithm {
                    P::RSA(_) => RSA.to_vec(),
                    P::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
                    P::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                    // Symmetric keys in a JWKS would reopen HMAC; use REALTIME_JWT_SECRET.
                    P::OctetKey(_) => continue,
                };
                let Ok(key) = DecodingKey::from_jwk(jwk) else {
                    continue;
                };
                let algorithms = match jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                {
                    Some(declared) if family.contains(&declared) => vec![declared],
                    Some(_) => continue,
                    None => family,
                };
                keys.push(Jwk {
                    kid: jwk.common.key_id.clone(),
                    key,
                    algorithms,
                });
            }
            if keys.is_empty() {
                return Err(JwtConfigError::NoKeys);
            }
        }
        Ok(Verifier { secret, jwks: keys })
    }

    /// Verifies a token's signature, expiry and not-before; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let alg = header.alg;
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let candidates: Vec<&DecodingKey> = match alg {
            Algorithm::HS256 => self.secret.iter().collect(),
            Algorithm::HS384 | Algorithm::HS512 => Vec::new(),
            _ => self
                .jwks
                .iter()
                .filter(|k| k.algorithms.contains(&alg))
                .filter(|k| header.kid.is_none() || k.kid == header.kid)
                .map(|k| &k.key)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(match (&header.kid, alg) {
                (Some(kid), a)
                    if !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                        && !self.jwks.is_empty() =>
                {
                    JwtError::UnknownKey(kid.clone())
                }
                _ => JwtError::AlgorithmNotAllowed(format!("{alg:?}")),
            });
        }
        let mut last = JwtError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return check_times(Claims(data.claims)),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature
                        | K::InvalidAlgorithm
                        | K::InvalidKeyFormat
                        | K::InvalidRsaKey(_)
                        | K::InvalidEcdsaKey => JwtError::BadSignature,
                        _ => JwtError::Malformed(e.to_string()),
                    };
                }
            }
        }
        Err(last)
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Refuses claims whose registered (or role) claims have the wrong JSON type (module docs).
fn check_claim_types(claims: &Claims) -> Result<(), JwtError> {
    const NUMERIC_DATE: &str = "a number (seconds since 1970-01-01, RFC 7519 NumericDate)";
    const STRING: &str = "a string";
    let bad = |claim, expected| Err(JwtError::BadClaim { claim, expected });
    for claim in ["exp", "nbf", "iat"] {
        if claims.0.get(claim).is_some_and(|v| !v.is_number()) {
            return bad(claim, NUMERIC_DATE);
        }
    }
    for claim in ["iss", "sub", "jti", "role"] {
        if claims.0.get(claim).is_some_and(|v| !v.is_string()) {
            return bad(claim, STRING);
        }
    }
    match claims.0.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return bad("aud", "a string or an array of strings"),
    }
    if let Some(hasura) = claims.0.get(HASURA_CLAIMS) {
        let Some(hasura) = hasura.as_object() else {
            return bad(HASURA_CLAIMS, "an object");
        };
        for claim in ["x-hasura-default-role", "x-hasura-user-id"] {
            if hasura.get(claim).is_some_and(|v| !v.is_string()) {
                return bad(claim, STRING);
            }
        }
    }
    Ok(())
}

fn check_times(claims: Claims) -> Result<Claims, JwtError> {
    check_claim_types(&claims)?;
    let now = now();
    if let Some(exp) = claims.exp() {
        if now >= exp {
            return Err(JwtError::Expired {
                ago_secs: now - exp,
            });
        }
    }
    if let Some(nbf) = claims.0.get("nbf").and_then(numeric) {
        if now < nbf {
            return Err(JwtError::NotYetValid { in_secs: nbf - now });
        }
    }
    Ok(claims)
}

/// Signs `claims` with HS256 and `secret`.
pub fn mint_hs256(secret: &str, claims: &Map<String, Value>) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of a JSON object cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn hs(value: Value) -> String {
        mint_hs256(SECRET, &claims(value))
    }

    fn b64(bytes: &[u8]) -> String {
        const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn hs256_tokens_verify_and_expose_claims() {
        let verifier = Verifier::new(Some(SECRET), None).unwrap();
        let token = hs(
            json!({"role": "authenticated", "sub": "u1", "exp": now() + 60, "aud": "authenticated"}),
        );
        let verified = verifier.verify(&token).unwrap();
        assert_eq!(verified.role(), Some("authenticated"));
        assert_eq!(verified.sub(), Some("u1"));
        assert!(verified.exp().unwrap() > now());
        // No exp: accepted.
        assert!(verifier
            .verify(&hs(json!({"role": "service_role"})))
            .is_ok());
    }

    #[test]
    fn bad_tokens_are_refused_with_reasons() {
        let verifier = Verifier::new(Some(SECRET), None).unwrap();
        let expired = hs(json!({"role": "anon", "exp": now() - 30}));
        match verifier.verify(&expired) {
            Err(JwtError::Expired { ago_secs }) => assert!((30..40).contains(&ago_secs)),
            other => panic!("{other:?}"),
        }
        let forged = mint_hs256(
            "another-secret-another-secret-another",
            &claims(json!({"role": "service_role"})),
        );
        assert_eq!(verifier.verify(&forged), Err(JwtError::BadSignature));
        let future = hs(json!({"role": "anon", "nbf": now() + 600}));
        match verifier.verify(&future) {
            Err(JwtError::NotYetValid { in_secs }) => assert!((590..=600).contains(&in_secs)),
            other => panic!("{other:?}"),
        }
        for garbage in ["", "abc", "a.b.c", "....", "\u{0}.\u{1}.\u{2}"] {
            assert!(
                matches!(verifier.verify(garbage), Err(JwtError::Malformed(_))),
                "{garbage:?}"
            );
        }
        // alg: none, signature stripped.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(br#"{"role":"service_role"}"#)
        );
        assert!(verifier.verify(&none).is_err());
        // Tampered payload keeps the signature of another.
        let good = hs(json!({"role": "anon"}));
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(br#"{"role":"service_role"}"#),
            parts[2]
        );
        assert_eq!(verifier.verify(&tampered), Err(JwtError::BadSignature));
        // HS384/512 are not configured.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(json!({})),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&hs512),
            Err(JwtError::AlgorithmNotAllowed(_))
        ));
    }

    /// An RSA key pair: the private key (PKCS#1 DER) and its public JWK components.
    fn rsa_fixture() -> (Vec<u8>, Value) {
        let der = include_bytes!("../tests/fixtures/rsa_private.der").to_vec();
        let jwk: Value =
            serde_json::from_str(include_str!("../tests/fixtures/rsa_public.jwk.json")).unwrap();
        (der, jwk)
    }

    fn ec_fixture() -> (Vec<u8>, Value) {
        let der = include_bytes!("../tests/fixtures/ec_private.pk8.der").to_vec();
        let jwk: Value =
            serde_json::from_str(include_str!("../tests/fixtures/ec_public.jwk.json")).unwrap();
        (der, jwk)
    }

    #[test]
    fn jwks_keys_verify_rs256_and_es256_and_refuse_confusion() {
        let (rsa_der, rsa_jwk) = rsa_fixture();
        let (ec_der, ec_jwk) = ec_fixture();
        let jwks = json!({"keys": [rsa_jwk, ec_jwk]}).to_string();
        let verifier = Verifier::new(None, Some(&jwks)).unwrap();
        let body = claims(json!({"role": "authenticated", "sub": "u9", "exp": now() + 60}));

        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        let rs =
            jsonwebtoken::encode(&header, &body, &EncodingKey::from_rsa_der(&rsa_der)).unwrap();
        assert_eq!(verifier.verify(&rs).unwrap().sub(), Some("u9"));

        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-1".into());
        let es = jsonwebtoken::encode(&header, &body, &EncodingKey::from_ec_der(&ec_der)).unwrap();
        assert_eq!(verifier.verify(&es).unwrap().sub(), Some("u9"));

        // A kid that is not in the set.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("nope".into());
        let unknown =
            jsonwebtoken::encode(&header, &body, &EncodingKey::from_rsa_der(&rsa_der)).unwrap();
        assert_eq!(
            verifier.verify(&unknown),
            Err(JwtError::UnknownKey("nope".into()))
        );

        // Algorithm confusion: HS256 signed with the public key's text as the secret.
        let confused = mint_hs256(&rsa_jwk.to_string(), &body);
        assert!(matches!(
            verifier.verify(&confused),
            Err(JwtError::AlgorithmNotAllowed(_))
        ));
        let confused = mint_hs256(rsa_jwk["n"].as_str().unwrap(), &body);
        assert!(verifier.verify(&confused).is_err());

        // Both ways at once.
        let both = Verifier::new(Some(SECRET), Some(&jwks)).unwrap();
        assert!(both.verify(&rs).is_ok());
        assert!(both.verify(&hs(json!({"role": "anon"}))).is_ok());
    }

    #[test]
    fn malformed_registered_claims_are_refused_with_the_claim_named() {
        let verifier = Verifier::new(Some(SECRET), None).unwrap();
        let refused = |body: Value| verifier.verify(&hs(body)).unwrap_err();
        let far = (now() + 3600).to_string();
        for (body, claim) in [
            (json!({"role": "anon", "exp": far}), "exp"),
            (json!({"role": "anon", "exp": null}), "exp"),
            (json!({"role": "anon", "nbf": "0"}), "nbf"),
            (json!({"role": "anon", "iat": [1]}), "iat"),
            (json!({"role": 7}), "role"),
            (json!({"role": {"name": "service_role"}}), "role"),
            (json!({"role": "anon", "sub": 42}), "sub"),
            (json!({"role": "anon", "iss": false}), "iss"),
            (json!({"role": "anon", "aud": 1}), "aud"),
            (json!({"role": "anon", "aud": ["a", 2]}), "aud"),
            (
                json!({HASURA_CLAIMS: {"x-hasura-default-role": 1}}),
                "x-hasura-default-role",
            ),
            (json!({HASURA_CLAIMS: "user"}), HASURA_CLAIMS),
        ] {
            match refused(body.clone()) {
                JwtError::BadClaim { claim: named, .. } => assert_eq!(named, claim, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(
            refused(json!({"exp": "1"})).to_string(),
            "the token's \"exp\" claim must be a number (seconds since 1970-01-01, RFC 7519 NumericDate)"
        );
        // Well-typed claims, fractional dates and audience arrays included, are accepted.
        let exp = now() as f64 + 60.5;
        assert!(verifier
            .verify(&hs(
                json!({"role": "authenticated", "sub": "u", "exp": exp, "iat": 1.5,
                               "aud": ["authenticated", "x"], "iss": "supabase"})
            ))
            .is_ok());
        // A fractional exp in the past is still an expiry.
        assert!(matches!(
            verifier.verify(&hs(json!({"exp": now() as f64 - 10.5}))),
            Err(JwtError::Expired { .. })
        ));
    }

    #[test]
    fn bad_configurations_are_errors() {
        assert!(matches!(
            Verifier::new(Some(""), None),
            Err(JwtConfigError::EmptySecret)
        ));
        assert!(matches!(
            Verifier::new(None, Some("{}")),
            Err(JwtConfigError::BadJwks(_))
        ));
        assert!(matches!(
            Verifier::new(None, Some(r#"{"keys": []}"#)),
            Err(JwtConfigError::NoKeys)
        ));
        assert!(matches!(
            load_jwks("/nonexistent/jwks.json"),
            Err(JwtConfigError::Read { .. })
        ));
        assert_eq!(load_jwks(r#" {"keys": []} "#).unwrap(), r#"{"keys": []}"#);
    }

    #[test]
    fn hasura_claims_are_read_too() {
        let claims = Claims::from_map(claims(json!({
            "sub": "ignored-if-hasura-has-one",
            HASURA_CLAIMS: {"x-hasura-user-id": "42", "x-hasura-default-role": "user", "x-hasura-org": "7", "other": 1}
        })));
        assert_eq!(claims.role(), Some("user"));
        assert_eq!(claims.sub(), Some("ignored-if-hasura-has-one"));
        let user = claims.hasura_user();
        assert_eq!(user["x-hasura-user-id"], "42");
        assert_eq!(user["x-hasura-org"], "7");
        assert!(!user.contains_key("other"));
        let supabase = Claims::from_map(claims_of(json!({"sub": "u1", "role": "authenticated"})));
        assert_eq!(supabase.hasura_user()["x-hasura-user-id"], "u1");
        assert_eq!(supabase.hasura_user()["x-hasura-role"], "authenticated");
    }

    fn claims_of(value: Value) -> Map<String, Value> {
        claims(value)
    }
}
