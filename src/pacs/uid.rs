//! DICOM UIDs for what ceusd sends to the PACS: under a configurable root, one per object, and
//! the same for the same result every time it is built, so a re-sent object replaces itself in
//! the archive instead of arriving twice under two names.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The longest UID DICOM allows (PS3.5 9.1).
const UID_MAX_LEN: usize = 64;
/// Digits left for the generated part must give enough room to avoid collisions.
const MIN_GENERATED_DIGITS: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UidError {
    #[error(
        "UID root '{root}': {reason} (a UID root is digits and dots, each component without \
         leading zeros, e.g. 1.2.826.0.1.3680043.10.1234; the default is 2.25)"
    )]
    Root { root: String, reason: String },
    #[error("'{uid}' is not a DICOM UID: {reason}")]
    Uid { uid: String, reason: String },
}

/// The organisation's root under which ceusd makes UIDs. `2.25` (the default) needs no
/// registration: the rest is then a UUID written as one decimal number (ISO/IEC 9834-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UidRoot(String);

impl Default for UidRoot {
    fn default() -> Self {
        Self(UUID_ROOT.into())
    }
}

const UUID_ROOT: &str = "2.25";

impl FromStr for UidRoot {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, UidError> {
        let fail = |reason: &str| UidError::Root {
            root: s.to_string(),
            reason: reason.into(),
        };
        check_components(s).map_err(|r| fail(&r))?;
        if s.len() + 1 + MIN_GENERATED_DIGITS > UID_MAX_LEN {
            return Err(fail(&format!(
                "too long: {} characters leave fewer than {MIN_GENERATED_DIGITS} digits of the \
                 {UID_MAX_LEN} a UID may have",
                s.len()
            )));
        }
        Ok(Self(s.to_string()))
    }
}

impl TryFrom<String> for UidRoot {
    type Error = UidError;
    fn try_from(s: String) -> Result<Self, UidError> {
        s.parse()
    }
}

impl From<UidRoot> for String {
    fn from(r: UidRoot) -> String {
        r.0
    }
}

impl fmt::Display for UidRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl UidRoot {
    /// The UID named by `parts` (e.g. `["sr", device, result id]`) under this root: the same
    /// parts give the same UID, different parts practically never do (128 bits of SHA-256
    /// under 2.25, at least 20 decimal digits of it under a site's root).
    pub fn uid_for(&self, parts: &[&str]) -> String {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part.as_bytes());
            hasher.update([0u8]); // ["ab", "c"] and ["a", "bc"] differ
        }
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let mut value = u128::from_be_bytes(bytes);
        if self.0 == UUID_ROOT {
            // A UUID of version 8 (custom) and the RFC 9562 variant, so that 2.25 holds a UUID.
            value = (value & !(0xF << 76)) | (0x8 << 76);
            value = (value & !(0x3 << 62)) | (0x2 << 62);
            return format!("{UUID_ROOT}.{value}");
        }
        let digits = (UID_MAX_LEN - self.0.len() - 1).min(38) as u32;
        let low = 10u128.pow(digits - 1);
        // In [10^(d-1), 10^d): exactly `digits` digits, no leading zero.
        format!("{}.{}", self.0, low + value % (9 * low))
    }
}

/// Checks that `uid` is a well-formed DICOM UID (what a worklist or an operator hands over).
pub fn check_uid(uid: &str) -> Result<(), UidError> {
    let fail = |reason: String| UidError::Uid {
        uid: uid.to_string(),
        reason,
    };
    if uid.len() > UID_MAX_LEN {
        return Err(fail(format!(
            "{} characters, at most {UID_MAX_LEN}",
            uid.len()
        )));
    }
    check_components(uid).map_err(fail)
}

fn check_components(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    for component in s.split('.') {
        if component.is_empty() {
            return Err("an empty component (two dots, or a dot at an end)".into());
        }
        if !component.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("component '{component}' is not all digits"));
        }
        if component.len() > 1 && component.starts_with('0') {
            return Err(format!("component '{component}' has a leading zero"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_parts_give_the_same_uid_and_different_parts_another() {
        let root = UidRoot::default();
        let a = root.uid_for(&["sr", "cart-1", "exam-7-r1"]);
        assert_eq!(a, root.uid_for(&["sr", "cart-1", "exam-7-r1"]));
        assert_ne!(a, root.uid_for(&["sr", "cart-1", "exam-7-r2"]));
        assert_ne!(a, root.uid_for(&["sr", "cart-2", "exam-7-r1"]));
        assert_ne!(
            root.uid_for(&["ab", "c"]),
            root.uid_for(&["a", "bc"]),
            "parts are separated"
        );
        assert!(a.starts_with("2.25."));
        check_uid(&a).expect("a well-formed UID");
    }

    #[test]
    fn a_uuid_root_holds_a_version_8_uuid() {
        let uid = UidRoot::default().uid_for(&["key-image", "cart-1", "exam-1-r1"]);
        let value: u128 = uid["2.25.".len()..].parse().expect("a decimal number");
        assert_eq!((value >> 76) & 0xF, 8, "version");
        assert_eq!((value >> 62) & 0x3, 2, "variant");
    }

    #[test]
    fn a_sites_root_is_used_and_the_uid_fits_in_64_characters() {
        let root: UidRoot = "1.2.826.0.1.3680043.10.1234".parse().expect("a valid root");
        for i in 0..200 {
            let uid = root.uid_for(&["sr", &i.to_string()]);
            assert!(uid.starts_with("1.2.826.0.1.3680043.10.1234."), "{uid}");
            assert_eq!(uid.len(), 64, "{uid}");
            check_uid(&uid).expect("well formed");
        }
    }

    #[test]
    fn bad_roots_are_refused_with_the_reason() {
        for (root, reason) in [
            ("", "empty"),
            ("1.2..3", "empty component"),
            ("1.2.03", "leading zero"),
            ("1.2.x", "not all digits"),
            ("1.2.3.", "empty component"),
        ] {
            let e = root.parse::<UidRoot>().expect_err(root).to_string();
            assert!(e.contains(reason), "{root}: {e}");
        }
        let long = format!("1.{}", "2".repeat(45));
        let e = long.parse::<UidRoot>().expect_err("too long").to_string();
        assert!(e.contains("too long"), "{e}");
    }
}
