//! Failpoints: named places where a test can make a process stop dead.
//!
//! Crash-safety tests need a process to die at an exact instruction (holding the region lock,
//! half-way through a heap split, before a region is ready...). A test starts the victim with
//! `SHMKIT_FAILPOINTS=name[,name...]`; when the victim reaches a listed point it prints
//! `shmkit failpoint <name> reached` on stderr and stops there, until the test (having read
//! that line) kills it. Without the variable, `hit` is a single cached-flag check.
//!
//! A point listed as `panic:<name>` panics there instead: the tests of the bindings' panic
//! shield (`py/shield.rs`) use it to prove that a panic anywhere under a binding reaches
//! Python as `shmkit.InternalError`.
//!
//! Failpoints exist only in builds with the cargo feature `failpoints`, which the test build
//! turns on (the editable install, `pip install -e .`, see `tools/build_backend.py`); release
//! wheels are built without it, so there `hit` is an empty inline function and no
//! environment variable can stall a production process. `shmkit._native.build_features()`
//! tells which build is loaded.

/// Whether this build has failpoints (the cargo feature `failpoints`).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Without the `failpoints` feature: nothing, whatever the environment says.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(feature = "failpoints")]
use std::sync::OnceLock;

#[cfg(feature = "failpoints")]

static POINTS: OnceLock<Vec<String>> = OnceLock::new();

#[cfg(feature = "failpoints")]
fn points() -> &'static [String] {
    POINTS.get_or_init(|| {
        std::env::var("SHMKIT_FAILPOINTS")
            .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    })
}

/// Stop here forever if the failpoint `name` is enabled.
#[cfg(feature = "failpoints")]
#[inline]
pub fn hit(name: &str) {
    let pts = points();
    if !pts.is_empty() {
        act(pts, name);
    }
}

#[cfg(feature = "failpoints")]
#[cold]
fn act(pts: &[String], name: &str) {
    for p in pts {
        if p == name {
            stall(name);
        }
        if p.strip_prefix("panic:") == Some(name) {
            panic!("shmkit failpoint {name}: deliberate panic");
        }
    }
}

#[cfg(feature = "failpoints")]
#[cold]
fn stall(name: &str) -> ! {
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = writeln!(err, "shmkit failpoint {name} reached");
    let _ = err.flush();
    loop {
        std::thread::park();
    }
}

#[cfg(all(test, not(feature = "failpoints")))]
mod tests {
    /// Without the feature, a listed failpoint does nothing (it would panic here otherwise).
    #[test]
    fn compiled_out_without_the_feature() {
        const { assert!(!super::ENABLED) };
        std::env::set_var("SHMKIT_FAILPOINTS", "panic:test.point");
        super::hit("test.point");
        std::env::remove_var("SHMKIT_FAILPOINTS");
    }
}
