use super::*;

#[derive(Debug)]
struct Table;

impl Roles for Table {
    fn role(&self, username: &str) -> Option<Role> {
        match username {
            "ops" => Some(Role::Admin),
            "app1" => Some(Role::App),
            _ => None,
        }
    }
}

fn client(username: Option<&str>) -> ClientRef<'_> {
    ClientRef {
        username,
        client_id: "c",
    }
}

fn acl() -> (ControllerAcl, DaId, DaId) {
    let grants = DaGrants::default();
    let (a, b) = (DaId::new_v4(), DaId::new_v4());
    grants.set(
        a,
        Grants {
            publish: ["data/idf-a".to_owned()].into(),
            subscribe: ["data/odf-a".to_owned()].into(),
        },
    );
    (
        ControllerAcl {
            roles: Arc::new(Table),
            grants,
            home_das: false,
        },
        a,
        b,
    )
}

#[test]
fn admins_may_do_everything_and_strangers_nothing() {
    let (acl, a, _) = acl();
    let ops = client(Some("ops"));
    for t in ["#", "iottalk/api/req/gui/graph/1", &format!("{a}/ctrl/o")] {
        assert!(acl.may_publish(&ops, t, false) || t == "#");
        assert!(acl.may_subscribe(&ops, t));
    }
    for who in [None, Some("nobody"), Some("A1B2")] {
        let c = client(who);
        assert!(!acl.may_publish(&c, "iottalk/rpc/x/req", false));
        assert!(!acl.may_subscribe(&c, "iottalk/rpc/x/res/1"));
    }
}

#[test]
fn apps_use_request_response_and_their_device_api_only() {
    let (acl, a, _) = acl();
    let app = client(Some("app1"));
    assert!(acl.may_publish(&app, &format!("iottalk/rpc/{a}/req"), false));
    assert!(acl.may_publish(&app, "iottalk/rpc/other/res/n1", false));
    assert!(acl.may_subscribe(&app, "iottalk/rpc/app1/res/+"));
    assert!(acl.may_subscribe(&app, "iottalk/rpc/app1/#"));
    assert!(acl.may_publish(&app, "iottalk/api/req/app1/device", false));
    assert!(acl.may_subscribe(&app, "iottalk/api/res/app1/device"));
    for t in [
        "iottalk/api/req/app1/graph/1",
        "iottalk/api/req/gui/device",
        &format!("{a}/ctrl/i"),
        "data/idf-a",
    ] {
        assert!(!acl.may_publish(&app, t, false), "{t}");
    }
    for f in [
        "#",
        "iottalk/rpc/+/req",
        "iottalk/rpc/#",
        "iottalk/api/res/gui/device",
        "data/odf-a",
    ] {
        assert!(!acl.may_subscribe(&app, f), "{f}");
    }
}

#[test]
fn das_use_their_channels_and_the_topics_of_their_links() {
    let (acl, a, b) = acl();
    let (sa, sb) = (a.to_string(), b.to_string());
    let da_a = client(Some(&sa));
    let da_b = client(Some(&sb));
    assert!(acl.may_publish(&da_a, &format!("{a}/ctrl/i"), false));
    assert!(acl.may_subscribe(&da_a, &format!("{a}/ctrl/o")));
    assert!(acl.may_publish(&da_a, "data/idf-a", false));
    assert!(acl.may_subscribe(&da_a, "data/odf-a"));
    assert!(acl.may_subscribe(&da_a, &format!("iottalk/rpc/{a}/req")));
    assert!(acl.may_publish(&da_a, &format!("iottalk/rpc/{b}/req"), false));
    // Another DA's channels and links, other directions, wildcards, the APIs: refused.
    for t in [
        format!("{b}/ctrl/i"),
        format!("{a}/ctrl/o"),
        "data/odf-a".to_owned(),
        "iottalk/api/req/gui/graph/1".to_owned(),
        "iottalk/api/req/x/device".to_owned(),
    ] {
        assert!(!acl.may_publish(&da_a, &t, false), "{t}");
    }
    for f in [
        format!("{b}/ctrl/o"),
        "+/ctrl/o".to_owned(),
        "#".to_owned(),
        "data/idf-a".to_owned(),
        "data/+".to_owned(),
        format!("iottalk/rpc/{b}/req"),
        "iottalk/rpc/+/req".to_owned(),
    ] {
        assert!(!acl.may_subscribe(&da_a, &f), "{f}");
    }
    assert!(
        !acl.may_publish(&da_b, "data/idf-a", false),
        "b has no links"
    );
    // Retained: its uplink (online/offline) yes, request/response never.
    assert!(acl.may_publish(&da_a, &format!("{a}/ctrl/i"), true));
    assert!(!acl.may_publish(&da_a, &format!("iottalk/rpc/{b}/req"), true));
    let app = client(Some("app1"));
    assert!(!acl.may_publish(&app, "iottalk/rpc/x/res/n", true));
    assert!(!acl.may_publish(&app, "iottalk/api/req/app1/device", true));
}

