//! A client in Python, written from docs/keymanager.md alone (`km_client.py`: hashlib,
//! hmac, the `cryptography` package, paho-mqtt): the byte-exact contract checked from
//! outside Rust, against the running controller and against the Rust formulas.

use iot_tests::CcmClient;
use tokio::process::Command;

use super::*;

async fn py(args: &[&str]) -> Value {
    let script = iot_tests::workspace().join("tests/tests/keys/km_client.py");
    let out = tokio::time::timeout(
        iot_tests::WAIT * 2,
        Command::new(iot_tests::python())
            .arg(script)
            .args(args)
            .output(),
    )
    .await
    .expect("the Python client ends in time")
    .expect("run python");
    assert!(
        out.status.success(),
        "km_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_python_client_from_the_document_gets_the_value_and_the_same_refusals() {
    // The known answer: Python's S, MAC and reply equal the Rust formulas'.
    let ka = py(&["known-answer"]).await;
    let s = km::client_secret(
        "correct horse",
        "backup",
        "0123456789abcdef0123456789abcdef",
    );
    assert_eq!(ka["s"], hex_of(s.as_ref()));
    let nonce = "00112233445566778899aabbccddeeff";
    assert_eq!(
        ka["mac"],
        km::request_mac(&s, "backup", "db-password", 1_796_290_000, nonce)
    );
    let iv: [u8; 12] = core::array::from_fn(|i| i as u8);
    let (iv_hex, value) =
        km::encrypt_reply(&s, "backup", "db-password", nonce, b"s3cret value", iv).unwrap();
    assert_eq!(
        (ka["iv"].clone(), ka["value"].clone()),
        (json!(iv_hex), json!(value))
    );

    let app = start("", false).await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let got = py(&[host, port, CLIENT, CLIENT_PW, MID, "db"]).await;
    assert_eq!(got, json!({"ok": true, "value": VALUE}));
    let other_machine = py(&[host, port, CLIENT, CLIENT_PW, "not-this-machine", "db"]).await;
    assert_eq!(other_machine, json!({"ok": false, "error": "denied"}));
    let forbidden = py(&[host, port, CLIENT, CLIENT_PW, MID, "other"]).await;
    assert_eq!(forbidden, json!({"ok": false, "error": "denied"}));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
