//! [`CcmClient`]: the CCM's REST API over real HTTP, answering `(status, JSON body)`.

use reqwest::Method;
use serde_json::Value;

use crate::App;

/// A client of one controller's CCM, with the admin's credentials when auth is on.
#[derive(Debug, Clone)]
pub struct CcmClient {
    pub base: String,
    pub http: reqwest::Client,
    pub basic: Option<(String, String)>,
}

impl CcmClient {
    /// As the admin of `app` (when it runs with authentication).
    pub fn of(app: &App) -> CcmClient {
        CcmClient {
            base: app.ccm.clone(),
            http: reqwest::Client::new(),
            basic: app.admin().map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    /// Without credentials.
    pub fn anonymous(app: &App) -> CcmClient {
        CcmClient {
            basic: None,
            ..CcmClient::of(app)
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("CCM request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("CCM body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Like [`call`](Self::call), asserting a 2xx answer; returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// Features, a model, and returns nothing: `features` are `(name, direction, width)`.
    pub async fn model(&self, name: &str, features: &[(&str, &str, usize)]) {
        for (f, dir, width) in features {
            let params: Vec<Value> = (0..*width)
                .map(|_| serde_json::json!({"type": "float"}))
                .collect();
            self.ok(
                Method::PUT,
                &format!("/api/features/{f}"),
                Some(&serde_json::json!({"name": f, "direction": dir, "params": params})),
            )
            .await;
        }
        let names: Vec<&str> = features.iter().map(|f| f.0).collect();
        self.ok(
            Method::PUT,
            &format!("/api/models/{name}"),
            Some(&serde_json::json!({"name": name, "features": names})),
        )
        .await;
    }
}
