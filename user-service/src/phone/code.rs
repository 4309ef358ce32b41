//! SMS codes derived, never stored: code = HMAC-SHA256(`CODE_HMAC_KEY`, "phone" ||
//! verification id || nonce), its first 8 bytes as a big-endian u64 reduced mod 10^len and
//! zero-padded to `len` digits.
//!
//! So a resend can send the same code again while the database holds only a random nonce: a
//! dump without the key gives no code (nor a hash to brute-force offline). The reduction's bias
//! is below 10^len / 2^64 (< 10^-9 for 10 digits), nothing an attacker can use.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::verification::CodeKey;

/// Random bytes per verification (≥ 16 asked; 32 is the HMAC block's comfortable half).
pub(crate) const NONCE_BYTES: usize = 32;

/// A fresh nonce (hex) from the thread's CSPRNG.
pub(crate) fn new_nonce() -> String {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    hex::encode(nonce)
}

/// The code of verification `id` with `nonce` (hex, as stored), `len` digits (at most 19).
pub(crate) fn derive(key: &CodeKey, id: Uuid, nonce: &str, len: u32) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(b"phone");
    mac.update(id.as_bytes());
    mac.update(nonce.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let len = len.min(19);
    let value = u64::from_be_bytes(first) % 10u64.pow(len);
    format!("{value:0width$}", width = len as usize)
}

/// Whether `given` is the code, compared in constant time (a length mismatch is just unequal).
pub(crate) fn matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_of_the_length_and_depend_on_key_id_and_nonce() {
        let key = CodeKey::new("k".repeat(32));
        let id = Uuid::now_v7();
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 2 * NONCE_BYTES);
        for len in [6, 8, 10] {
            let code = derive(&key, id, &nonce, len);
            assert_eq!(code.len(), len as usize, "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        }
        let code = derive(&key, id, &nonce, 6);
        assert_eq!(derive(&key, id, &nonce, 6), code, "same inputs, same code");
        // Different nonces, ids or keys give other codes (a 10-digit code collides with odds
        // of 10^-10, so these cannot flake).
        let long = derive(&key, id, &nonce, 10);
        assert_ne!(derive(&key, id, &new_nonce(), 10), long);
        assert_ne!(derive(&key, Uuid::now_v7(), &nonce, 10), long);
        assert_ne!(derive(&CodeKey::new("o".repeat(32)), id, &nonce, 10), long);
        assert!(matches(&code, &code.clone()));
        assert!(!matches(&code, &code[..5]));
        assert!(!matches(&code, "abcdef"));
    }

    #[test]
    fn codes_are_spread_over_every_digit() {
        let key = CodeKey::new("k".repeat(32));
        let id = Uuid::now_v7();
        let mut seen = [0u32; 10];
        for _ in 0..1000 {
            let code = derive(&key, id, &new_nonce(), 6);
            seen[usize::from(code.as_bytes()[0] - b'0')] += 1;
        }
        // 100 expected per leading digit; 40 is more than 6 sigmas below.
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
    }
}
