//! Certificates for the TLS tests, made by the real `iotctl gencert`, the configuration that
//! turns every TLS listener on with them, and an HTTP client that trusts their CA.

use std::path::{Path, PathBuf};

use crate::iotctl_bin;

/// `iotctl gencert DIR` output in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct Certs {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// What gencert printed.
    pub stdout: String,
}

/// Runs `iotctl gencert DIR` (no configuration needed) and checks it succeeded.
pub fn gencert() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(iotctl_bin())
        .arg("gencert")
        .arg(dir.path())
        .output()
        .expect("run iotctl gencert");
    assert!(out.status.success(), "iotctl gencert: {out:?}");
    let p = dir.path().canonicalize().expect("gencert dir");
    Certs {
        ca: p.join("ca.pem"),
        cert: p.join("server.pem"),
        key: p.join("server.key"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        _dir: dir,
    }
}

impl Certs {
    /// `[tls]` with these files, the broker's TLS and WSS listeners on free ports, HTTPS on.
    pub fn toml(&self) -> String {
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n[broker]\ntls_listen = \"127.0.0.1:0\"\nwss_listen = \"127.0.0.1:0\"\n[csm]\ntls = true\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A reqwest client; with `ca`, it trusts that CA (and nothing else) for HTTPS.
pub fn http_client(ca: Option<&Path>) -> reqwest::Client {
    let Some(ca) = ca else {
        return reqwest::Client::new();
    };
    let pem = std::fs::read(ca).expect("read CA");
    let cert = reqwest::Certificate::from_pem(&pem).expect("CA PEM");
    reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .expect("https client")
}
