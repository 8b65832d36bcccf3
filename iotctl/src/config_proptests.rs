//! Property tests of the configuration parser (`Config::parse` and `validate`): arbitrary
//! TOML-ish text, arbitrary values for every documented key, and arbitrary environment
//! overrides give a `Config` or an error with a message, never a panic.

use proptest::prelude::*;

use super::*;

/// Every `(section, key)` of the documented default configuration.
fn keys() -> Vec<(String, String)> {
    let doc: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap_or_default();
    doc.iter()
        .filter_map(|(s, t)| t.as_table().map(|t| (s, t)))
        .flat_map(|(s, t)| t.keys().map(move |k| (s.clone(), k.clone())))
        .collect()
}

/// A TOML value as text: numbers at and past every bound, strings, booleans, arrays, tables.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(
            &[
                "0",
                "-1",
                "1",
                "65535",
                "65536",
                "4294967296",
                "1e400",
                "nan",
                "inf"
            ][..]
        )
        .prop_map(str::to_owned),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        prop::sample::select(
            &[
                "\"127.0.0.1:0\"",
                "\"mqtt://h:1\"",
                "\"\"",
                "\"/csm\"",
                "\"[::1]:1\""
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// A config file setting some documented keys (and sometimes an unknown one) to any value.
fn config_text() -> impl Strategy<Value = String> {
    let all = keys();
    let pick = prop::sample::subsequence(all.clone(), 0..=all.len().min(8));
    (
        pick,
        prop::collection::vec(value(), 8),
        prop::option::of(("[a-z]{1,6}", "[a-z_]{1,8}", value())),
    )
        .prop_map(|(keys, values, extra)| {
            let mut text = String::new();
            let mut sections: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for ((s, k), v) in keys.into_iter().zip(values) {
                sections.entry(s).or_default().push(format!("{k} = {v}"));
            }
            if let Some((s, k, v)) = extra {
                sections.entry(s).or_default().push(format!("{k} = {v}"));
            }
            for (s, lines) in sections {
                text.push_str(&format!("[{s}]\n{}\n", lines.join("\n")));
            }
            text
        })
}

/// Parses and validates; a refusal must say something.
fn check(text: &str, env: &[(String, String)]) -> Result<Option<Config>, TestCaseError> {
    match Config::parse(text, env).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            prop_assert!(
                !format!("{e:#}").trim().is_empty(),
                "an error without a message"
            );
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_gives_a_config_or_an_error(text in prop_oneof![any::<String>(), config_text()]) {
        check(&text, &[])?;
    }

    #[test]
    fn any_value_of_any_key_gives_a_config_or_an_error(text in config_text()) {
        if let Some(c) = check(&text, &[])? {
            // A config that validated also starts the broker's checks.
            prop_assert!(c.broker.embedded.validate().is_ok());
        }
    }

    #[test]
    fn any_environment_override_gives_a_config_or_an_error(
        overrides in prop::collection::vec(
            (prop_oneof![
                prop::sample::select(keys()).prop_map(|(s, k)| format!("IOTCTL__{}__{}", s.to_uppercase(), k.to_uppercase())),
                "IOTCTL__[A-Z_]{0,12}",
                any::<String>(),
            ], prop_oneof![value(), any::<String>()]),
            0..4,
        ),
    ) {
        check("", &overrides)?;
    }
}

/// An environment override of a key that does not exist is refused, naming the key.
#[test]
fn unknown_environment_keys_are_refused_by_name() {
    for (var, name) in [
        ("IOTCTL__BROKER__MAX_TOPIC_LEVEL", "max_topic_level"),
        ("IOTCTL__CSM__NOPE", "nope"),
        ("IOTCTL__NOSECTION__LISTEN", "nosection"),
    ] {
        let err = Config::parse("", &[(var.to_owned(), "1".to_owned())])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.contains("unknown field") && err.contains(name),
            "{var}: {err}"
        );
    }
    let err = Config::parse("", &[("IOTCTL__BROKER".to_owned(), "1".to_owned())])
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("IOTCTL__SECTION__KEY"), "{err}");
    let c = Config::parse(
        "",
        &[(
            "IOTCTL__BROKER__MAX_TOPIC_LEVELS".to_owned(),
            "16".to_owned(),
        )],
    );
    assert_eq!(c.ok().map(|c| c.broker.embedded.max_topic_levels), Some(16));
}

/// Deeply nested TOML is refused, not a stack overflow.
#[test]
fn deeply_nested_toml_is_refused() {
    let deep = format!(
        "[csm]\nlisten = {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(Config::parse(&deep, &[]).is_err());
    let deep_env = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    // Too deep to be a TOML value: taken as a string, which is not an address.
    let env = [("IOTCTL__CSM__LISTEN".to_owned(), deep_env)];
    let c = Config::parse("", &env).expect("a string value");
    assert!(c.validate().is_err());
    let zero = Config::parse("[broker]\nmax_topic_levels = 0\n", &[]).map(|c| c.validate());
    let text = zero
        .ok()
        .and_then(|r| r.err())
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("broker.max_topic_levels"), "{text}");
}
