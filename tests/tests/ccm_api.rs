#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The CCM's REST API through real HTTP against the real controller (`iotctl start`), on
//! SQLite and PostgreSQL: the library, projects and everything in them, export and import,
//! refusals with clear reasons, the OpenAPI document, and logins when authentication is on.

use iot_tests::{new_id, App, AppOptions, CcmClient, PgSchema};
use reqwest::Method;
use serde_json::{json, Value};

const SQUARE: &str = "fn run(x) { x * x }";

/// Builds the walkthrough's library and a project through the API; returns the project id.
async fn build_project(c: &CcmClient) -> u64 {
    c.model("Sensor", &[("Meow-I", "input", 1)]).await;
    c.model("Display", &[("Show-O", "output", 1)]).await;
    let (s, v) = c
        .post(
            "/api/functions/square",
            &json!({"code": SQUARE, "author": "ops"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["digest"], iot_tests::digest(SQUARE));
    // The same code again: the same version, 200.
    let (s, v) = c
        .post("/api/functions/square", &json!({"code": SQUARE}))
        .await;
    assert_eq!((s, v["version"].as_u64()), (200, Some(1)));
    let (s, p) = c.post("/api/projects", &json!({"name": "meow"})).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(
        (p["on"].as_bool(), p["auto_bind"].as_bool()),
        (Some(false), Some(true))
    );
    let pid = p["id"].as_u64().unwrap();
    let o1 = c
        .ok(
            Method::POST,
            &format!("/api/projects/{pid}/objects"),
            Some(&json!({"model": "Sensor"})),
        )
        .await;
    let o2 = c
        .ok(
            Method::POST,
            &format!("/api/projects/{pid}/objects"),
            Some(&json!({"model": "Display"})),
        )
        .await;
    let n = c
        .ok(
            Method::POST,
            &format!("/api/projects/{pid}/netapps"),
            Some(&json!({"name": "square", "links": [
                {"object": o1["id"], "feature": "Meow-I"},
                {"object": o2["id"], "feature": "Show-O"},
            ]})),
        )
        .await;
    assert_eq!(n["links"].as_array().unwrap().len(), 2, "{n}");
    let n = c
        .ok(
            Method::PATCH,
            &format!("/api/projects/{pid}/netapps/{}", n["id"]),
            Some(&json!({"join": {"name": "square", "version": 1}})),
        )
        .await;
    assert_eq!(n["join"], json!({"name": "square", "version": 1}));
    pid
}

async fn library_projects_export_import(app: &App) {
    let c = CcmClient::of(app);
    let pid = build_project(&c).await;
    let (s, v) = c.get(&format!("/api/projects/{pid}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["project"]["objects"].as_array().unwrap().len(), 2);
    assert!(v["status"].is_object(), "{v}");

    // Refusals say what is wrong, and change nothing.
    let cases: Vec<(Method, String, Value, u16, &str)> = vec![
        (
            Method::PUT,
            "/api/models/X".into(),
            json!({"name": "X", "features": ["Nope"]}),
            400,
            "no feature `Nope`",
        ),
        (
            Method::PUT,
            "/api/models/X".into(),
            json!({"name": "Y", "features": ["Meow-I"]}),
            400,
            "differ",
        ),
        (
            Method::PUT,
            "/api/features/a%2Fb".into(),
            json!({"direction": "input", "params": [{}]}),
            400,
            "not allowed",
        ),
        (
            Method::POST,
            "/api/functions/f".into(),
            json!({"code": "function run() {}"}),
            400,
            "cannot tell the language",
        ),
        (
            Method::POST,
            "/api/projects".into(),
            json!({"name": "meow"}),
            409,
            "exists",
        ),
        (
            Method::POST,
            "/api/projects".into(),
            json!({"nme": "x"}),
            400,
            "unknown field",
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/objects"),
            json!({"model": "Nope"}),
            400,
            "no model",
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/objects/1/bind"),
            json!({"da_id": "not-a-uuid"}),
            400,
            "malformed JSON body",
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/netapps/1/links"),
            json!({"object": 1, "feature": "Meow-I"}),
            409,
            "already",
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/netapps/1/links"),
            json!({"object": 9, "feature": "Meow-I"}),
            400,
            "no device object 9",
        ),
        (
            Method::POST,
            format!("/api/projects/{pid}/netapps/1/links"),
            json!({"object": 2, "feature": "Meow-I"}),
            400,
            "has no feature",
        ),
        (
            Method::PATCH,
            format!("/api/projects/{pid}/netapps/1"),
            json!({"join": {"name": "square", "version": 7}}),
            400,
            "version 7",
        ),
        (
            Method::GET,
            "/api/projects/999".into(),
            Value::Null,
            404,
            "no project 999",
        ),
        (
            Method::GET,
            "/api/projects/abc".into(),
            Value::Null,
            400,
            "not a number",
        ),
        (
            Method::DELETE,
            "/api/models/Sensor".into(),
            Value::Null,
            409,
            "used in project",
        ),
        (
            Method::DELETE,
            "/api/functions/square".into(),
            Value::Null,
            409,
            "used in project",
        ),
        (
            Method::DELETE,
            "/api/features/Meow-I".into(),
            Value::Null,
            409,
            "used by model",
        ),
        (
            Method::GET,
            "/api/frobnicate".into(),
            Value::Null,
            404,
            "no such API endpoint",
        ),
    ];
    for (m, path, body, status, why) in cases {
        let b = (!body.is_null()).then_some(&body);
        let (s, v) = c.call(m.clone(), &path, b).await;
        assert_eq!(s, status, "{m} {path}: {v}");
        let reason = v["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{m} {path}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    // Not JSON at all, and a body over ccm.max_body_bytes.
    let url = format!("{}/api/projects", app.ccm);
    let http = reqwest::Client::new();
    let with_auth = |r: reqwest::RequestBuilder| app.operator(r);
    let r = with_auth(
        http.post(&url)
            .header("content-type", "application/json")
            .body("{"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = with_auth(
        http.post(&url)
            .header("content-type", "application/json")
            .body(vec![b' '; 5 * 1024 * 1024]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "too_large", "{v}");

    // Export, then import under another name: the same project, reusing the same version.
    let (s, doc) = c.get(&format!("/api/projects/{pid}/export")).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["format"], "iotctl-ccm-project/1");
    assert_eq!(doc["functions"][0]["versions"][0]["code"], SQUARE);
    let (s, v) = c.post("/api/projects/import", &doc).await;
    assert_eq!(s, 409, "same name: {v}");
    let (s, copy) = c.post("/api/projects/import?name=meow2", &doc).await;
    assert_eq!(s, 201, "{copy}");
    assert_eq!(copy["name"], "meow2");
    assert_eq!(
        copy["netapps"][0]["join"],
        json!({"name": "square", "version": 1})
    );
    assert_eq!(
        copy["netapps"][0]["links"],
        doc["project"]["netapps"][0]["links"]
    );
    // A document whose function changed gets a new version, not a clash.
    let mut changed = doc.clone();
    changed["functions"][0]["versions"][0]["code"] = json!("fn run(x) { x + 1 }");
    changed["functions"][0]["versions"][0]["digest"] =
        json!(iot_tests::digest("fn run(x) { x + 1 }"));
    let (s, v) = c.post("/api/projects/import?name=meow3", &changed).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["netapps"][0]["join"],
        json!({"name": "square", "version": 2})
    );
    // A model that differs here is a clear conflict, and nothing of the import stays.
    let mut clash = doc.clone();
    clash["models"][0]["comment"] = json!("another display");
    let (s, v) = c.post("/api/projects/import?name=meow4", &clash).await;
    assert_eq!(s, 409, "{v}");
    let (_, list) = c.get("/api/projects").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["meow", "meow2", "meow3"]);

    // Deleting cascades inside a project: an object's links go with it.
    c.ok(
        Method::DELETE,
        &format!("/api/projects/{pid}/objects/1"),
        None,
    )
    .await;
    let (_, v) = c.get(&format!("/api/projects/{pid}")).await;
    assert_eq!(
        v["project"]["netapps"][0]["links"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{v}"
    );
    c.ok(Method::DELETE, "/api/projects/3", None).await;

    // The OpenAPI document lists the paths and the schemas.
    let (s, api) = c.get("/api/openapi.json").await;
    assert_eq!(s, 200);
    assert!(
        api["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        api["openapi"]
    );
    for path in [
        "/api/projects/{id}/netapps/{nid}/links/{lid}",
        "/api/projects/import",
        "/api/functions/{name}",
    ] {
        assert!(api["paths"][path].is_object(), "{path} missing");
    }
    assert!(api["components"]["schemas"]["ProjectExport"].is_object());

    // The GUI is served at /.
    let r = reqwest::get(format!("{}/", app.ccm)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
}

#[tokio::test]
async fn the_api_on_sqlite_keeps_what_it_is_given_across_a_restart() {
    let app = App::spawn().await;
    library_projects_export_import(&app).await;
    let app = app.restart().await;
    let c = CcmClient::of(&app);
    let (_, list) = c.get("/api/projects").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (_, f) = c.get("/api/functions/square").await;
    assert_eq!(f["versions"].as_array().unwrap().len(), 2, "{f}");
}

/// `iotctl project` drives the same API: export to a file, import it under another name,
/// list, show, on and off.
#[tokio::test]
async fn iotctl_project_exports_imports_and_switches() {
    let app = App::spawn().await;
    let c = CcmClient::of(&app);
    build_project(&c).await;
    let file = app.data_dir.join("meow.json");
    let f = file.to_str().unwrap();
    async fn run(app: &App, args: &[&str]) -> String {
        let out = app.iotctl(args, None).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
    run(&app, &["project", "export", "meow", "-o", f]).await;
    let text = run(&app, &["project", "import", f, "--name", "meow copy"]).await;
    assert!(
        text.contains("imported project `meow copy` (id 2, off)"),
        "{text}"
    );
    let text = run(&app, &["project", "on", "meow copy"]).await;
    assert!(text.contains("is on"), "{text}");
    let text = run(&app, &["project", "list"]).await;
    let line = text
        .lines()
        .find(|l| l.contains("meow copy"))
        .unwrap_or_default();
    assert!(line.contains(" on "), "{text}");
    let text = run(&app, &["project", "show", "2"]).await;
    assert!(
        text.contains("Sensor") && text.contains("not bound") && text.contains("join square v1"),
        "{text}"
    );
    run(&app, &["project", "off", "2"]).await;
    let out = app.iotctl(&["project", "on", "nope"], None).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no project `nope`"));
}

#[tokio::test]
async fn the_api_on_postgresql() {
    let pg = PgSchema::create();
    let app = App::start(AppOptions {
        db_url: Some(pg.url()),
        ..AppOptions::default()
    })
    .await;
    library_projects_export_import(&app).await;
    let projects = pg.psql(&format!(
        "SELECT count(*) FROM {}.ccm_docs WHERE kind = 'project'",
        pg.name
    ));
    assert_eq!(projects, "2");
}

#[tokio::test]
async fn with_auth_on_only_an_admin_gets_in_and_every_refusal_is_counted() {
    let app = App::start(AppOptions {
        auth: true,
        ..AppOptions::default()
    })
    .await;
    let out = app
        .iotctl(
            &["user", "add", "viewer", "--role", "app", "--password-stdin"],
            Some("viewer-pw-12345"),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let anon = CcmClient::anonymous(&app);
    let (s, v) = anon.get("/api/session").await;
    assert_eq!(
        (s, v["auth"].as_bool(), v["user"].is_null()),
        (200, Some(true), true)
    );
    let (s, v) = anon.get("/api/projects").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    // The GUI's files need no login (the page shows the login form).
    assert_eq!(
        reqwest::get(format!("{}/", app.ccm))
            .await
            .unwrap()
            .status(),
        200
    );

    let wrong = CcmClient {
        basic: Some(("test-admin".into(), "wrong".into())),
        ..CcmClient::anonymous(&app)
    };
    assert_eq!(wrong.get("/api/projects").await.0, 401);
    let viewer = CcmClient {
        basic: Some(("viewer".into(), "viewer-pw-12345".into())),
        ..CcmClient::anonymous(&app)
    };
    // Users are reloaded every few seconds: the new one is known once it is refused for its
    // role rather than as unknown.
    let deadline = tokio::time::Instant::now() + iot_tests::WAIT;
    loop {
        let (s, v) = viewer.get("/api/projects").await;
        if s == 403 {
            break;
        }
        assert!(
            s == 401 && tokio::time::Instant::now() < deadline,
            "{s} {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(CcmClient::of(&app).get("/api/projects").await.0, 200);

    // A login gives a cookie the browser sends back; logout ends it.
    let http = reqwest::Client::new();
    let login = |password: &'static str| {
        http.post(format!("{}/api/login", app.ccm))
            .json(&json!({"username": "test-admin", "password": password}))
            .send()
    };
    assert_eq!(login("wrong").await.unwrap().status(), 401);
    let r = login(iot_tests::ADMIN_PASSWORD).await.unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let get = |path: &str| {
        http.get(format!("{}{path}", app.ccm))
            .header("cookie", cookie.clone())
            .send()
    };
    assert_eq!(get("/api/projects").await.unwrap().status(), 200);
    let v: Value = get("/api/session").await.unwrap().json().await.unwrap();
    assert_eq!(v["user"], "test-admin");
    http.post(format!("{}/api/logout", app.ccm))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(get("/api/projects").await.unwrap().status(), 401);

    for (reason, at_least) in [
        ("http_no_credentials", 2.0),
        ("http_bad_credentials", 2.0),
        ("http_not_admin", 1.0),
    ] {
        let n = app
            .metric(&format!("iotctl_auth_refused_total{{reason=\"{reason}\"}}"))
            .await;
        assert!(n >= at_least, "{reason}: {n}");
    }
    assert!(!app.log_text().contains(iot_tests::ADMIN_PASSWORD));
}

/// What `scripts/fuzz-ccm-api.sh` (schemathesis against the OpenAPI document) found, fixed:
/// each refusal keeps the `{"error", "reason"}` body and the status that names the real problem,
/// and the document says what the API does.
#[tokio::test]
async fn what_the_api_fuzzer_found_stays_fixed() {
    let app = App::spawn().await;
    let c = CcmClient::of(&app);
    // A path segment that is not UTF-8 once decoded: a JSON 400, not axum's plain text.
    let (s, v) = c.get("/api/projects/%FF").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid")), "{v}");
    let (s, v) = c.get("/api/features/%C3%28").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid")), "{v}");

    // What the path names is checked first: a missing project or object is a 404 even when
    // the body names something missing too.
    c.model("Sensor", &[("Meow-I", "input", 1)]).await;
    let (s, v) = c
        .post("/api/projects/999/objects", &json!({"model": "Nope"}))
        .await;
    assert_eq!(s, 404, "{v}");
    let p = c
        .ok(Method::POST, "/api/projects", Some(&json!({"name": "p"})))
        .await;
    let pid = p["id"].as_u64().unwrap();
    let (s, v) = c
        .patch(
            &format!("/api/projects/{pid}/netapps/999"),
            &json!({"join": {"name": "nope", "version": 1}}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let da = "0b3f6a0e-2c59-4b26-8fe4-b197d6fe7ba8";
    c.ok(
        Method::POST,
        &format!("/api/projects/{pid}/objects"),
        Some(&json!({"model": "Sensor"})),
    )
    .await;
    c.ok(
        Method::POST,
        &format!("/api/projects/{pid}/objects/1/bind"),
        Some(&json!({"da_id": da})),
    )
    .await;
    let (s, v) = c
        .post(
            &format!("/api/projects/{pid}/objects/9/bind"),
            &json!({"da_id": da}),
        )
        .await;
    assert_eq!(s, 404, "{v}");

    // Ids are JSON Schema integers, which include `1.0`; a fraction is still refused.
    let n = c
        .ok(
            Method::POST,
            &format!("/api/projects/{pid}/netapps"),
            Some(&json!({"name": "n", "links": [{"object": 1.0, "feature": "Meow-I"}]})),
        )
        .await;
    assert_eq!(n["links"][0]["object"], 1, "{n}");
    let (s, v) = c
        .post(
            &format!("/api/projects/{pid}/netapps"),
            &json!({"name": "m", "links": [{"object": 1.5, "feature": "Meow-I"}]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Texts are limited in characters, as the document's `maxLength` counts.
    let f = |comment: String| json!({"direction": "input", "params": [{}], "comment": comment});
    let (s, v) = c.put("/api/features/Wide-I", &f("é".repeat(1024))).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.put("/api/features/Wide-I", &f("é".repeat(1025))).await;
    assert_eq!(s, 400, "{v}");

    // The document: numeric path parameters, the logins each operation needs, the refusals.
    let (_, api) = c.get("/api/openapi.json").await;
    let op = &api["paths"]["/api/projects/{id}/objects"]["post"];
    assert_eq!(op["parameters"][0]["schema"]["type"], "integer", "{op}");
    for status in ["400", "401", "403", "404", "413"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
    assert_eq!(api["paths"]["/api/session"]["get"]["security"], json!([{}]));
    let status = &api["components"]["schemas"]["ProjectStatus"]["properties"];
    // Keys of JSON objects are strings, not the integers they spell.
    for map in ["objects", "netapps"] {
        assert_eq!(status[map]["propertyNames"]["type"], "string", "{status}");
    }
}

/// With authentication off, a page of another site open in a browser on this machine cannot
/// use the API: not by a cross-site request (`Origin`), not by rebinding its domain to
/// 127.0.0.1 (`Host`); the GUI's own requests (same origin) and scripts (no `Origin`) can.
#[tokio::test]
async fn with_auth_off_another_sites_page_is_refused() {
    let app = App::spawn().await;
    let url = format!("{}/api/projects", app.ccm);
    let own_origin = app.ccm.trim_end_matches('/').to_owned();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut r = app
            .http
            .post(&url)
            .json(&json!({"name": format!("p-{}", new_id())}));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    };
    for headers in [
        vec![("Origin", "http://evil.example".to_owned())],
        vec![("Origin", "null".to_owned())],
        vec![("Host", "evil.example:80".to_owned())],
    ] {
        let r = post(headers.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{headers:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "forbidden", "{body}");
    }
    let r = post(vec![("Origin", own_origin)]).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = post(vec![]).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let logz = app
        .http
        .get(format!("{}/logz", app.ccm))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(logz.status().as_u16(), 403);
}
