//! Replies of the device and graph APIs that do not fit the broker's payload limit
//! (`broker.max_payload_bytes`): a list-like reply is split into pages ([`paginate`], read
//! back with [`Pages`]); anything else is answered with an error that says so
//! ([`too_large_reply`]). Not here: when to apply them (the CSM decides, it knows the limit).
//!
//! A reply that fits is sent as one message without `page` fields, exactly as IoTtalk v2
//! clients expect. A paged reply is `pages` messages, each the request's echoed fields plus
//! `"state": "ok"`, `"page": k` (1-based), `"pages": n` and a part of the list; every item is
//! in exactly one page, in order.

use serde_json::{Map, Value};

/// A reply, or one of its items, larger than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reply too large ({bytes} bytes > broker.max_payload_bytes {limit})")]
pub struct TooLarge {
    pub bytes: usize,
    pub limit: usize,
}

/// Bytes of `v` serialized as JSON (as it is published), counted without building it.
pub fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Cannot fail for JSON values and maps (string keys, a writer that never fails).
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// `head` (echoed fields and `state`) plus `key: {items}`: one reply when it fits in `limit`
/// bytes, else pages of it. Fails when a single item does not fit in a page by itself; the
/// error counts the bytes of that item's page.
pub fn paginate(
    head: &Map<String, Value>,
    key: &str,
    items: Map<String, Value>,
    limit: usize,
) -> Result<Vec<Value>, TooLarge> {
    let whole = with_list(head, key, items.clone(), None);
    let whole_len = json_len(&whole);
    if whole_len <= limit {
        return Ok(vec![whole]);
    }
    // A page with an empty list and the largest page numbers it can have: what every page
    // costs besides its items.
    let n_max = items.len().max(1);
    let base = json_len(&with_list(head, key, Map::new(), Some((n_max, n_max))));
    let mut pages: Vec<Map<String, Value>> = Vec::new();
    let mut current = Map::new();
    let mut used = base;
    for (k, v) in items {
        // `"k":v` plus a separating comma.
        let cost = json_len(&Value::String(k.clone())) + 1 + json_len(&v) + 1;
        if base + cost > limit {
            return Err(TooLarge {
                bytes: base + cost,
                limit,
            });
        }
        if used + cost > limit && !current.is_empty() {
            pages.push(std::mem::take(&mut current));
            used = base;
        }
        used += cost;
        current.insert(k, v);
    }
    if !current.is_empty() || pages.is_empty() {
        pages.push(current);
    }
    let n = pages.len();
    Ok(pages
        .into_iter()
        .enumerate()
        .map(|(i, part)| with_list(head, key, part, Some((i + 1, n))))
        .collect())
}

fn with_list(
    head: &Map<String, Value>,
    key: &str,
    items: Map<String, Value>,
    page: Option<(usize, usize)>,
) -> Value {
    let mut body = head.clone();
    if let Some((k, n)) = page {
        body.insert("page".into(), k.into());
        body.insert("pages".into(), n.into());
    }
    body.insert(key.into(), Value::Object(items));
    Value::Object(body)
}

/// The error reply that replaces `body` (a reply of `bytes` bytes) when it does not fit in
/// `limit`: its fields with `"state": "error"` and `reason` (`reason` names the limit), the
/// largest fields left out until it fits (`op` last, so the caller can still tell which
/// request failed, and small fields such as a `nonce` stay).
pub fn too_large_reply(body: &Value, bytes: usize, limit: usize, reason: &str) -> Value {
    let mut fields = match body {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    // An error reply keeps its own reason first (cut short: it may quote the request).
    let was_error = fields.get("state").and_then(Value::as_str) == Some("error");
    let earlier = fields
        .get("reason")
        .and_then(Value::as_str)
        .filter(|_| was_error)
        .map(|r| clip(r, MAX_KEPT_REASON_BYTES.min(limit / 4)));
    for k in ["state", "reason", "page", "pages"] {
        fields.remove(k);
    }
    let why = TooLarge { bytes, limit };
    let mut text = match earlier {
        Some(r) => format!("{r} ({why}: large fields left out)"),
        None => why.to_string(),
    };
    if !reason.is_empty() {
        text = format!("{text}: {reason}");
    }
    let finish = |fields: &Map<String, Value>| {
        let mut b = fields.clone();
        b.insert("state".into(), "error".into());
        b.insert("reason".into(), text.clone().into());
        Value::Object(b)
    };
    loop {
        let out = finish(&fields);
        if json_len(&out) <= limit || fields.is_empty() {
            return out;
        }
        // Leave out the largest field, `op` only when nothing else is left.
        let largest = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "op" || fields.len() == 1)
            .max_by_key(|(_, v)| json_len(v))
            .map(|(k, _)| k.clone());
        if let Some(k) = largest {
            fields.remove(&k);
        }
    }
}

/// Most bytes of an error reply's own reason kept when the reply is cut down to fit.
const MAX_KEPT_REASON_BYTES: usize = 1024;

/// The first `max` bytes of `s` at most (on a character boundary), `...` added when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let cut = (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}...", &s[..cut])
}

/// Collects the messages of one list-like reply on the client side: [`Pages::add`] until it
/// returns the whole reply (one message without `page`, or every page of a paged one, the
/// list's parts merged).
#[derive(Debug, Default)]
pub struct Pages {
    key: String,
    got: Vec<Option<Value>>,
}

