//! `ferrofab-nvmeof serve` as an operator runs it: bad files are refused
//! with a message naming what is wrong, a good one prints the ready line,
//! and SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn serve(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrofab-nvmeof"));
    c.args(["serve", "--no-watch", "--config"]).arg(config);
    c
}

fn refused_with(text: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("target.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = serve(&cfg).output().unwrap();
    assert!(
        !out.status.success(),
        "a bad file must not start the target"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(expected),
        "stderr should mention {expected:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    refused_with("[[listener]]\naddress = \"not an address\"\n", "address");
    refused_with("[[subsystem]]\nnqn = \"nqn.bad\"\n", "nqn.bad");
    refused_with("[target]\nqueue_depth = 1\n", "queue_depth");
    refused_with("[target]\npoll_mode = \"turbo\"\n", "turbo");
    refused_with(
        "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:x\"\n[[subsystem.namespace]]\nnsid = 1\npath = \"/x\"\nsize = \"12 parsecs\"\n",
        "parsecs",
    );
    refused_with(
        "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:x\"\nallowed_hostz = []\n",
        "allowed_hostz",
    );
}

#[test]
fn missing_file_is_named() {
    let out = serve(std::path::Path::new("/nonexistent/target.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/target.toml"));
}

#[test]
fn ready_line_then_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("target.toml");
    let img = dir.path().join("ns.img");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:cli\"\n\
             [[subsystem.namespace]]\nnsid = 1\npath = \"{}\"\nsize = \"8MiB\"\n",
            img.display()
        ),
    )
    .unwrap();
    let mut child = serve(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("ready"), "{line}");
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        8 << 20,
        "sparse file created"
    );
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}
