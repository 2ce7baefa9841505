//! The shared keys: reading a key file, the id a key is named by, and which keys a node
//! sends and accepts ([`RaftAuth`]). The HMAC itself stays behind [`RaftKey::sign`] and
//! [`RaftKey::verify`], so nothing else handles key material.
use std::{
    io::Read,
    path::{Path, PathBuf},
};

use base64::Engine;
use ring::hmac;

use super::frame::INSECURE_ID;

/// Shortest key accepted (after base64 decoding): the HMAC-SHA-256 block's security level.
pub const MIN_KEY_LEN: usize = 32;
/// A key file larger than this is a mistake (a wrong path, a device), not a key.
const MAX_KEY_FILE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {MAX_KEY_FILE} bytes: not a key file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} does not hold base64", path.display())]
    NotBase64 {
        path: PathBuf,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{} holds a {len}-byte key; at least {MIN_KEY_LEN} bytes are needed (`vip raft-key` makes one)", path.display())]
    Short { path: PathBuf, len: usize },
}

/// A shared key. `Debug` shows only its id.
#[derive(Clone)]
pub struct RaftKey {
    pub(super) id: [u8; 4],
    bytes: Vec<u8>,
    /// Boxed: ring's key holds the expanded state (over 200 bytes).
    key: std::sync::Arc<hmac::Key>,
}

impl PartialEq for RaftKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for RaftKey {}

impl std::fmt::Debug for RaftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftKey({})", self.id_hex())
    }
}

fn engine() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

impl RaftKey {
    /// `bytes` must be at least [`MIN_KEY_LEN`] long (checked by [`RaftKey::from_file`]).
    pub fn from_bytes(bytes: &[u8]) -> RaftKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let tag = hmac::sign(&key, b"vip raft key id");
        let mut id = [0u8; 4];
        id.copy_from_slice(&tag.as_ref()[..4]);
        if id == INSECURE_ID {
            // One key in 2^32: keep 0 for insecure mode (the id only selects, the tag decides).
            id = [0, 0, 0, 1];
        }
        RaftKey {
            id,
            bytes: bytes.to_vec(),
            key: std::sync::Arc::new(key),
        }
    }

    /// A key file: base64 (standard alphabet, padding optional; whitespace and line breaks
    /// anywhere are ignored, so `head -c 32 /dev/urandom | base64` and a Kubernetes Secret
    /// mounted as a file both work) decoding to at least [`MIN_KEY_LEN`] bytes.
    pub fn from_file(path: &Path) -> Result<RaftKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = Vec::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(KeyError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        text.retain(|b| !b.is_ascii_whitespace());
        let bytes = engine()
            .decode(&text)
            .map_err(|source| KeyError::NotBase64 {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::Short {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(RaftKey::from_bytes(&bytes))
    }

    /// A fresh random key as a key file's contents (base64 and a newline).
    pub fn generate() -> Result<String, ring::error::Unspecified> {
        let mut b = [0u8; MIN_KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)?;
        Ok(format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        ))
    }

    /// The id datagrams sealed with this key carry (in clear).
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The id as hex, for logs (it reveals nothing about the key).
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The tag of `signed` under this key.
    pub(super) fn sign(&self, signed: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, signed)
    }

    /// Whether `tag` is this key's tag of `signed` (in constant time).
    pub(super) fn verify(&self, signed: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, signed, tag).is_ok()
    }
}

/// How datagrams are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftAuth {
    /// Send with `primary`; accept `primary` or `previous`.
    Keys {
        primary: RaftKey,
        previous: Option<RaftKey>,
    },
    /// `insecure: true`: no authentication (the replay and source checks still apply, but
    /// anyone who can send to the port can forge anything).
    Insecure,
}

impl RaftAuth {
    pub fn keyed(primary: RaftKey) -> RaftAuth {
        RaftAuth::Keys {
            primary,
            previous: None,
        }
    }

    pub(super) fn keys(&self) -> Vec<&RaftKey> {
        match self {
            RaftAuth::Keys { primary, previous } => {
                std::iter::once(primary).chain(previous.iter()).collect()
            }
            RaftAuth::Insecure => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files() {
        let d = std::env::temp_dir().join(format!("vip-raft-keys-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("k");
        std::fs::write(&f, RaftKey::generate().unwrap()).unwrap();
        let k = RaftKey::from_file(&f).unwrap();
        assert_eq!(k.bytes.len(), 32);
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.bytes)));
        // 64 bytes wrapped by base64(1) at 76 columns, no padding, CRLF: still the key.
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        std::fs::write(
            &f,
            format!(
                "{}\r\n{}\r\n",
                &long[..76],
                long[76..].trim_end_matches('=')
            ),
        )
        .unwrap();
        assert_eq!(
            RaftKey::from_file(&f).unwrap(),
            RaftKey::from_bytes(&[7; 64])
        );
        std::fs::write(
            &f,
            base64::engine::general_purpose::STANDARD.encode([1u8; 31]),
        )
        .unwrap();
        assert!(matches!(
            RaftKey::from_file(&f),
            Err(KeyError::Short { len: 31, .. })
        ));
        std::fs::write(&f, "not base64!").unwrap();
        assert!(matches!(
            RaftKey::from_file(&f),
            Err(KeyError::NotBase64 { .. })
        ));
        std::fs::write(&f, vec![b'A'; 5000]).unwrap();
        assert!(matches!(
            RaftKey::from_file(&f),
            Err(KeyError::TooLarge { .. })
        ));
        assert!(matches!(
            RaftKey::from_file(&d.join("missing")),
            Err(KeyError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
