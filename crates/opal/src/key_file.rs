//! The encryption key file of `opal serve --encryption-key-file`: one key per line,
//! `<key id> <standard base64 of 32 bytes>`, `#` comments and blank lines ignored. The key with
//! the highest id is current (seals new data); the others only open what they sealed. The file
//! must not be accessible to group or others. Key bytes never appear in an error message.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use opal_log::{KEY_LEN, Keyring, Zeroizing};

/// Reads, checks and parses the key file at `path`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Keyring> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("reading the encryption key file {}", path.display()))?;
    check_permissions(path, metadata.permissions().mode())?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the encryption key file {}", path.display()))?,
    );
    parse(&text).with_context(|| format!("in the encryption key file {}", path.display()))
}

/// Refuses a file that group or others may read, write or execute: a key anyone on the
/// machine can read protects nothing.
fn check_permissions(path: &Path, mode: u32) -> anyhow::Result<()> {
    ensure!(
        mode & 0o077 == 0,
        "the encryption key file {} has mode {:o}: it must be accessible to its owner only, \
         since anyone who can read it can read the data (run `chmod 600 {}`)",
        path.display(),
        mode & 0o777,
        path.display()
    );
    Ok(())
}

/// Parses the text of a key file; the highest key id becomes the current key.
pub(crate) fn parse(text: &str) -> anyhow::Result<Keyring> {
    let mut keys: Vec<(u16, Zeroizing<[u8; KEY_LEN]>)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(id), Some(encoded), None) = (fields.next(), fields.next(), fields.next()) else {
            bail!("line {number}: expected `<key id> <base64 key>`");
        };
        let id: u16 = match id.parse() {
            Ok(id) if id > 0 => id,
            _ => bail!("line {number}: the key id {id:?} is not a number from 1 to 65535"),
        };
        // The decoder's own error names the offending character: a piece of the key.
        let bytes = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| {
            anyhow::anyhow!("line {number}: key {id} is not valid standard base64 (with padding)")
        })?);
        ensure!(
            bytes.len() == KEY_LEN,
            "line {number}: key {id} is {} bytes long, but keys must be exactly {KEY_LEN} bytes \
             (make one with `head -c 32 /dev/urandom | base64`)",
            bytes.len()
        );
        ensure!(
            keys.iter().all(|(seen, _)| *seen != id),
            "line {number}: key id {id} appears twice; every key needs its own id"
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&bytes);
        keys.push((id, key));
    }
    let Some(current) = keys.iter().map(|(id, _)| *id).max() else {
        bail!("it holds no key: add a line `1 <base64 of 32 random bytes>`");
    };
    Ok(Keyring::new(keys, current)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn keys_parse_and_the_highest_id_is_current() {
        let text = format!("# rotated 2026-11\n\n3 {KEY_B}\r\n  1   {KEY_A}  \n# old\n");
        let keys = parse(&text).unwrap();
        assert_eq!(keys.key_ids(), vec![1, 3]);
        assert_eq!(keys.current_id(), 3);
    }

    #[test]
    fn bad_files_are_refused_with_the_line_and_reason() {
        let short = STANDARD.encode([7u8; 16]);
        let cases = [
            (format!("1 {short}"), "line 1: key 1 is 16 bytes long"),
            (
                format!("1 {KEY_A}\n1 {KEY_B}"),
                "line 2: key id 1 appears twice",
            ),
            (
                "1 not*base64!".to_owned(),
                "line 1: key 1 is not valid standard base64",
            ),
            (format!("0 {KEY_A}"), "the key id \"0\" is not a number"),
            (format!("70000 {KEY_A}"), "the key id \"70000\""),
            (format!("one {KEY_A}"), "the key id \"one\""),
            (KEY_A.to_owned(), "expected `<key id> <base64 key>`"),
            (
                format!("1 {KEY_A} extra"),
                "expected `<key id> <base64 key>`",
            ),
            ("# nothing\n\n".to_owned(), "holds no key"),
        ];
        for (text, expected) in cases {
            let err = error(&text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_never_show_key_material() {
        let almost = format!("{}!", &KEY_A[..KEY_A.len() - 1]);
        for text in [
            format!("1 {almost}"),
            format!("1 {}", STANDARD.encode([9u8; 31])),
        ] {
            let err = error(&text);
            assert!(!err.contains(&text[2..10]), "{err}");
        }
    }

    #[test]
    fn files_open_to_group_or_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("1 {KEY_A}\n")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = format!("{:#}", load(&path).unwrap_err());
            assert!(err.contains(&format!("mode {mode:o}")), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path).unwrap().current_id(), 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load(&path).unwrap().current_id(), 1);
        let missing = format!("{:#}", load(&dir.path().join("absent")).unwrap_err());
        assert!(
            missing.contains("reading the encryption key file"),
            "{missing}"
        );
    }
}