impl Pages {
    /// Collects a reply whose list is `key` (`da_list` for the device API's `attach`).
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            got: Vec::new(),
        }
    }

    /// Adds one message; returns the whole reply once every page is in. An error reply or a
    /// reply without `page` is returned as it is.
    pub fn add(&mut self, msg: Value) -> Option<Value> {
        let page = msg.get("page").and_then(Value::as_u64);
        let pages = msg.get("pages").and_then(Value::as_u64);
        let (Some(k), Some(n)) = (page, pages) else {
            return Some(msg);
        };
        let (k, n) = (k as usize, n as usize);
        if k == 0 || k > n {
            return None;
        }
        if self.got.len() != n {
            self.got = vec![None; n];
        }
        self.got[k - 1] = Some(msg);
        if self.got.iter().any(Option::is_none) {
            return None;
        }
        let mut whole: Option<Map<String, Value>> = None;
        for part in std::mem::take(&mut self.got).into_iter().flatten() {
            let Value::Object(mut m) = part else { continue };
            let list = match m.remove(&self.key) {
                Some(Value::Object(l)) => l,
                _ => Map::new(),
            };
            let w = whole.get_or_insert_with(|| {
                let mut head = m.clone();
                head.remove("page");
                head.remove("pages");
                head.insert(self.key.clone(), Value::Object(Map::new()));
                head
            });
            if let Some(Value::Object(all)) = w.get_mut(&self.key) {
                all.extend(list);
            }
        }
        whole.map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head() -> Map<String, Value> {
        let Value::Object(m) = json!({"op": "attach", "nonce": 7, "state": "ok"}) else {
            unreachable!()
        };
        m
    }

    fn items(n: usize, size: usize) -> Map<String, Value> {
        (0..n)
            .map(|i| (format!("da-{i:04}"), json!({"name": "x".repeat(size)})))
            .collect()
    }

    #[test]
    fn a_reply_that_fits_is_one_message_without_page_fields() {
        let pages = paginate(&head(), "da_list", items(3, 10), 10_000).unwrap();
        assert_eq!(pages.len(), 1);
        assert!(pages[0].get("page").is_none(), "{}", pages[0]);
        assert_eq!(pages[0]["da_list"].as_object().unwrap().len(), 3);
        let empty = paginate(&head(), "da_list", Map::new(), 100).unwrap();
        assert_eq!(
            empty,
            vec![json!({"op": "attach", "nonce": 7, "state": "ok", "da_list": {}})]
        );
    }

    #[test]
    fn pages_hold_every_item_once_in_order_each_under_the_limit() {
        for (n, size, limit) in [
            (100, 50, 1000),
            (37, 200, 700),
            (10, 1, 120),
            (500, 3, 4096),
        ] {
            let all = items(n, size);
            let pages = paginate(&head(), "da_list", all.clone(), limit).unwrap();
            assert!(pages.len() > 1, "{n} items of {size} in {limit}");
            let mut seen = Vec::new();
            for (i, p) in pages.iter().enumerate() {
                assert!(json_len(p) <= limit, "page {i}: {} > {limit}", json_len(p));
                assert_eq!(p["page"], i + 1);
                assert_eq!(p["pages"], pages.len());
                assert_eq!(p["op"], "attach");
                assert_eq!(p["nonce"], 7);
                assert_eq!(p["state"], "ok");
                seen.extend(p["da_list"].as_object().unwrap().keys().cloned());
            }
            assert_eq!(seen, all.keys().cloned().collect::<Vec<_>>());
            let mut collect = Pages::new("da_list");
            let mut whole = None;
            for p in pages.into_iter().rev() {
                whole = collect.add(p);
            }
            let whole = whole.expect("all pages in");
            assert_eq!(whole["da_list"], Value::Object(all));
            assert!(whole.get("page").is_none());
        }
    }

    #[test]
    fn an_item_larger_than_a_page_is_an_error() {
        let mut all = items(3, 10);
        all.insert("huge".into(), json!("y".repeat(2000)));
        let e = paginate(&head(), "da_list", all, 1000).unwrap_err();
        assert_eq!(e.limit, 1000);
        assert!(e.bytes > 2000, "{e:?}");
        assert!(e.to_string().starts_with("reply too large ("), "{e}");
        assert!(
            e.to_string().contains("broker.max_payload_bytes 1000"),
            "{e}"
        );
    }

    #[test]
    fn an_error_reply_leaves_out_the_largest_fields_until_it_fits() {
        let body = json!({"op": "add_funcs", "nonce": "n1", "codes": ["c".repeat(5000)],
            "digests": ["d".repeat(64)], "state": "ok"});
        let bytes = json_len(&body);
        let r = too_large_reply(&body, bytes, 300, "");
        assert!(json_len(&r) <= 300, "{r}");
        assert_eq!(r["op"], "add_funcs");
        assert_eq!(r["nonce"], "n1");
        assert_eq!(r["state"], "error");
        assert!(r.get("codes").is_none());
        assert_eq!(
            r["reason"],
            format!("reply too large ({bytes} bytes > broker.max_payload_bytes 300)")
        );
        // An error reply keeps its reason, cut short.
        let body = json!({"op": "x", "pad": "p".repeat(5000), "state": "error",
            "reason": format!("unknown op: `{}`", "o".repeat(3000))});
        let r = too_large_reply(&body, 9000, 2000, "");
        assert!(json_len(&r) <= 2000, "{r}");
        let why = r["reason"].as_str().unwrap();
        assert!(why.starts_with("unknown op: `ooo"), "{why}");
        assert!(why.ends_with("(reply too large (9000 bytes > broker.max_payload_bytes 2000): large fields left out)"), "{why}");
        // Even a reply with a huge `op` gets an answer that fits.
        let r = too_large_reply(&json!({"op": "o".repeat(1000)}), 1010, 200, "x");
        assert!(json_len(&r) <= 200, "{r}");
        assert_eq!(r["state"], "error");
    }
}
