//! Counting a child process's instructions with valgrind's callgrind.

use std::path::Path;
use std::process::Command;

/// `true` if `valgrind` can be run.
pub fn available() -> bool {
    Command::new("valgrind").arg("--version").output().is_ok()
}

/// Instructions callgrind counted while `exe` ran with `args` (start-up included). With
/// `profile`, callgrind's profile is written there (read it with `callgrind_annotate`).
pub fn count(exe: &Path, args: &[&str], profile: Option<&Path>) -> u64 {
    count_with(exe, &[], args, profile)
}

/// [`count`] with more options for valgrind (say, `--toggle-collect=FUNCTION`).
pub fn count_with(exe: &Path, options: &[&str], args: &[&str], profile: Option<&Path>) -> u64 {
    let out = profile.map_or_else(
        || "--callgrind-out-file=/dev/null".to_owned(),
        |path| format!("--callgrind-out-file={}", path.display()),
    );
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            &out,
            "--cache-sim=no",
            "--branch-sim=no",
        ])
        .args(options)
        .arg(exe)
        .args(args)
        .output()
        .expect("valgrind runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "valgrind failed: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output: {stderr}"))
}