#[test]
fn apps_send_home_commands_and_read_replies_states_and_the_catalog() {
    let (acl, _, _) = acl();
    let app = client(Some("app1"));
    assert!(acl.may_publish(&app, "iottalk/home/cmd/lamp", false));
    assert!(acl.may_publish(&app, "iottalk/home/cmd/evening", false));
    for f in [
        "iottalk/home/res/#",
        "iottalk/home/res/lamp",
        "iottalk/home/res/app1/+",
        "iottalk/home/state/#",
        "iottalk/home/state/+",
        "iottalk/home/state/lamp",
        "iottalk/home/catalog",
    ] {
        assert!(acl.may_subscribe(&app, f), "{f}");
    }
    // Commands only on one level, never retained; states, replies and the catalog are the
    // controller's to publish.
    for (t, retain) in [
        ("iottalk/home/cmd/lamp", true),
        ("iottalk/home/cmd/", false),
        ("iottalk/home/cmd/a/b", false),
        ("iottalk/home/cmd", false),
        ("iottalk/home/res/lamp", false),
        ("iottalk/home/state/lamp", false),
        ("iottalk/home/state/lamp", true),
        ("iottalk/home/catalog", true),
    ] {
        assert!(!acl.may_publish(&app, t, retain), "{t} retain={retain}");
    }
    for f in [
        "iottalk/home/#",
        "iottalk/home/+/lamp",
        "iottalk/home/cmd/+",
        "iottalk/home/cmd/lamp",
        "iottalk/home/catalog/#",
        "iottalk/#",
    ] {
        assert!(!acl.may_subscribe(&app, f), "{f}");
    }
}

#[test]
fn apps_send_key_requests_and_read_only_their_own_replies() {
    let (acl, a, _) = acl();
    let app = client(Some("app1"));
    assert!(acl.may_publish(&app, "iottalk/km/req/app1", false));
    // Only as the client of its own name: it could not read another client's replies, and
    // forged requests there would count towards panic mode.
    for (t, retain) in [
        ("iottalk/km/req/backup", false),
        ("iottalk/km/req/app1", true),
        ("iottalk/km/req/", false),
        ("iottalk/km/req/a/b", false),
        ("iottalk/km/res/app1", false),
    ] {
        assert!(!acl.may_publish(&app, t, retain), "{t} retain={retain}");
    }
    assert!(acl.may_subscribe(&app, "iottalk/km/res/app1"));
    for f in [
        "iottalk/km/res/backup",
        "iottalk/km/res/+",
        "iottalk/km/res/#",
        "iottalk/km/req/+",
        "iottalk/km/#",
    ] {
        assert!(!acl.may_subscribe(&app, f), "{f}");
    }
    let sa = a.to_string();
    let da = client(Some(&sa));
    assert!(!acl.may_publish(&da, "iottalk/km/req/app1", false));
    assert!(!acl.may_subscribe(&da, &format!("iottalk/km/res/{a}")));
    let admin = client(Some("ops"));
    assert!(acl.may_subscribe(&admin, "iottalk/km/res/#"));
}

