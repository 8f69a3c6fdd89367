//! Templates encrypted at rest: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) under a
//! random data key per partition, the data key wrapped by the master key.
//!
//! The API knows nothing of SQLite or files, so every backend seals the same way:
//! `DataKey::seal(plain, aad) -> bytes`, `DataKey::open(bytes, aad) -> plain`,
//! `MasterKey::wrap` / `MasterKey::unwrap` for the data key it keeps beside the partition.
//! The associated data binds a sealed template to its partition, row and subject
//! (`template_aad`), so rows cannot be swapped or moved between subjects unnoticed.
//!
//! XChaCha20's 192-bit nonces are drawn at random for every seal: no counter to keep, and
//! no realistic chance of a repeat under one key (the risk is about 2^-96 after 2^48 seals).

pub mod admin;
mod keys;

pub use keys::{EncryptionConfig, EncryptionMode, MasterKey, MasterKeySource, MASTER_KEY_ENV};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Bytes a sealed message adds to its plaintext: the nonce and the Poly1305 tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Snapshot files are sealed in chunks of this size, so neither side holds a second copy.
const CHUNK: usize = 1 << 20;
const STREAM_MAGIC: &[u8; 8] = b"FGSEAL1\0";

/// The name of the cipher, as recorded beside each partition's wrapped key.
pub const CIPHER: &str = "xchacha20poly1305";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The tag did not verify: wrong key, damaged bytes, or bytes moved from elsewhere.
    #[error("authentication failed ({0}): wrong key, or the bytes were damaged or moved")]
    Tampered(&'static str),
    #[error("sealed data too short or malformed ({0})")]
    Malformed(&'static str),
    #[error("{0}")]
    Key(String),
}

/// A partition's data key. The cipher zeroizes its copy of the key when dropped.
pub struct DataKey {
    cipher: XChaCha20Poly1305,
    raw: Zeroizing<[u8; 32]>,
}

impl DataKey {
    /// A fresh random key (the operating system's generator).
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(&key);
        Self::from_raw(raw)
    }

    fn from_raw(raw: Zeroizing<[u8; 32]>) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new((&*raw).into()),
            raw,
        }
    }

    pub(crate) fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// nonce || ciphertext || tag.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, plain, aad)
    }

    /// The plaintext of `seal`'s output, if the key and the associated data are the ones it
    /// was sealed with and not a byte changed.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        open_with(&self.cipher, sealed, aad, "template")
    }

    /// Seal `plain` as a sequence of chunks written to `out`: each chunk carries its index
    /// and whether it is the last in its associated data, so chunks cannot be reordered,
    /// dropped or the file cut short unnoticed.
    pub fn seal_stream(&self, plain: &[u8], aad: &[u8], out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(STREAM_MAGIC)?;
        let chunks = plain.len().div_ceil(CHUNK).max(1);
        for i in 0..chunks {
            let part = &plain[(i * CHUNK).min(plain.len())..((i + 1) * CHUNK).min(plain.len())];
            let sealed = self.seal(part, &chunk_aad(aad, i as u64, i + 1 == chunks));
            out.write_all(&(sealed.len() as u32).to_le_bytes())?;
            out.write_all(&sealed)?;
        }
        Ok(())
    }

    /// The plaintext of `seal_stream`'s output.
    pub fn open_stream(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let rest = sealed
            .strip_prefix(STREAM_MAGIC.as_slice())
            .ok_or(SealError::Malformed("not a sealed stream"))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(rest.len()));
        let (mut pos, mut i) = (0usize, 0u64);
        while pos < rest.len() {
            let len_bytes: [u8; 4] = rest
                .get(pos..pos + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or(SealError::Malformed("chunk length cut"))?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let chunk = rest.get(pos + 4..pos + 4 + len).ok_or(SealError::Malformed("chunk cut"))?;
            pos += 4 + len;
            let last = pos == rest.len();
            let part = open_with(&self.cipher, chunk, &chunk_aad(aad, i, last), "stream chunk")?;
            plain.extend_from_slice(&part);
            i += 1;
        }
        if i == 0 {
            return Err(SealError::Malformed("empty stream"));
        }
        Ok(plain)
    }
}

/// What a sealed template is bound to: its partition, its row and its subject.
pub fn template_aad(partition: &str, row_id: i64, subject: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + partition.len() + subject.len());
    aad.extend_from_slice(b"facegate/template/v1\0");
    aad.extend_from_slice(partition.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&row_id.to_le_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad
}

fn chunk_aad(aad: &[u8], index: u64, last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(aad.len() + 9);
    out.extend_from_slice(aad);
    out.extend_from_slice(&index.to_le_bytes());
    out.push(u8::from(last));
    out
}

fn seal_with(cipher: &XChaCha20Poly1305, plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    // Encryption into a Vec cannot fail: the only error is a message over 256 GiB.
    match cipher.encrypt(&nonce, Payload { msg: plain, aad }) {
        Ok(ct) => out.extend_from_slice(&ct),
        Err(_) => out.clear(),
    }
    out
}

fn open_with(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8], what: &'static str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < OVERHEAD {
        return Err(SealError::Malformed(what));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Tampered(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_opens_only_with_its_key_and_its_binding() {
        let key = DataKey::generate();
        let plain = b"0123456789abcdef".repeat(128);
        let aad = template_aad("staff", 7, "alice");
        let sealed = key.seal(&plain, &aad);
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        assert!(!sealed.windows(16).any(|w| w == &plain[..16]), "ciphertext holds no plaintext");
        assert_eq!(key.open(&sealed, &aad).map(|p| p.to_vec()), Ok(plain.clone()));
        // Another row, subject or partition, another key, one flipped bit: refused.
        for other in [
            template_aad("staff", 8, "alice"),
            template_aad("staff", 7, "bob"),
            template_aad("guests", 7, "alice"),
        ] {
            assert!(matches!(key.open(&sealed, &other), Err(SealError::Tampered(_))));
        }
        assert!(DataKey::generate().open(&sealed, &aad).is_err());
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert!(key.open(&flipped, &aad).is_err());
        // Two seals of the same template differ (fresh nonce).
        assert_ne!(key.seal(&plain, &aad), sealed);
    }

    #[test]
    fn a_stream_round_trips_and_refuses_reorder_and_truncation() {
        let key = DataKey::generate();
        let plain: Vec<u8> = (0..(2 * CHUNK + 1000)).map(|i| (i % 251) as u8).collect();
        let mut sealed = Vec::new();
        key.seal_stream(&plain, b"snap", &mut sealed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.open_stream(&sealed, b"snap").map(|p| p.len()), Ok(plain.len()));
        assert_eq!(key.open_stream(&sealed, b"snap").map(|p| p[..] == plain[..]), Ok(true));
        assert!(key.open_stream(&sealed, b"other").is_err());
        // Cut after the first chunk: the first chunk was not sealed as the last one.
        let first = 8 + 4 + CHUNK + OVERHEAD;
        assert!(key.open_stream(&sealed[..first], b"snap").is_err());
        let mut empty = Vec::new();
        key.seal_stream(&[], b"e", &mut empty).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.open_stream(&empty, b"e").map(|p| p.len()), Ok(0));
    }
}
