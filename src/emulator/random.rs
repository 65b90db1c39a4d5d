//! Fresh random values: account keys shaped like Azure's, opaque tokens and GUIDs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;

/// A storage account key as Azure makes them: 64 random bytes, base64 (88 characters).
pub(crate) fn account_key() -> String {
    STANDARD.encode(bytes::<64>())
}

/// An opaque bearer token or shared secret.
pub(crate) fn token() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<32>())
}

/// A fresh lowercase GUID, as ARM uses for request and correlation ids.
pub(crate) fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_look_like_azure_keys_and_differ() {
        let a = account_key();
        assert_eq!(a.len(), 88);
        assert!(a.ends_with("=="));
        assert_ne!(a, account_key());
    }
}
