//! The TP-Link smart plug and bulb local protocol, as bytes: a request is the JSON text
//! encrypted with the XOR autokey cipher (the key starts at 171; each output byte becomes the
//! next key) behind a 4-byte big-endian length; the reply comes back the same way. Success is
//! `"err_code": 0` in the decrypted reply. Pure functions: the network side is elsewhere.

use serde_json::{json, Value};

use super::command::Command;

/// The cipher's first key.
const FIRST_KEY: u8 = 171;

/// Largest reply accepted, in bytes (a device's reply is a few hundred bytes).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Encrypts `plain` with the XOR autokey cipher.
pub fn encrypt(plain: &[u8]) -> Vec<u8> {
    let mut key = FIRST_KEY;
    plain
        .iter()
        .map(|b| {
            key ^= b;
            key
        })
        .collect()
}

/// Decrypts what [`encrypt`] produced.
pub fn decrypt(cipher: &[u8]) -> Vec<u8> {
    let mut key = FIRST_KEY;
    cipher
        .iter()
        .map(|&c| {
            let b = key ^ c;
            key = c;
            b
        })
        .collect()
}

/// One request on the wire: the length, then the encrypted JSON.
pub fn frame(request: &Value) -> Vec<u8> {
    let body = encrypt(request.to_string().as_bytes());
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The request a command becomes for a plug or a bulb.
pub fn request(kind: Kind, cmd: Command) -> Value {
    match kind {
        Kind::Plug => json!({"system": {"set_relay_state": {"state": u8::from(cmd.is_on())}}}),
        Kind::Bulb => {
            let mut state = json!({"on_off": u8::from(cmd.is_on())});
            if cmd.is_on() {
                state["brightness"] = json!(cmd.brightness);
            }
            json!({"smartlife.iot.smartbulb.lightingservice": {"transition_light_state": state}})
        }
    }
}

/// Plug or bulb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plug,
    Bulb,
}

/// Whether a decrypted reply says success: every `err_code` in it is 0, and there is one.
/// `Err` is the reply's `detail` (`err_code 1`, `reply is not JSON`, ...).
pub fn check_reply(plain: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(plain).map_err(|_| "reply is not JSON".to_owned())?;
    let mut codes = Vec::new();
    collect_codes(&v, &mut codes);
    match codes.iter().find(|c| **c != 0) {
        Some(c) => Err(format!("err_code {c}")),
        None if codes.is_empty() => Err("reply has no err_code".into()),
        None => Ok(()),
    }
}

fn collect_codes(v: &Value, out: &mut Vec<i64>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "err_code" {
                    out.push(x.as_i64().unwrap_or(-1));
                } else {
                    collect_codes(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_codes(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cipher_matches_the_published_example_and_round_trips() {
        // `{"` encrypted: 171^0x7b = 0xd0, 0xd0^0x22 = 0xf2.
        assert_eq!(encrypt(b"{\""), vec![0xd0, 0xf2]);
        let req = request(Kind::Plug, Command::ON);
        let text = req.to_string();
        assert_eq!(decrypt(&encrypt(text.as_bytes())), text.as_bytes());
        let f = frame(&req);
        assert_eq!(
            u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize,
            f.len() - 4
        );
        assert_eq!(decrypt(&f[4..]), text.as_bytes());
    }

    #[test]
    fn requests_for_plugs_and_bulbs() {
        let dim = Command::parse("dim:40").unwrap();
        assert_eq!(
            request(Kind::Plug, dim),
            json!({"system": {"set_relay_state": {"state": 1}}})
        );
        assert_eq!(
            request(Kind::Bulb, dim),
            json!({"smartlife.iot.smartbulb.lightingservice":
                {"transition_light_state": {"on_off": 1, "brightness": 40}}})
        );
        assert_eq!(
            request(Kind::Bulb, Command::OFF),
            json!({"smartlife.iot.smartbulb.lightingservice":
                {"transition_light_state": {"on_off": 0}}})
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            check_reply(br#"{"system":{"set_relay_state":{"err_code":0}}}"#),
            Ok(())
        );
        assert_eq!(
            check_reply(br#"{"system":{"set_relay_state":{"err_code":1}}}"#),
            Err("err_code 1".into())
        );
        assert!(check_reply(b"{}").is_err());
        assert!(check_reply(b"\xff").is_err());
    }
}
