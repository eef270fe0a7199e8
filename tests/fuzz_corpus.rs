//! Every file of `fuzz/corpus/<target>/` (the seeds and every input a fuzzer ever crashed
//! on) fed to the same harness the libFuzzer target calls: the fuzz findings stay fixed on
//! stable Rust, in every test run (`make fuzz` runs the fuzzers themselves).

use std::path::PathBuf;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        // A panic names the file that caused it.
        eprintln!("replaying {}", f.display());
        harness(&data);
    }
}

#[test]
fn apicodec() {
    replay("apicodec", _native::fuzzing::apicodec);
}

#[test]
fn apisock() {
    replay("apisock", _native::fuzzing::apisock);
}

#[test]
fn memif_control() {
    replay("memif_control", _native::fuzzing::memif_control);
}

#[test]
fn memif_rings() {
    replay("memif_rings", _native::fuzzing::memif_rings);
}

#[test]
fn msgq() {
    replay("msgq", _native::fuzzing::msgq);
}

#[test]
fn msgring() {
    replay("msgring", _native::fuzzing::msgring);
}

#[test]
fn netmap() {
    replay("netmap", _native::fuzzing::netmap);
}

#[test]
fn vale() {
    replay("vale", _native::fuzzing::vale);
}

#[test]
fn objects() {
    replay("objects", _native::fuzzing::objects);
}

#[test]
fn queue() {
    replay("queue", _native::fuzzing::queue);
}

#[test]
fn region() {
    replay("region", _native::fuzzing::region);
}
