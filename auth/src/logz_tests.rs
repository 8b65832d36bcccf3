//! The ring, the layer under a real subscriber, and the three renderings.

use tracing_subscriber::layer::SubscriberExt;

use super::*;

fn line(level: Level, message: &str) -> LogLine {
    LogLine {
        time: 1_796_313_601.5,
        level: level.as_str(),
        target: "t".into(),
        message: message.into(),
        fields: vec![("k".into(), "v".into())],
        severity: severity(&level),
    }
}

#[test]
fn the_ring_keeps_the_last_lines_newest_first_and_filters_by_level() {
    let ring = LogRing::new(3);
    for (i, l) in [Level::INFO, Level::WARN, Level::DEBUG, Level::ERROR]
        .into_iter()
        .enumerate()
    {
        ring.push(line(l, &format!("m{i}")));
    }
    let all: Vec<String> = ring
        .newest(None, 10)
        .into_iter()
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(all, ["m3", "m2", "m1"]);
    let warn: Vec<String> = ring
        .newest(parse_level("warn"), 10)
        .into_iter()
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(warn, ["m3", "m1"]);
    assert_eq!(ring.newest(None, 1).len(), 1);
    let none = LogRing::new(0);
    none.push(line(Level::ERROR, "x"));
    assert!(none.newest(None, 10).is_empty());
    assert_eq!(parse_level("nonsense"), None);
}

#[test]
fn events_reach_the_ring_with_their_fields_and_long_ones_are_cut() {
    let ring = LogRing::new(10);
    let subscriber = tracing_subscriber::registry().with(LogzLayer(ring.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(da.id = "d1", n = 3, "something <b>odd</b>");
        tracing::info!(big = %"x".repeat(10_000), "long");
    });
    let lines = ring.newest(None, 10);
    assert_eq!(lines.len(), 2);
    let warn = &lines[1];
    assert_eq!(
        (warn.level, warn.message.as_str()),
        ("WARN", "something <b>odd</b>")
    );
    assert_eq!(
        warn.fields,
        [
            ("da.id".to_owned(), "d1".to_owned()),
            ("n".into(), "3".into())
        ]
    );
    assert!(lines[0].fields[0].1.len() <= MAX_LINE_BYTES + '…'.len_utf8());
}

#[test]
fn a_line_holds_at_most_its_bytes_whatever_its_fields_and_characters() {
    let ring = LogRing::new(10);
    let subscriber = tracing_subscriber::registry().with(LogzLayer(ring.clone()));
    let wide = "é".repeat(3000); // 6000 bytes, two to a character
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(a = %"x".repeat(4096), b = %wide, c = 1, "m");
        tracing::info!(w = %wide, "é");
    });
    let lines = ring.newest(None, 10);
    for l in &lines {
        let bytes: usize = l.message.len()
            + l.fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        assert!(bytes <= MAX_LINE_BYTES + 16, "{bytes}");
    }
    let first = &lines[1];
    assert!(
        first.fields.iter().any(|(k, _)| k == "…"),
        "{:?}",
        first.fields
    );
    assert!(
        first.fields.iter().all(|(k, _)| k != "c"),
        "dropped after the cut"
    );
    assert!(lines[0].fields[0].1.ends_with('…'));
}

#[test]
fn the_answer_is_bounded_and_none_is_kept_at_zero() {
    let ring = LogRing::new(5000);
    for i in 0..3000 {
        ring.push(line(Level::INFO, &format!("m{i}")));
    }
    let q = |limit: Option<usize>| LogzQuery {
        limit,
        ..LogzQuery::default()
    };
    let (_, body) = q(None).answer(&ring).unwrap();
    assert_eq!(body.lines().count(), MAX_ANSWER_LINES);
    assert!(q(Some(0)).answer(&ring).is_err());
    assert!(q(Some(MAX_ANSWER_LINES + 1)).answer(&ring).is_err());
    let off = LogRing::new(0);
    let subscriber = tracing_subscriber::registry().with(LogzLayer(off.clone()));
    tracing::subscriber::with_default(subscriber, || tracing::error!("x"));
    assert!(off.newest(None, 10).is_empty());
}

#[test]
fn text_json_and_escaped_html() {
    let lines = vec![Arc::new(line(
        Level::WARN,
        "<script>alert('x')</script> & more",
    ))];
    let text = render(&lines, Format::Text);
    assert_eq!(
        text,
        "2026-12-03T16:00:01.500Z  WARN t: <script>alert('x')</script> & more k=v\n"
    );
    let json: serde_json::Value = serde_json::from_str(&render(&lines, Format::Json)).unwrap();
    assert_eq!(json[0]["message"], "<script>alert('x')</script> & more");
    assert_eq!(json[0]["fields"]["k"], "v");
    let html = render(&lines, Format::Html);
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
        "{html}"
    );
    assert_eq!(Format::parse(Some("xml")), None);
    assert_eq!(Format::parse(None), Some(Format::Text));
}
