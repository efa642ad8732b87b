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
pub const MECHANISM: &str = "SCRAM-SHA-256";

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
    pub fn decoy(username: &str, secret: &[u8; 32]) -> Verifier {
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
    #[error("nonce mismatch")]
    NonceMismatch,
    #[error("invalid proof")]
    InvalidProof,
}

/// The server's state between its first and its final message.
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads client-first-message; returns the state and server-first-message.
    pub fn start(verifier: Verifier, client_first: &str) -> Result<(Exchange, String), ScramError> {
        let (flag, rest) = client_first.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
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
        let gs2_header = format!("{flag},{authzid},");
        let exchange = Exchange {
            verifier,
            gs2_header,
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

        if binding != self.gs2_header.as_bytes() {
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
        let (exchange, server_first) = Exchange::start(verifier, &first)?;
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
    fn wrong_password_fails() {
        assert_eq!(run("correct horse", "battery staple"), Err(ScramError::InvalidProof));
    }

    #[test]
    fn decoy_matches_no_password_and_keeps_its_salt() {
        let secret = [7u8; 32];
        let a = Verifier::decoy("mallory", &secret);
        let b = Verifier::decoy("mallory", &secret);
        assert_eq!(a.salt, b.salt);
        let (exchange, _) = Exchange::start(a, "n,,n=,r=abc").unwrap();
        assert_eq!(exchange.finish("c=biws,r=nope,p=AAAA"), Err(ScramError::NonceMismatch));
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let v = || Verifier::parse(&postgres_protocol::password::scram_sha_256(b"pw")).unwrap();
        assert!(Exchange::start(v(), "").is_err());
        assert!(Exchange::start(v(), "x,,n=,r=a").is_err());
        assert_eq!(
            Exchange::start(v(), "p=tls-server-end-point,,n=,r=a").err(),
            Some(ScramError::ChannelBindingUnsupported)
        );
        let (ex, _) = Exchange::start(v(), "n,,n=,r=abc").unwrap();
        assert!(ex.finish("garbage").is_err());
        assert!(Verifier::parse("md5abc").is_none());
        assert!(Verifier::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA").is_none());
    }
}
