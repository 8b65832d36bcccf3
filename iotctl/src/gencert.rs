//! `iotctl gencert DIR`: a certificate authority made for this controller (`ca.pem`, its key
//! thrown away) and a server certificate signed by it (`server.pem`, `server.key`, mode
//! 0600) for localhost, 127.0.0.1, ::1 and the `--host` names, to try TLS out; then the
//! configuration lines to paste. Not for production: a real CA's certificate is better (see
//! docs/security.md, TLS). Not here: reading or serving certificates (`tls`, the servers).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The names every server certificate covers.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// How long the CA is valid.
const CA_DAYS: i64 = 10 * 365;
/// How long the server certificate is valid (the most browsers accept: 825 days).
const SERVER_DAYS: i64 = 825;

/// The files `gencert` writes into its directory.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "server.pem";
pub const KEY_FILE: &str = "server.key";

/// Writes the CA and the server certificate and key into `dir` (created if needed); refuses
/// to overwrite them unless `force`. Returns the names the certificate covers.
pub fn run(dir: &Path, hosts: &[String], force: bool) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    if !force {
        for f in [CA_FILE, CERT_FILE, KEY_FILE] {
            if dir.join(f).exists() {
                bail!(
                    "{} exists; pass --force to overwrite it",
                    dir.join(f).display()
                );
            }
        }
    }
    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|s| (*s).to_owned()).collect();
    for h in hosts {
        let h = h.trim().trim_start_matches('[').trim_end_matches(']');
        if h.is_empty() {
            bail!("--host needs a DNS name or an IP address");
        }
        if !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    let now = OffsetDateTime::now_utc();

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "iotctl gencert CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(CA_DAYS);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    // IP addresses become IP SANs, the rest DNS names.
    let mut server = CertificateParams::new(names.clone())?;
    server.distinguished_name.push(DnType::CommonName, "iotctl");
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now - Duration::days(1);
    server.not_after = now + Duration::days(SERVER_DAYS);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    write(&dir.join(CA_FILE), ca_cert.pem().as_bytes(), 0o644)?;
    write(&dir.join(CERT_FILE), server_cert.pem().as_bytes(), 0o644)?;
    write(
        &dir.join(KEY_FILE),
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    print_config(&dir, &names);
    Ok(names)
}

/// Writes `bytes` to `path` with `mode` (also when the file existed with another mode).
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_config(dir: &Path, names: &[String]) {
    let p = |f: &str| -> PathBuf { dir.join(f) };
    println!(
        "wrote {} (the CA: give it to clients), {} and {} (the server certificate and key, for {})",
        p(CA_FILE).display(),
        p(CERT_FILE).display(),
        p(KEY_FILE).display(),
        names.join(", ")
    );
    println!(
        "The CA's key was not kept: run gencert again (and hand out the new ca.pem) to add names."
    );
    println!("Add to the configuration (docs/security.md, TLS):\n");
    println!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        p(CERT_FILE).display(),
        p(KEY_FILE).display()
    );
    println!("[broker]\ntls_listen = \"127.0.0.1:8883\"\nwss_listen = \"127.0.0.1:8884\"\n");
    println!("[csm]\ntls = true");
}

#[cfg(test)]
mod tests {
    use super::*;
    use iot_broker::TlsFiles;

    #[test]
    fn writes_a_usable_pair_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let names = run(&dir, &["iot.example".into(), "[10.0.0.7]".into()], false).unwrap();
        assert_eq!(
            names,
            ["localhost", "127.0.0.1", "::1", "iot.example", "10.0.0.7"]
        );
        TlsFiles::new(dir.join(CERT_FILE), dir.join(KEY_FILE))
            .check()
            .unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = run(&dir, &[], false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        run(&dir, &[], true).unwrap();
    }
}
