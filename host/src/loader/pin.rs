//! Optional `sha256` pin of a plugin file, computed from the descriptor that
//! will be `dlopen`ed (never the path again).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::LoadFailure;

/// A validated pin: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Pin(String);

impl Sha256Pin {
    /// Parses a pin from the config.
    ///
    /// # Errors
    ///
    /// When it is not 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(t))
        } else {
            Err(format!("sha256 pin must be 64 hex digits, got {:?}", text))
        }
    }

    /// The pin as hex.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

/// Hex SHA-256 of the whole file behind `file`.
pub fn sha256_hex(mut file: &File) -> Result<String, LoadFailure> {
    file.seek(SeekFrom::Start(0)).map_err(|e| LoadFailure::Open(format!("seek: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| LoadFailure::Open(format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks `file` against `pin`.
pub fn verify(file: &File, pin: &Sha256Pin) -> Result<(), LoadFailure> {
    let actual = sha256_hex(file)?;
    if actual == pin.0 {
        Ok(())
    } else {
        Err(LoadFailure::PinMismatch { expected: pin.0.clone(), actual })
    }
}