#[test]
fn das_have_no_home_topics_unless_home_das() {
    let (acl, a, b) = acl();
    let sa = a.to_string();
    let da_a = client(Some(&sa));
    assert!(!acl.may_publish(&da_a, "iottalk/home/cmd/lamp", false));
    for f in [
        format!("iottalk/home/res/{a}/#"),
        "iottalk/home/res/#".to_owned(),
        "iottalk/home/state/lamp".to_owned(),
        "iottalk/home/catalog".to_owned(),
    ] {
        assert!(!acl.may_subscribe(&da_a, &f), "{f}");
    }

    let acl = ControllerAcl {
        home_das: true,
        ..acl
    };
    assert!(acl.may_publish(&da_a, "iottalk/home/cmd/lamp", false));
    assert!(!acl.may_publish(&da_a, "iottalk/home/cmd/lamp", true));
    assert!(!acl.may_publish(&da_a, "iottalk/home/res/lamp", false));
    assert!(!acl.may_publish(&da_a, &format!("iottalk/home/res/{a}/1"), false));
    assert!(!acl.may_publish(&da_a, "iottalk/home/state/lamp", true));
    for f in [
        format!("iottalk/home/res/{a}/#"),
        format!("iottalk/home/res/{a}/r1"),
        format!("iottalk/home/res/{a}"),
    ] {
        assert!(acl.may_subscribe(&da_a, &f), "{f}");
    }
    for f in [
        format!("iottalk/home/res/{b}/#"),
        "iottalk/home/res/#".to_owned(),
        "iottalk/home/res/+/r1".to_owned(),
        "iottalk/home/state/#".to_owned(),
        "iottalk/home/catalog".to_owned(),
        "iottalk/home/cmd/+".to_owned(),
    ] {
        assert!(!acl.may_subscribe(&da_a, &f), "{f}");
    }
}

#[test]
fn only_admins_publish_retained_on_home_topics() {
    let (acl, a, _) = acl();
    let acl = ControllerAcl {
        home_das: true,
        ..acl
    };
    let sa = a.to_string();
    let ops = client(Some("ops"));
    for t in [
        "iottalk/home/cmd/lamp",
        "iottalk/home/res/lamp",
        "iottalk/home/state/lamp",
        "iottalk/home/catalog",
    ] {
        assert!(acl.may_publish(&ops, t, true), "{t}");
        for who in [Some("app1"), Some(sa.as_str()), Some("nobody"), None] {
            assert!(!acl.may_publish(&client(who), t, true), "{who:?} {t}");
        }
    }
    assert!(!acl.may_publish(&client(None), "iottalk/home/cmd/lamp", false));
    assert!(!acl.may_subscribe(&client(Some("nobody")), "iottalk/home/res/#"));
}

#[test]
fn the_odf_write_api_is_for_admins_only() {
    let (acl, a, _) = acl();
    let sa = a.to_string();
    let req = iot_proto::topics::odf_req;
    let res = iot_proto::topics::odf_res;
    let ops = client(Some("ops"));
    assert!(acl.may_publish(&ops, &req("ops"), false));
    assert!(acl.may_subscribe(&ops, &res("ops")));
    // Neither an app (under its own name or another) nor a DA may write to an ODF this way,
    // nor read the replies.
    for (who, name) in [
        (client(Some("app1")), "app1"),
        (client(Some(&sa)), sa.as_str()),
    ] {
        for c in [name, "ccm"] {
            assert!(
                !acl.may_publish(&who, &req(c), false),
                "{name} on {}",
                req(c)
            );
            assert!(!acl.may_subscribe(&who, &res(c)), "{name} on {}", res(c));
        }
        assert!(!acl.may_publish(&who, "iottalk/api/req/+/odf", false));
    }
}
