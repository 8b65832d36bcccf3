//! The runner against a stand-in [`Drive`] whose devices answer after a set time, fail, fail
//! a few times first, or never answer; tokio's clock is paused, so times are exact.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;

/// How a stand-in device behaves.
#[derive(Clone)]
enum Act {
    /// Succeeds after this long.
    Ok(u64),
    Fail(&'static str),
    /// Fails this many times, then succeeds.
    FailFirst(u32),
    Hang,
}

#[derive(Default)]
struct Fake {
    acts: BTreeMap<String, Act>,
    /// Every attempt: (device, command, time since start in ms).
    log: Mutex<Vec<(String, String, u64)>>,
    start: Option<Instant>,
}

impl Drive for Fake {
    async fn drive(&self, name: &str, _driver: &Driver, cmd: Command) -> Result<(), String> {
        let at = self.start.map_or(0, |s| s.elapsed().as_millis() as u64);
        let tries = {
            let mut log = self.log.lock().unwrap();
            log.push((name.to_owned(), cmd.to_string(), at));
            log.iter().filter(|(n, _, _)| n == name).count() as u32
        };
        match self.acts.get(name).cloned().unwrap_or(Act::Ok(0)) {
            Act::Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            Act::Fail(why) => Err(why.into()),
            Act::FailFirst(n) if tries <= n => Err("connection refused".into()),
            Act::FailFirst(_) => Ok(()),
            Act::Hang => std::future::pending().await,
        }
    }
}

fn catalog(text: &str) -> Catalog {
    Catalog::from_toml(text).unwrap()
}

async fn run(c: &Catalog, fake: &mut Fake, target: &str, cmd: &str, retries: u32) -> HomeResult {
    let start = Instant::now();
    fake.start = Some(start);
    let metrics = HomeMetrics::default();
    let r = Run {
        catalog: c,
        drive: &*fake,
        retries,
        start,
        deadline: start + Duration::from_millis(5000),
        metrics: &metrics,
    };
    r.target(target, Command::parse(cmd).unwrap()).await
}

fn devices(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[devices.{n}]\ndriver = \"delay\"\nms = 1\n"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn ten_slow_devices_in_parallel_take_one_devices_time() {
    let names: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let items: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let c = catalog(&format!(
        "{}[scenes]\nall = [{}]\n",
        devices(&refs),
        items.join(",")
    ));
    let mut fake = Fake::default();
    for n in &names {
        fake.acts.insert(n.clone(), Act::Ok(1000));
    }
    let r = run(&c, &mut fake, "all", "on", 1).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.children.len(), 10);
    assert_eq!(r.ms, 1000);
}

#[tokio::test(start_paused = true)]
async fn a_device_that_never_answers_is_cut_at_the_one_deadline() {
    let c = catalog(&format!(
        "{}[scenes]\nboth = [\"quick\", \"mute\"]\n",
        devices(&["quick", "mute"])
    ));
    let mut fake = Fake::default();
    fake.acts.insert("mute".into(), Act::Hang);
    let r = run(&c, &mut fake, "both", "off", 3).await;
    assert!(!r.ok);
    assert_eq!(r.ms, 5000);
    assert!(r.children[0].ok);
    assert_eq!(r.children[1].detail.as_deref(), Some("deadline"));
    assert_eq!(r.failures(), ["mute: deadline"]);
    // Hanging until the deadline leaves no time for a retry.
    assert_eq!(fake.log.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_on_the_first_success_and_keep_the_last_reason() {
    let c = catalog(&devices(&["flaky", "dead"]));
    let mut fake = Fake::default();
    fake.acts.insert("flaky".into(), Act::FailFirst(1));
    fake.acts.insert("dead".into(), Act::Fail("err_code 1"));
    let r = run(&c, &mut fake, "flaky", "on", 5).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        fake.log.lock().unwrap().len(),
        2,
        "no attempt after the success"
    );
    let r = run(&c, &mut fake, "dead", "on", 1).await;
    assert_eq!(r.detail.as_deref(), Some("err_code 1"));
    let dead = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.0 == "dead")
        .count();
    assert_eq!(dead, 2, "one attempt and one retry");
}

#[tokio::test(start_paused = true)]
async fn commands_pass_down_items_override_and_variants_win() {
    let c = catalog(&format!(
        "{}[scenes]\nevening = [\"lamp:dim:30\", \"porch\", \"inner\"]\n\"evening:off\" = [\"lamp\"]\ninner = [\"hall\", \"lamp:full\"]\n",
        devices(&["lamp", "porch", "hall"])
    ));
    let mut fake = Fake::default();
    let r = run(&c, &mut fake, "evening", "dim:50", 1).await;
    assert!(r.ok);
    let mut got: Vec<(String, String)> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(n, c, _)| (n.clone(), c.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("hall".into(), "dim:50".into()),
            ("lamp".into(), "dim:30".into()),
            ("lamp".into(), "on".into()),
            ("porch".into(), "dim:50".into()),
        ]
    );
    assert_eq!(r.children[2].target, "inner");
    assert_eq!(r.children[2].children[1].cmd, "on");
    fake.log.lock().unwrap().clear();
    let r = run(&c, &mut fake, "evening", "off", 1).await;
    assert_eq!(r.children.len(), 1, "the `evening:off` variant");
    assert_eq!(r.children[0].cmd, "off");
}

#[tokio::test(start_paused = true)]
async fn a_sequence_runs_in_order_and_marks_what_the_deadline_left() {
    let c = catalog(&format!(
        "{}[scenes.wake]\nmode = \"sequence\"\nitems = [\"a\", \"b\", \"c\"]\n",
        devices(&["a", "b", "c"])
    ));
    let mut fake = Fake::default();
    fake.acts.insert("a".into(), Act::Ok(1000));
    fake.acts.insert("b".into(), Act::Ok(4500));
    let r = run(&c, &mut fake, "wake", "on", 1).await;
    let at: Vec<u64> = fake.log.lock().unwrap().iter().map(|l| l.2).collect();
    assert_eq!(at, [0, 1000], "b after a; c never started");
    assert!(r.children[0].ok);
    assert_eq!(r.children[1].detail.as_deref(), Some("deadline"));
    assert_eq!(r.children[2].detail.as_deref(), Some("deadline"));
    assert_eq!(r.ms, 5000);
}

#[test]
fn lookup_by_exact_name_then_unique_substring() {
    let c = catalog(&format!(
        "{}[scenes]\nevening = [\"porch-light\"]\n\"evening:off\" = [\"porch-light\"]\n",
        devices(&["porch-light", "porch-fan", "lamp"])
    ));
    assert_eq!(lookup(&c, "lamp").unwrap(), "lamp");
    assert_eq!(lookup(&c, "EVEN").unwrap(), "evening");
    assert_eq!(lookup(&c, "fan").unwrap(), "porch-fan");
    assert_eq!(lookup(&c, "garage").unwrap_err(), "unknown target");
    assert_eq!(
        lookup(&c, "porch").unwrap_err(),
        "`porch` matches several targets: porch-fan, porch-light"
    );
}
