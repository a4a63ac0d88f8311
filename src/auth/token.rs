//! Tokens: made from 32 bytes of the operating system's randomness
//! (`getrandom`), written as base64url behind a prefix that makes them easy
//! to spot in a leaked file or a secret scanner, and stored only as their
//! SHA-256. A token that long needs no slow password hash: guessing 2^256
//! values is out of reach however fast each guess is.

use base64::prelude::{BASE64_URL_SAFE_NO_PAD, Engine as _};
use sha2::{Digest, Sha256};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "ctk_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A new random token, or the OS's error if it has no randomness to give.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        BASE64_URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The SHA-256 of a token, as the users file stores it.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let (a, b) = (new_token().expect("a"), new_token().expect("b"));
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
