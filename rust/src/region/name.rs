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

    fn reason(r: Result<()>) -> &'static str {
        match r {
            Err(RegionError::InvalidName(_, why)) => why,
            other => panic!("expected InvalidName, got {other:?}"),
        }
    }

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

    #[test]
    fn region_name_bounds_and_reasons() {
        // The limit is inclusive, and each refusal says why.
        assert!(validate_name(&"x".repeat(NAME_MAX), NAME_MAX).is_ok());
        assert_eq!(reason(validate_name(&"x".repeat(NAME_MAX + 1), NAME_MAX)), "too long");
        assert_eq!(reason(validate_name("", NAME_MAX)), "empty");
        assert_eq!(reason(validate_name("a/b", NAME_MAX)), "contains '/'");
        assert_eq!(reason(validate_name("a..b", NAME_MAX)), "contains '..'");
        assert_eq!(reason(validate_name(".", NAME_MAX)), "is '.'");
        assert_eq!(reason(validate_name("tab\there", NAME_MAX)), "contains control characters");
        assert_eq!(reason(validate_name("del\u{7f}", NAME_MAX)), "contains control characters");
        // Single dots, leading dots and non-ASCII text are names like any other.
        for ok in [".hidden", "a.b", "x", "\u{e9}t\u{e9}", "a-b_c"] {
            assert!(validate_name(ok, NAME_MAX).is_ok(), "{ok:?}");
        }
        // The limit counts bytes, not characters.
        assert!(validate_name(&"\u{e9}".repeat(3), 6).is_ok());
        assert_eq!(reason(validate_name(&"\u{e9}".repeat(3), 5)), "too long");
    }

    #[test]
    fn object_name_bounds_and_reasons() {
        assert!(validate_object_name(&"o".repeat(96), 96).is_ok());
        assert_eq!(reason(validate_object_name(&"o".repeat(97), 96)), "too long");
        assert_eq!(reason(validate_object_name("", 96)), "empty");
        assert_eq!(reason(validate_object_name("q\0", 96)), "contains control characters");
        assert_eq!(reason(validate_object_name("\nq", 96)), "contains control characters");
        // Object names are not paths: '/' and '..' are fine.
        for ok in ["q/1", "../x", ".", "api:input"] {
            assert!(validate_object_name(ok, 96).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn root_bounds() {
        assert!(validate_root(&"r".repeat(ROOT_MAX)).is_ok());
        assert!(validate_root(&"r".repeat(ROOT_MAX + 1)).is_err());
        for ok in ["a", "_", "a.b", "A_9", "x."] {
            assert!(validate_root(ok).is_ok(), "{ok:?}");
        }
        for bad in [".", "..", "a b", "a\n", "\u{e9}", "a:b"] {
            assert!(validate_root(bad).is_err(), "{bad:?}");
        }
        assert_eq!(reason(validate_root("a..b")), "contains '..'");
    }

    #[test]
    fn shm_file_joins_root_and_name() {
        assert_eq!(shm_file(Some("vpp"), "api").unwrap(), ("vpp".to_owned(), "vpp-api".to_owned()));
        assert_eq!(shm_file(None, "x").unwrap(), (DEFAULT_ROOT.to_owned(), "shmkit-x".to_owned()));
        assert!(shm_file(Some("a-b"), "x").is_err());
        assert!(shm_file(None, "a/b").is_err());
        assert_eq!(region_name("vpp", "vpp-api"), Some("api"));
        assert_eq!(region_name("vpp", "other-api"), None);
    }
}
