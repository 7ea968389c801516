//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677), checked against
//! the verifier that meta.db stores (`SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`),
//! so the proxy never holds an agent's secret.
//!
//! Channel binding is not offered (the proxy speaks no TLS), so clients
//! send the `n` or `y` GS2 flag.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::{Digest, Sha256};

/// The only mechanism offered.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Why a SCRAM exchange failed. Every variant ends the login with the
/// same message to the client: it must not learn which part was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow the protocol.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof does not match.
    #[error("wrong password")]
    WrongProof,
    /// The stored verifier cannot be read.
    #[error("unreadable verifier")]
    BadVerifier,
}

/// A parsed verifier.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Verifier, ScramError> {
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::BadVerifier)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::BadVerifier)?;
        let (iter, salt) = params.split_once(':').ok_or(ScramError::BadVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::BadVerifier)?;
        let decode = |s: &str| B64.decode(s).map_err(|_| ScramError::BadVerifier);
        Ok(Verifier {
            iterations: iter.parse().map_err(|_| ScramError::BadVerifier)?,
            salt: decode(salt)?,
            stored_key: decode(stored)?,
            server_key: decode(server)?,
        })
    }

    /// A verifier for a user that does not exist: the exchange goes on as
    /// usual and fails at the proof, so the client learns nothing. The salt
    /// is derived from the name and a per-process secret, so that asking
    /// twice shows the same salt, as for a real user.
    pub fn mock(user: &str, secret: &[u8; 32]) -> Verifier {
        let mut h = Sha256::new();
        h.update(secret);
        h.update(user.as_bytes());
        let salt = h.finalize()[..16].to_vec();
        Verifier {
            iterations: 4096,
            salt,
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// One exchange, after the client's first message.
pub struct Exchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads the client-first message and answers the server-first one.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<Exchange, ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: flag, authzid, then the bare message.
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        if flag != "n" && flag != "y" {
            return Err(ScramError::Malformed("channel binding is not offered"));
        }
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identities are not supported",
            ));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut ours = [0u8; 18];
        rand::rng().fill(&mut ours[..]);
        let nonce = format!("{client_nonce}{}", B64.encode(ours));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok(Exchange {
            verifier,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        })
    }

    /// The server-first message.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message; returns the server-final message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let binding = B64
            .decode(binding.ok_or(ScramError::Malformed("no channel binding attribute"))?)
            .map_err(|_| ScramError::Malformed("bad channel binding attribute"))?;
        if binding != b"n,," && binding != b"y,," {
            return Err(ScramError::Malformed("unexpected channel binding"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("bad proof encoding"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::WrongProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let computed: Vec<u8> = Sha256::digest(&client_key).to_vec();
        // Constant time: the comparison must not tell how much matched.
        let diff = computed.iter().zip(&self.verifier.stored_key).fold(
            computed.len() ^ self.verifier.stored_key.len(),
            |acc, (a, b)| acc | usize::from(a ^ b),
        );
        if diff != 0 {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password: &str, verifier: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let ex = Exchange::start(Verifier::parse(verifier)?, client.message())?;
        client
            .update(ex.server_first().as_bytes())
            .expect("client accepts server-first");
        let server_final = ex.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("client accepts the server's signature");
        Ok(())
    }

    #[test]
    fn the_real_client_logs_in_with_the_right_password_only() {
        let verifier = postgres_protocol::password::scram_sha_256(b"s3cret");
        run("s3cret", &verifier).unwrap();
        assert!(matches!(
            run("wrong", &verifier),
            Err(ScramError::WrongProof)
        ));
        let mock = Verifier::mock("nobody", &[7; 32]);
        let mut client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        let ex = Exchange::start(mock, client.message()).unwrap();
        client.update(ex.server_first().as_bytes()).unwrap();
        assert!(matches!(
            ex.finish(client.message()),
            Err(ScramError::WrongProof)
        ));
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let v = Verifier::mock("u", &[1; 32]);
        for junk in [
            &b""[..],
            b"p=tls-server-end-point,,n=,r=x",
            b"n,,",
            b"n,a=x,n=,r=abc",
            b"\xff\xfe",
        ] {
            assert!(Exchange::start(v.clone(), junk).is_err());
        }
        assert!(Verifier::parse("md5abc").is_err());
    }
}
