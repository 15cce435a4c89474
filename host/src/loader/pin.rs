//! Checking the optional `sha256` pin (a `config::Sha256Pin`) of a plugin file, computed from the descriptor that
//! will be `dlopen`ed (never the path again).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::LoadFailure;
use crate::config::Sha256Pin;

/// Hex SHA-256 of the whole file behind `file`.
pub fn sha256_hex(mut file: &File) -> Result<String, LoadFailure> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| LoadFailure::Open(format!("seek: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| LoadFailure::Open(format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks `file` against `pin`.
pub fn verify(file: &File, pin: &Sha256Pin) -> Result<(), LoadFailure> {
    let actual = sha256_hex(file)?;
    if actual == pin.as_hex() {
        Ok(())
    } else {
        Err(LoadFailure::PinMismatch {
            expected: pin.as_hex().to_owned(),
            actual,
        })
    }
}
