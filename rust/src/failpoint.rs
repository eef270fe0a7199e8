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

use std::sync::OnceLock;

static POINTS: OnceLock<Vec<String>> = OnceLock::new();

fn points() -> &'static [String] {
    POINTS.get_or_init(|| {
        std::env::var("SHMKIT_FAILPOINTS")
            .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    })
}

/// Stop here forever if the failpoint `name` is enabled.
#[inline]
pub fn hit(name: &str) {
    let pts = points();
    if !pts.is_empty() {
        act(pts, name);
    }
}

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
