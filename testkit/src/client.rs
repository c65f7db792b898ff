//! The `ferrofab` CLI's `client.toml`.

use std::path::{Path, PathBuf};

/// Writes `path`, a client.toml for the controller on loopback `port`
/// authenticating as `pki/<stem>.crt` (the CA is `pki/ca.crt`). `pki` is
/// written as given: relative paths resolve against the file's folder.
pub fn write_client_toml(path: &Path, port: &str, pki: &Path, stem: &str) -> PathBuf {
    let p = pki.display();
    let text = format!(
        "endpoint = \"https://localhost:{port}\"\n[tls]\nca = \"{p}/ca.crt\"\n\
         cert = \"{p}/{stem}.crt\"\nkey = \"{p}/{stem}.key\"\n"
    );
    std::fs::write(path, text).expect("write client.toml");
    path.to_path_buf()
}
