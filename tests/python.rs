//! The Python client's tests (clients/python/tests/), run by `cargo test`
//! against the `broker` binary cargo just built, so the one test command
//! covers both languages.
//!
//! A virtual environment under target/ gets the package with its test
//! extra (`pip install ./clients/python[test]`, msgpack and pytest from
//! PyPI) the first time; later runs reuse it, and pytest imports the
//! package from the source tree, so an edit needs no reinstall. Where
//! `python3` is absent the test prints that it is skipped and passes; any
//! other failure (no venv module, pip, pytest) fails it. pytest runs with
//! `-rs`, so a test it skips (only the TLS ones, where no `openssl` command
//! can make a certificate) is named with its reason in the output.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python3_present() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

/// The venv's python, with the package's dependencies installed.
fn venv() -> PathBuf {
    let dir = root().join("target").join("pyvenv");
    let python = dir.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import msgpack, pytest"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if python.exists() && ready(&python) {
        return python;
    }
    run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir),
        "python3 -m venv target/pyvenv",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("{}[test]", root().join("clients/python").display())),
        "pip install ./clients/python[test]",
    );
    assert!(
        ready(&python),
        "msgpack and pytest missing after pip install"
    );
    python
}

#[test]
fn python_client_tests_pass_against_the_broker() {
    if !python3_present() {
        println!("SKIPPED: python3 is not installed, so the Python client's tests did not run");
        return;
    }
    let python = venv();
    let package = root().join("clients/python");
    run(
        Command::new(python)
            .args([
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                "tests",
            ])
            .current_dir(&package)
            .env("COURIER_BROKER", env!("CARGO_BIN_EXE_broker"))
            .env("PYTHONPATH", &package)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "pytest clients/python/tests",
    );
}
