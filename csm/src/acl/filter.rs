//! Topic-filter containment for subscribe checks: whether every topic a client's filter can
//! match is also matched by a pattern it is allowed to read.

/// Whether `pattern` covers `filter`: every topic `filter` matches, `pattern` matches too.
/// Both are MQTT filters (`+` one level, `#` the rest, last level only).
pub fn covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            // `#` covers whatever is left, including nothing (`a/#` matches `a`).
            (Some("#"), _) => return true,
            (None, None) => return true,
            // `a/b` does not cover `a/b/c`; `a/b/c` does not cover `a/b`.
            (None, Some(_)) | (Some(_), None) => return false,
            // `+` covers one level, literal or `+`, never `#` (which may span several).
            (Some("+"), Some(fl)) => {
                if fl == "#" {
                    return false;
                }
            }
            (Some(pl), Some(fl)) => {
                if pl != fl {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;
    use iot_proto::topics::matches;
    use proptest::prelude::*;

    #[test]
    fn containment() {
        let yes = [
            ("#", "#"),
            ("#", "a/+/c"),
            ("a/#", "a"),
            ("a/#", "a/b/#"),
            ("a/+/c", "a/b/c"),
            ("a/+/c", "a/+/c"),
            ("x/ctrl/o", "x/ctrl/o"),
            ("iottalk/rpc/x/#", "iottalk/rpc/x/res/+"),
        ];
        let no = [
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("a/+", "a/#"),
            ("a/+/c", "a/+/#"),
            ("a/b", "a/+"),
            ("a/b", "#"),
            ("x/ctrl/o", "+/ctrl/o"),
            ("iottalk/rpc/x/#", "iottalk/rpc/+/req"),
        ];
        for (p, f) in yes {
            assert!(covers(p, f), "{p} should cover {f}");
        }
        for (p, f) in no {
            assert!(!covers(p, f), "{p} should not cover {f}");
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("+".to_owned())
        ]
    }

    fn filter() -> impl Strategy<Value = String> {
        (proptest::collection::vec(level(), 1..4), any::<bool>()).prop_map(|(mut v, hash)| {
            if hash {
                v.push("#".into());
            }
            v.join("/")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 1..6).prop_map(|v| v.join("/"))
    }

    proptest! {
        /// Soundness: what a covered filter matches, the covering pattern matches.
        #[test]
        fn a_covered_filter_never_reads_more(p in filter(), f in filter(), t in topic()) {
            if covers(&p, &f) && matches(&f, &t) {
                prop_assert!(matches(&p, &t), "{p} covers {f}, {f} matches {t}, {p} does not");
            }
        }
    }
}
