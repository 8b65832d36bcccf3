//! One key request, start to end, without a network: a message on `iottalk/km/req/<CLIENT>`
//! and the state (the store, the guard) in; the reply for `iottalk/km/res/<CLIENT>`, the audit
//! record and whether panic mode must seal the store out. The MQTT loop that feeds it follows.

use std::time::Instant;

use serde_json::Value;

use super::crypto;
use super::request::{self, ClientView, Code, Guard};
use super::store::KeyStore;

/// What one request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The reply body (`None`: the payload was not a JSON object, no reply).
    pub reply: Option<Value>,
    /// `ok` or the error code, for the audit trail and the metrics.
    pub result: &'static str,
    /// The key asked for (empty when the request did not parse).
    pub key: String,
    /// Panic mode tripped: the caller seals the store at once.
    pub panic: bool,
}

/// Answers the request `payload` on `topic`. `None` when the topic is not a request topic.
pub fn answer(
    topic: &str,
    payload: &[u8],
    store: &KeyStore,
    guard: &mut Guard,
    now_unix: i64,
    now: Instant,
) -> Option<Outcome> {
    let client = iot_proto::km::client_of_req(topic)?;
    let refused = |nonce: Option<&str>, code: Code, key: String, panic: bool| Outcome {
        reply: Some(request::failure(nonce, code)),
        result: code.as_str(),
        key,
        panic,
    };
    let req = match request::parse_or_ignore(payload) {
        None => {
            return Some(Outcome {
                reply: None,
                result: "ignored",
                key: String::new(),
                panic: false,
            })
        }
        Some(Err(nonce)) => {
            return Some(refused(
                nonce.as_deref(),
                Code::BadRequest,
                String::new(),
                false,
            ))
        }
        Some(Ok(r)) => r,
    };
    let secret = store.client_secret(client);
    let view = secret.as_ref().map(|s| ClientView {
        secret: s,
        may_read: store.may_read(client, &req.key),
    });
    let checked = guard.check(client, &req, view, store.is_sealed(), now_unix, now);
    let nonce = Some(req.nonce.as_str());
    if let Err(code) = checked {
        let panic = code == Code::Denied && guard.denied(now);
        return Some(refused(nonce, code, req.key.clone(), panic));
    }
    // Every check passed, so the client and the key exist and the store is unsealed.
    let sealed_reply = || {
        let s = secret.as_ref()?;
        let value = store.value(&req.key).ok()?;
        crypto::encrypt_reply(s, client, &req.key, &req.nonce, &value).ok()
    };
    Some(match sealed_reply() {
        Some((iv, value)) => Outcome {
            reply: Some(request::success(&req.nonce, &iv, &value)),
            result: "ok",
            key: req.key.clone(),
            panic: false,
        },
        None => refused(nonce, Code::Sealed, req.key.clone(), false),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::keys::crypto::KdfParams;
    use crate::keys::request::Limits;

    const NOW: i64 = 1_796_290_000;

    fn setup() -> (KeyStore, Guard) {
        let mut ks = KeyStore::default();
        ks.init(b"unseal", KdfParams::default(), 1.0).unwrap();
        ks.put("db", b"hunter2", 1.0).unwrap();
        ks.put("other", b"not yours", 1.0).unwrap();
        let keys: BTreeSet<String> = ["db".to_owned()].into();
        ks.add_client("backup", "mid-1", keys, "pw", 1.0).unwrap();
        let guard = Guard::new(Limits {
            clock_skew: Duration::from_secs(90),
            rate: "60/60s".parse().unwrap(),
            panic_after: 2,
            panic_window: Duration::from_secs(60),
        });
        (ks, guard)
    }

    fn body(key: &str, nonce: &str, mid: &str) -> Vec<u8> {
        let s = crypto::client_secret("pw", "backup", mid);
        let mac = crypto::request_mac(&s, "backup", key, NOW, nonce);
        serde_json::json!({"key": key, "ts": NOW, "nonce": nonce, "mac": mac})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_request_gets_the_value_only_its_client_can_read() {
        let (ks, mut g) = setup();
        let n = "0123456789abcdef0123456789abcdef";
        let t = "iottalk/km/req/backup";
        let o = answer(t, &body("db", n, "mid-1"), &ks, &mut g, NOW, Instant::now()).unwrap();
        assert_eq!(o.result, "ok");
        let r = o.reply.unwrap();
        assert_eq!(
            (r["nonce"].as_str(), r["ok"].as_bool()),
            (Some(n), Some(true))
        );
        assert!(!r.to_string().contains("hunter2"));
        let s = crypto::client_secret("pw", "backup", "mid-1");
        let v = crypto::decrypt_reply(
            &s,
            "backup",
            "db",
            n,
            r["iv"].as_str().unwrap(),
            r["value"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(v.as_slice(), b"hunter2");
    }

    #[test]
    fn refusals_say_one_code_and_denials_trip_panic_mode() {
        let (mut ks, mut g) = setup();
        let t = "iottalk/km/req/backup";
        let now = Instant::now();
        let code = |o: Outcome| o.reply.unwrap()["error"].as_str().unwrap().to_owned();
        let n = |i: u8| format!("{i:032x}");
        assert_eq!(
            answer("iottalk/km/res/backup", b"{}", &ks, &mut g, NOW, now),
            None
        );
        let ignored = answer(t, b"garbage", &ks, &mut g, NOW, now).unwrap();
        assert_eq!((ignored.reply, ignored.result), (None, "ignored"));
        assert_eq!(
            code(answer(t, b"{\"nonce\":\"x\"}", &ks, &mut g, NOW, now).unwrap()),
            "bad_request"
        );
        // A forbidden key and a wrong machine: the same `denied`; the second trips panic mode.
        let first = answer(t, &body("other", &n(1), "mid-1"), &ks, &mut g, NOW, now).unwrap();
        assert_eq!((code(first.clone()), first.panic), ("denied".into(), false));
        let second = answer(
            t,
            &body("db", &n(2), "stolen-elsewhere"),
            &ks,
            &mut g,
            NOW,
            now,
        )
        .unwrap();
        assert_eq!(
            (code(second.clone()), second.panic),
            ("denied".into(), true)
        );
        ks.seal();
        let sealed = answer(t, &body("db", &n(3), "mid-1"), &ks, &mut g, NOW, now).unwrap();
        assert_eq!(code(sealed), "sealed");
    }
}
