//! Reading the `Auth` key file: the I/O side of [`AuthConfig`], which
//! itself only names the file.

use super::config::AuthConfig;

/// Shortest key `Auth` accepts.
pub const MIN_KEY_LEN: usize = 16;

/// Reads the key named by `auth`, with an error a person can act on.
/// Trailing whitespace is ignored, so `head -c 32 /dev/urandom | base64`
/// makes a key file.
pub fn load_key(auth: &AuthConfig) -> Result<Vec<u8>, String> {
    let path = auth.key_file.display();
    let raw = std::fs::read(&auth.key_file)
        .map_err(|e| format!("cannot read Auth KeyFile {path}: {e}"))?;
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < MIN_KEY_LEN {
        return Err(format!(
            "Auth KeyFile {path} holds {end} bytes; at least {MIN_KEY_LEN} are needed \
             (make one with: head -c 32 /dev/urandom | base64 > {path})"
        ));
    }
    Ok(raw[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_needs_sixteen_bytes() {
        let dir = std::env::temp_dir().join(format!("ctrack-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        std::fs::write(&p, "short\n").unwrap();
        let a = AuthConfig {
            key_file: p.clone(),
        };
        assert!(load_key(&a).unwrap_err().contains("at least 16"));
        std::fs::write(&p, "0123456789abcdef0123\n\n").unwrap();
        assert_eq!(load_key(&a).unwrap(), b"0123456789abcdef0123");
        let missing = AuthConfig {
            key_file: dir.join("nope"),
        };
        assert!(load_key(&missing).unwrap_err().contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
