//! Ed25519 keys for signing alert deliveries.
//!
//! The private key file holds the 32-byte seed as 64 hex digits (mode 0600). Next
//! to it, `<file>.pub` holds the public key as base64 (32 bytes), and
//! `<file>.pub.pem` the same key as a PEM SubjectPublicKeyInfo, which OpenSSL and
//! most crypto libraries read directly.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::SigningKey;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Reads a private key file written by [`write_key_pair`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{}: not a key from `amoskys-pipeline keygen` (64 hex digits)",
            path.display()
        ));
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// The public key as base64 of its 32 bytes.
pub fn public_base64(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

/// The public key as a PEM SubjectPublicKeyInfo.
pub fn public_pem(key: &SigningKey) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(&key.verifying_key().to_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// Creates a new key pair at `path` (refusing to overwrite one), returning the
/// paths of the public key files.
pub fn write_key_pair(path: &Path) -> Result<(SigningKey, PathBuf, PathBuf), String> {
    use rand::TryRngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| format!("the system's random source failed: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        format!(
            "{}: {e} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    writeln!(f, "{hex}").map_err(|e| format!("{}: {e}", path.display()))?;
    let with = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (pub_b64, pub_pem) = (with(".pub"), with(".pub.pem"));
    std::fs::write(&pub_b64, public_base64(&key) + "\n")
        .map_err(|e| format!("{}: {e}", pub_b64.display()))?;
    std::fs::write(&pub_pem, public_pem(&key))
        .map_err(|e| format!("{}: {e}", pub_pem.display()))?;
    Ok((key, pub_b64, pub_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("alerts.key");
        let (key, pub_b64, pub_pem) = write_key_pair(&p).expect("keygen");
        assert_eq!(
            read_signing_key(&p).expect("read").to_bytes(),
            key.to_bytes()
        );
        assert_eq!(
            std::fs::read_to_string(pub_b64).expect("pub").trim(),
            public_base64(&key)
        );
        assert!(
            std::fs::read_to_string(pub_pem)
                .expect("pem")
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(write_key_pair(&p).is_err());
        std::fs::write(dir.path().join("bad"), "xyz").expect("write");
        assert!(read_signing_key(&dir.path().join("bad")).is_err());
    }
}
