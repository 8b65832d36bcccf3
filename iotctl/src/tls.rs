//! `[tls]`: the certificate and key of every TLS listener (`broker.tls_listen`,
//! `broker.wss_listen`, `csm.tls`), their checks at load time (each listener needs them; the
//! files must be readable PEM and the key the certificate's), and what `start` hands the
//! broker and the CSM. Not here: reading PEM (`iot_broker::tls`), serving (the broker and
//! the CSM), making certificates (`gencert`).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use iot_broker::tls::ServerConfig;
use iot_broker::TlsFiles;
use iot_proto::wire::BrokerUrl;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// `[tls]`: PEM files; "" = none. `~` is the home directory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate, then any intermediate CA certificates.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

/// The files of `[tls]`, `~` expanded; `None` when neither is set.
pub fn files(cfg: &Config) -> Option<TlsFiles> {
    let t = &cfg.tls;
    (!t.cert_file.is_empty() || !t.key_file.is_empty()).then(|| {
        TlsFiles::new(
            iot_migrations::expand_home(&t.cert_file),
            iot_migrations::expand_home(&t.key_file),
        )
    })
}

/// The CSM's HTTPS configuration (HTTP/1.1) when `csm.tls` is on.
pub fn https(cfg: &Config) -> Result<Option<Arc<ServerConfig>>> {
    if !cfg.csm.tls {
        return Ok(None);
    }
    let files = files(cfg).context("`csm.tls` needs `tls.cert_file` and `tls.key_file`")?;
    Ok(Some(files.server_config(vec![b"http/1.1".to_vec()])?))
}

/// `url` (the plain listeners DAs are told) turned into the TLS one: `mqtts` and `wss`.
pub fn secure_url(url: BrokerUrl) -> BrokerUrl {
    BrokerUrl {
        scheme: "mqtts".into(),
        ws_scheme: "wss".into(),
        ..url
    }
}

/// The keys that ask for a TLS listener, set in `cfg`.
fn listeners(cfg: &Config) -> Vec<&'static str> {
    let b = &cfg.broker.embedded;
    let mut keys = Vec::new();
    if !b.tls_listen.trim().is_empty() {
        keys.push("broker.tls_listen");
    }
    if !b.wss_listen.trim().is_empty() {
        keys.push("broker.wss_listen");
    }
    if cfg.csm.tls {
        keys.push("csm.tls");
    }
    keys
}

/// Checks `[tls]` and the keys that use it: a TLS listener without both files, one file
/// without the other, files that cannot be used, `broker.advertise_tls` without a TLS
/// listener to advertise.
pub fn validate(cfg: &Config) -> Result<()> {
    let t = &cfg.tls;
    match (t.cert_file.is_empty(), t.key_file.is_empty()) {
        (false, true) => bail!("`tls.cert_file` is set but `tls.key_file` is not: set both"),
        (true, false) => bail!("`tls.key_file` is set but `tls.cert_file` is not: set both"),
        _ => {}
    }
    let users = listeners(cfg);
    match files(cfg) {
        None => {
            if let Some(key) = users.first() {
                bail!("`{key}` needs a certificate: set `tls.cert_file` and `tls.key_file` (PEM files; `iotctl gencert DIR` makes a pair to try it out)");
            }
        }
        Some(f) => f.check()?,
    }
    if cfg.broker.advertise_tls && cfg.broker.embedded.tls_listen.trim().is_empty() {
        bail!("`broker.advertise_tls` tells DAs the embedded broker's TLS listener, and `broker.tls_listen` is not set (behind a TLS proxy or with a TLS external broker, set `broker.scheme = \"mqtts\"` and `broker.advertise_port` instead)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        format!(
            "{}/../broker/tests/data/tls/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn with(toml: &str) -> Result<Config> {
        let cfg = Config::parse(toml, &[])?;
        cfg.validate().map(|()| cfg)
    }

    fn err(toml: &str) -> String {
        format!("{:#}", with(toml).unwrap_err())
    }

    #[test]
    fn listeners_need_good_files() {
        let good = format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            data("cert.pem"),
            data("key.pem")
        );
        let c = with(&format!(
            "{good}[broker]\ntls_listen = \"127.0.0.1:8883\"\nwss_listen = \"127.0.0.1:8884\"\nadvertise_tls = true\n[csm]\ntls = true\n"
        ))
        .unwrap();
        assert_eq!(c.broker.embedded.tls_listen, "127.0.0.1:8883");
        assert!(files(&c).is_some());

        for key in ["broker.tls_listen", "broker.wss_listen"] {
            let (section, k) = key.split_once('.').unwrap();
            let text = err(&format!("[{section}]\n{k} = \"127.0.0.1:1\"\n"));
            assert!(
                text.contains(&format!("`{key}` needs a certificate"))
                    && text.contains("tls.cert_file"),
                "{text}"
            );
        }
        let text = err("[csm]\ntls = true\n");
        assert!(text.contains("`csm.tls` needs a certificate"), "{text}");
        let text = err("[tls]\ncert_file = \"/x.pem\"\n");
        assert!(text.contains("`tls.key_file` is not"), "{text}");
        let text = err("[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/k.pem\"\n");
        assert!(
            text.contains("cannot read the TLS certificate file /nonexistent/c.pem"),
            "{text}"
        );
        let text = err(&format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            data("cert.pem"),
            data("other-key.pem")
        ));
        assert!(text.contains("does not belong"), "{text}");
        let text = err(&format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            data("key.pem"),
            data("key.pem")
        ));
        assert!(text.contains("no PEM certificate"), "{text}");
        let text = err(&format!("{good}[broker]\nadvertise_tls = true\n"));
        assert!(text.contains("`broker.tls_listen` is not set"), "{text}");
        let text = err("[broker]\ntls_listen = \"8883\"\n");
        assert!(text.contains("broker.tls_listen"), "{text}");
    }

    #[test]
    fn home_is_expanded() {
        let c = Config::parse(
            "[tls]\ncert_file = \"~/c.pem\"\nkey_file = \"~/k.pem\"\n",
            &[],
        )
        .unwrap();
        let f = files(&c).unwrap();
        assert!(!f.cert_file.starts_with("~"), "{}", f.cert_file.display());
        assert!(f.key_file.ends_with("k.pem"));
    }
}
