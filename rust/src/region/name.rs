//! Region names and where they live.
//!
//! A named region is the POSIX shm object `/<root>-<name>`, i.e. the file
//! `/dev/shm/<root>-<name>`. The root is a namespace (VPP's `root_path`): the registry and
//! `scan` only ever look at files of one root. Roots cannot contain `-`, so the split is
//! unambiguous.

use super::error::{RegionError, Result};

/// Root used when none is given.
pub const DEFAULT_ROOT: &str = "shmkit";
/// Longest region name (bytes); with the root it stays below NAME_MAX (255).
pub const NAME_MAX: usize = 200;
/// Longest root (bytes).
pub const ROOT_MAX: usize = 32;

/// Check a region or object name: non-empty, bounded, no `/`, no `..`, no control characters.
pub fn validate_name(name: &str, max: usize) -> Result<()> {
    let bad = |why| Err(RegionError::InvalidName(name.to_owned(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > max {
        return bad("too long");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains("..") {
        return bad("contains '..'");
    }
    if name == "." {
        return bad("is '.'");
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// Check the name of an object inside a region: 1..=`max` bytes, no control characters
/// (`/` is allowed: object names are not paths).
pub fn validate_object_name(name: &str, max: usize) -> Result<()> {
    let bad = |why| Err(RegionError::InvalidName(name.to_owned(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > max {
        return bad("too long");
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// Check a root namespace: 1..=32 of `[A-Za-z0-9_.]`, not starting with `.`.
pub fn validate_root(root: &str) -> Result<()> {
    let bad = |why| Err(RegionError::InvalidName(root.to_owned(), why));
    if root.is_empty() || root.len() > ROOT_MAX {
        return bad("root must be 1 to 32 characters");
    }
    if root.starts_with('.') || !root.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return bad("root may only contain letters, digits, '_' and '.' (and not start with '.')");
    }
    if root.contains("..") {
        return bad("contains '..'");
    }
    Ok(())
}

/// The shm file name (`<root>-<name>`) for a validated root and name.
pub fn shm_file(root: Option<&str>, name: &str) -> Result<(String, String)> {
    let root = root.unwrap_or(DEFAULT_ROOT);
    validate_root(root)?;
    validate_name(name, NAME_MAX)?;
    Ok((root.to_owned(), format!("{root}-{name}")))
}

/// Split a file name of `root` back into the region name.
pub fn region_name<'a>(root: &str, file: &'a str) -> Option<&'a str> {
    file.strip_prefix(root)?.strip_prefix('-').filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("ok-name_1.x", NAME_MAX).is_ok());
        for bad in ["", "a/b", "..", "a..b", ".", "a\nb", &"x".repeat(NAME_MAX + 1)] {
            assert!(validate_name(bad, NAME_MAX).is_err(), "{bad:?}");
        }
        assert!(validate_root("vpp_1.0").is_ok());
        for bad in ["", "a-b", ".x", "a/b", "a..b", &"r".repeat(33)] {
            assert!(validate_root(bad).is_err(), "{bad:?}");
        }
        assert_eq!(shm_file(None, "x").unwrap().1, "shmkit-x");
        assert_eq!(region_name("r", "r-a-b"), Some("a-b"));
        assert_eq!(region_name("r", "rx-a"), None);
        assert_eq!(region_name("r", "r-"), None);
    }
}
