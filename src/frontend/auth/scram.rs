//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) against a stored
//! PostgreSQL verifier. Written on RustCrypto primitives: the crates that
//! implement SCRAM servers are either unmaintained or tied to a whole
//! protocol framework (see ARCHITECTURE.md).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The mechanism name offered in AuthenticationSASL.
pub(crate) const MECHANISM: &str = "SCRAM-SHA-256";
/// The channel-bound mechanism, offered on TLS connections.
pub(crate) const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type PostgreSQL defines.
const BINDING_TYPE: &str = "tls-server-end-point";

/// A parsed `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` verifier.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    /// Parses PostgreSQL's text form of a verifier.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// A verifier no password matches, with a salt that is stable per user, so
    /// an unknown user looks like a known one to whoever probes.
    pub(crate) fn decoy(username: &str, secret: &[u8; 32]) -> Verifier {
        let salt = hmac(secret, &[b"salt:", username.as_bytes()]);
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut stored_key);
        rand::thread_rng().fill_bytes(&mut server_key);
        Verifier { iterations: 4096, salt: salt[..16].to_vec(), stored_key, server_key }
    }
}

/// Why an exchange failed; all end in the same client-visible error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not offered on this connection")]
    ChannelBindingUnsupported,
    #[error("SCRAM channel binding negotiation error")]
    ChannelBindingDowngrade,
    #[error("nonce mismatch")]
    NonceMismatch,
    #[error("invalid proof")]
    InvalidProof,
}

