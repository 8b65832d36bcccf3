#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `GET /logz` (issue 13, docs/operations.md): the controller's recent log lines on the CSM
//! and the CCM, newest first, as text, JSON or an escaped HTML page, by level; admins only
//! with authentication on.

use iot_tests::{new_id, register_body, App, AppOptions};
use serde_json::Value;

const SCRIPT: &str = "<script>alert(1)</script>";

async fn get(app: &App, url: String) -> (u16, String, reqwest::header::HeaderMap) {
    let r = app.operator(app.http.get(url)).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.text().await.unwrap(), headers)
}

#[tokio::test]
async fn logz_shows_the_line_just_logged_newest_first_and_escapes_html() {
    let app = App::spawn().await;
    let id = new_id();
    let mut body = register_body();
    body["name"] = SCRIPT.into();
    let (status, reply) = app.put(&id, &body).await;
    assert_eq!(status, 200, "{reply}");

    // Text: the registration (logged just before) comes before the older start-up lines.
    let (status, text, headers) = get(&app, format!("{}/logz", app.csm)).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let pos = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in /logz:\n{text}"))
    };
    let registered = pos(&id);
    assert!(text.lines().nth(registered).unwrap().contains("registered"));
    assert!(registered < pos("state loaded"), "newest first:\n{text}");

    // HTML: escaped, nothing can run.
    let (status, html, headers) = get(&app, format!("{}/logz?format=html", app.csm)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(headers["content-security-policy"], "default-src 'none'");
    assert!(!html.contains(SCRIPT), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );

    // JSON, by level; the CCM answers from the same lines.
    let (status, json, _) = get(&app, format!("{}/logz?format=json&level=info", app.csm)).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert!(lines
        .iter()
        .all(|l| ["INFO", "WARN", "ERROR"].contains(&l["level"].as_str().unwrap())));
    let reg = lines
        .iter()
        .find(|l| l["fields"]["da.id"] == id.as_str())
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(reg["message"], "registered");
    assert!(reg["fields"]["da.name"].as_str().unwrap().contains(SCRIPT));
    let (status, errors, _) = get(&app, format!("{}/logz?format=json&level=error", app.csm)).await;
    assert_eq!(status, 200);
    let errors: Vec<Value> = serde_json::from_str(&errors).unwrap();
    assert!(errors.iter().all(|l| l["level"] == "ERROR"), "{errors:?}");
    assert!(errors.len() < lines.len());
    let (status, few, _) = get(&app, format!("{}/logz?limit=3", app.ccm)).await;
    assert_eq!(status, 200, "{few}");
    assert_eq!(few.lines().count(), 3, "{few}");
    for bad in [
        "format=xml",
        "level=loud",
        "limit=-1",
        "limit=0",
        "limit=1001",
    ] {
        let (status, why, _) = get(&app, format!("{}/logz?{bad}", app.csm)).await;
        assert_eq!(status, 400, "{bad}: {why}");
        let (status, why, _) = get(&app, format!("{}/logz?{bad}", app.ccm)).await;
        assert_eq!(status, 400, "{bad}: {why}");
    }
}

#[tokio::test]
async fn with_authentication_only_admins_read_logz() {
    let app = App::start(AppOptions {
        auth: true,
        ..AppOptions::default()
    })
    .await;
    app.add_user("viewer", "app", "viewer-pw-1").await;
    for base in [&app.csm, &app.ccm] {
        let anonymous = app
            .http
            .get(format!("{base}/logz?limit=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            anonymous.status().as_u16(),
            401,
            "{base}: credentials come first"
        );
        // An app user is not an admin.
        let r = app
            .http
            .get(format!("{base}/logz"))
            .basic_auth("viewer", Some("viewer-pw-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{base}");
        let (status, text, _) = get(&app, format!("{base}/logz")).await;
        assert_eq!(status, 200, "{base}: {text}");
        assert!(!text.is_empty());
    }
}

/// With authentication off, a page of another site (or a rebound domain) cannot read the
/// CSM's operator endpoints either.
#[tokio::test]
async fn with_auth_off_another_sites_page_cannot_read_the_operator_endpoints() {
    let app = App::spawn().await;
    for path in ["/logz", "/metrics", "/status", "/varz"] {
        let url = format!("{}{path}", app.csm);
        let rebound = app.http.get(&url).header("Host", "evil.example:9992");
        assert_eq!(
            rebound.send().await.unwrap().status().as_u16(),
            403,
            "{path}"
        );
        let cross = app.http.get(&url).header("Origin", "http://evil.example");
        assert_eq!(cross.send().await.unwrap().status().as_u16(), 403, "{path}");
        assert_eq!(
            app.http.get(&url).send().await.unwrap().status().as_u16(),
            200,
            "{path}"
        );
    }
}
