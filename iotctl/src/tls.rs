//! What `start` hands the broker and the CSM for TLS: the CSM's HTTPS configuration and the
//! URL DAs are told with `broker.advertise_tls`; and the tests of `[tls]`'s checks. Not here:
//! `[tls]` and its checks at load time (`config`), reading PEM (`iot_broker::tls`), serving
//! (the broker and the CSM), making certificates (`gencert`).

use std::sync::Arc;

use anyhow::{Context, Result};
use iot_broker::tls::ServerConfig;
use iot_proto::wire::BrokerUrl;

use crate::config::Config;

/// The CSM's HTTPS configuration (HTTP/1.1) when `csm.tls` is on.
pub fn https(cfg: &Config) -> Result<Option<Arc<ServerConfig>>> {
    if !cfg.csm.tls {
        return Ok(None);
    }
    let files = cfg
        .tls_files()
        .context("`csm.tls` needs `tls.cert_file` and `tls.key_file`")?;
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
        assert!(c.tls_files().is_some());

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
        let f = c.tls_files().unwrap();
        assert!(!f.cert_file.starts_with("~"), "{}", f.cert_file.display());
        assert!(f.key_file.ends_with("k.pem"));
    }
}