/// The server's state between its first and its final message.
pub struct Exchange {
    verifier: Verifier,
    /// What `c=` must decode to: the GS2 header, then the binding data if any.
    expected_binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads client-first-message; returns the state and server-first-message.
    /// `plus` says the client chose SCRAM-SHA-256-PLUS; `binding` is the TLS
    /// server end-point hash when the connection is encrypted (and PLUS offered).
    pub fn start(
        verifier: Verifier,
        client_first: &str,
        plus: bool,
        binding: Option<&[u8]>,
    ) -> Result<(Exchange, String), ScramError> {
        let (flag, rest) = client_first.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
        let binding_data: &[u8] = match (flag, plus, binding) {
            ("n", false, _) => &[],
            // The client thinks we cannot bind although we offered it: a downgrade.
            ("y", false, Some(_)) => return Err(ScramError::ChannelBindingDowngrade),
            ("y", false, None) => &[],
            (f, true, Some(data)) if f.strip_prefix("p=") == Some(BINDING_TYPE) => data,
            (f, _, _) if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            ("n" | "y", true, _) => return Err(ScramError::ChannelBindingDowngrade),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        };
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no authzid field"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let mut attrs = bare.split(',');
        let user = attrs.next().ok_or(ScramError::Malformed("no username"))?;
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed("no username"));
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut server_nonce = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&verifier.salt), verifier.iterations);
        let mut expected_binding = format!("{flag},{authzid},").into_bytes();
        expected_binding.extend_from_slice(binding_data);
        let exchange = Exchange {
            verifier,
            expected_binding,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks client-final-message; returns server-final-message on success.
    pub fn finish(self, client_final: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding =
            attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        let binding = B64.decode(binding).map_err(|_| ScramError::Malformed("channel binding not base64"))?;
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("proof not base64"))?;

        // Compute before judging, so every failure costs the same work.
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let client_signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for (i, byte) in client_key.iter_mut().enumerate() {
            *byte = proof.get(i).copied().unwrap_or(0) ^ client_signature[i];
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let proof_ok: bool = stored_key.ct_eq(&self.verifier.stored_key).into();

        if binding != self.expected_binding {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        if proof.len() != 32 || !proof_ok {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

impl Verifier {
    /// Checks a cleartext password against the verifier (for the cleartext
    /// method, offered only over TLS), with the same work for every input.
    pub(crate) fn matches_password(&self, password: &str) -> bool {
        let salted = salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        stored_key.ct_eq(&self.stored_key).into()
    }
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802's Hi()).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(stored_password: &str, typed_password: &str) -> Result<(), ScramError> {
        let verifier =
            Verifier::parse(&postgres_protocol::password::scram_sha_256(stored_password.as_bytes())).unwrap();
        let mut client = ScramSha256::new(typed_password.as_bytes(), ChannelBinding::unsupported());
        let first = std::str::from_utf8(client.message()).unwrap().to_owned();
        let (exchange, server_first) = Exchange::start(verifier, &first, false, None)?;
        client.update(server_first.as_bytes()).unwrap();
        let client_final = std::str::from_utf8(client.message()).unwrap().to_owned();
        let server_final = exchange.finish(&client_final)?;
        client.finish(server_final.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn right_password_passes_and_server_proves_itself() {
        run("correct horse", "correct horse").unwrap();
    }

    #[test]
    fn channel_bound_exchange_checks_the_binding_data() {
        let verifier = Verifier::parse(&postgres_protocol::password::scram_sha_256(b"pw")).unwrap();
        let hash = [9u8; 32];
        let mut client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(hash.to_vec()));
        let first = std::str::from_utf8(client.message()).unwrap().to_owned();
        let (exchange, server_first) = Exchange::start(verifier.clone(), &first, true, Some(&hash)).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let client_final = std::str::from_utf8(client.message()).unwrap().to_owned();
        client.finish(exchange.finish(&client_final).unwrap().as_bytes()).unwrap();

        // The same client against a server with another certificate fails.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(hash.to_vec()));
        let first = std::str::from_utf8(client.message()).unwrap().to_owned();
        let (exchange, server_first) = Exchange::start(verifier, &first, true, Some(&[8u8; 32])).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let client_final = std::str::from_utf8(client.message()).unwrap().to_owned();
        assert!(exchange.finish(&client_final).is_err());
    }

    #[test]
    fn cleartext_password_matches_the_verifier() {
        let verifier = Verifier::parse(&postgres_protocol::password::scram_sha_256(b"s3cret-pass")).unwrap();
        assert!(verifier.matches_password("s3cret-pass"));
        assert!(!verifier.matches_password("s3cret-pasS"));
        assert!(!Verifier::decoy("x", &[1; 32]).matches_password("anything"));
    }

    #[test]
    fn wrong_password_fails() {
        assert_eq!(run("correct horse", "battery staple"), Err(ScramError::InvalidProof));
    }

    #[test]
    fn decoy_matches_no_password_and_keeps_its_salt() {
        let secret = [7u8; 32];
        let a = Verifier::decoy("mallory", &secret);
        let b = Verifier::decoy("mallory", &secret);
        assert_eq!(a.salt, b.salt);
        // A well-formed exchange with any password fails on the proof.
        for password in ["", "mallory", "correct horse"] {
            let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
            let first = std::str::from_utf8(client.message()).unwrap().to_owned();
            let (exchange, server_first) = Exchange::start(a.clone(), &first, false, None).unwrap();
            client.update(server_first.as_bytes()).unwrap();
            let client_final = std::str::from_utf8(client.message()).unwrap().to_owned();
            assert_eq!(exchange.finish(&client_final), Err(ScramError::InvalidProof), "{password:?}");
        }
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let v = || Verifier::parse(&postgres_protocol::password::scram_sha_256(b"pw")).unwrap();
        assert!(Exchange::start(v(), "", false, None).is_err());
        assert!(Exchange::start(v(), "x,,n=,r=a", false, None).is_err());
        assert_eq!(
            Exchange::start(v(), "p=tls-server-end-point,,n=,r=a", false, None).err(),
            Some(ScramError::ChannelBindingUnsupported)
        );
        assert_eq!(
            Exchange::start(v(), "y,,n=,r=a", false, Some(&[1; 32])).err(),
            Some(ScramError::ChannelBindingDowngrade)
        );
        assert_eq!(
            Exchange::start(v(), "n,,n=,r=a", true, Some(&[1; 32])).err(),
            Some(ScramError::ChannelBindingDowngrade)
        );
        let (ex, _) = Exchange::start(v(), "n,,n=,r=abc", false, None).unwrap();
        assert!(ex.finish("garbage").is_err());
        assert!(Verifier::parse("md5abc").is_none());
        assert!(Verifier::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA").is_none());
    }
}
