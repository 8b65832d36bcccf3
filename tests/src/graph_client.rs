//! [`GraphClient`], a graph-API client with the assertions tests make on replies.

use iot_proto::wire::graph_api::{digest, GraphOk, GraphOp};
use serde_json::{json, Value};

use crate::{new_id, App, WAIT};

/// A graph API client for one graph: the shared [`iot_client::GraphClient`] under a fresh
/// client name, with the assertions tests make on replies.
#[derive(Debug)]
pub struct GraphClient {
    pub api: iot_client::GraphClient,
    pub gid: String,
}

impl GraphClient {
    /// A client of a fresh name for graph `gid` (not attached yet).
    pub async fn new(app: &App, gid: &str) -> GraphClient {
        let (host, port) = app.mqtt.rsplit_once(':').expect("host:port");
        let mut opts = iot_client::GraphClientOptions::new(
            host,
            port.parse().expect("port"),
            format!("t{}", &new_id()[..8]),
        );
        opts.credentials = app.admin().map(|(u, p)| (u.to_owned(), p.to_owned()));
        opts.reply_timeout = WAIT;
        opts.connect_timeout = WAIT;
        let api = iot_client::GraphClient::connect(opts)
            .await
            .expect("graph API client connects");
        GraphClient {
            api,
            gid: gid.to_owned(),
        }
    }

    /// A fresh graph, attached.
    pub async fn attached(app: &App) -> GraphClient {
        let mut g = Self::new(app, &new_id()).await;
        g.ok(json!({"op": "attach"})).await;
        g
    }

    /// The `<client>` level of this client's topics.
    pub fn client(&self) -> &str {
        self.api.name()
    }

    /// Sends a request and returns its reply (any state).
    pub async fn send(&mut self, req: Value) -> Value {
        let Value::Object(body) = req.clone() else {
            panic!("a request is a JSON object: {req}");
        };
        let reply = self
            .api
            .send(&self.gid, body)
            .await
            .unwrap_or_else(|e| panic!("request {req}: {e}"));
        Value::Object(reply.fields)
    }

    /// Sends a request that must succeed.
    pub async fn ok(&mut self, req: Value) -> Value {
        let r = self.send(req.clone()).await;
        assert_eq!(r["state"], "ok", "request {req} failed: {r}");
        r
    }

    /// Sends a request that must fail; returns the reason.
    pub async fn err(&mut self, req: Value) -> String {
        let r = self.send(req.clone()).await;
        assert_eq!(r["state"], "error", "request {req} should fail: {r}");
        r["reason"].as_str().unwrap_or_default().to_owned()
    }

    /// Adds functions (digests computed by the client).
    pub async fn add_funcs(&mut self, codes: &[&str]) {
        let op = GraphOp::add_funcs(codes.iter().copied());
        let ok = self
            .api
            .request(&self.gid, op)
            .await
            .unwrap_or_else(|e| panic!("add_funcs: {e}"));
        let digests: Vec<String> = codes.iter().map(|c| digest(c)).collect();
        assert_eq!(ok, GraphOk::Digests(digests));
    }

    /// Links a DA's feature (`side` is `idf` or `odf`) with no function.
    pub async fn link(&mut self, da: &str, side: &str, feature: &str) {
        let mut body = json!({"op": "add_link", "da_id": da, "func": null});
        body[side] = json!(feature);
        self.ok(body).await;
    }
}
