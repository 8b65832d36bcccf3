//! The configuration manager's REST API as `iotctl project` and `iotctl home` use it: at the
//! address the running controller wrote in its state file (else `ccm.listen`), as an admin
//! when authentication is on; a refusal becomes an error with the API's reason.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config::Config;
use crate::runfile;
use crate::service::Login;

/// A client of the CCM's API.
pub struct Api {
    base: String,
    http: reqwest::Client,
    login: Option<Login>,
}

impl Api {
    pub fn new(cfg: &Config, login: Option<Login>) -> Api {
        let base = runfile::read_state(cfg)
            .and_then(|s| s.ccm)
            .unwrap_or_else(|| format!("http://{}", cfg.ccm.listen));
        Api {
            base,
            http: reqwest::Client::new(),
            login,
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(l) = &self.login {
            req = req.basic_auth(l.user(), Some(l.password()));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.with_context(|| {
            format!(
                "cannot reach the configuration manager at {}: is the controller running?",
                self.base
            )
        })?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = v["reason"].as_str().unwrap_or("no reason given");
            if status.as_u16() == 401 {
                bail!("{reason} (HTTP 401: pass --user NAME or IOTCTL_USER, with IOTCTL_PASSWORD)");
            }
            bail!("{reason} (HTTP {})", status.as_u16());
        }
        Ok(v)
    }
}
