//! The binary as a user meets it first: its help, and its errors for input
//! that cannot be used. (Building it here also lets the end-to-end suite use
//! the binary this test run built.)

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_amoskys-pipeline"))
}

#[test]
fn help_names_every_subcommand_and_replay_explains_log_files() {
    let out = bin().arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["replay", "validate", "sql", "serve", "export-training"] {
        assert!(text.contains(sub), "--help does not name {sub}:\n{text}");
    }
    let out = bin().args(["replay", "--help"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--syslog <FILE>"), "{text}");
}

#[test]
fn a_capture_that_does_not_exist_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("nowhere.pcap");
    let out = bin()
        .arg("replay")
        .arg(&missing)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--no-progress")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere.pcap"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
