//! The home catalog: devices (each with a driver) and scenes (items `target` or
//! `target:command`, run in parallel or in sequence, with command-specific variants such as
//! `"evening:off"`), read from the TOML import format of docs/home.md and checked as a whole:
//! every item names a known target and no scene contains itself (the error names the cycle,
//! `evening -> porch-lights -> evening`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::Command;
use super::tplink::Kind;

/// How a device is driven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase", deny_unknown_fields)]
pub enum Driver {
    Tplink {
        host: String,
        #[serde(default = "tplink_port")]
        port: u16,
        /// `plug` or `bulb`.
        kind: String,
    },
    Http {
        /// `{cmd}` is replaced by the command, URL-encoded.
        url: String,
    },
    Mqtt {
        topic: String,
        #[serde(default = "cmd_placeholder")]
        payload: String,
    },
    Da {
        da: String,
        odf: String,
    },
    Delay {
        ms: u64,
    },
}

impl Driver {
    /// The driver's name, as the import format writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tplink { .. } => "tplink",
            Self::Http { .. } => "http",
            Self::Mqtt { .. } => "mqtt",
            Self::Da { .. } => "da",
            Self::Delay { .. } => "delay",
        }
    }
}

fn tplink_port() -> u16 {
    9999
}

fn cmd_placeholder() -> String {
    "{cmd}".into()
}

/// Whether a scene's items go out together or one after the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Parallel,
    Sequence,
}

/// A scene as written: a bare list of items, or a table with a mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SceneDoc {
    Items(Vec<String>),
    Full {
        #[serde(default)]
        mode: Mode,
        items: Vec<String>,
    },
}

impl SceneDoc {
    pub fn mode(&self) -> Mode {
        match self {
            Self::Items(_) => Mode::Parallel,
            Self::Full { mode, .. } => *mode,
        }
    }

    pub fn items(&self) -> &[String] {
        match self {
            Self::Items(i) | Self::Full { items: i, .. } => i,
        }
    }
}

/// The import format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub devices: BTreeMap<String, Driver>,
    /// By name; `name:command` is the variant of scene `name` for that command.
    #[serde(default)]
    pub scenes: BTreeMap<String, SceneDoc>,
}

/// One item of a scene: a target and, optionally, its own command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub target: String,
    pub cmd: Option<Command>,
}

/// Why a catalog was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("not valid TOML for a home catalog: {0}")]
    Toml(String),
    #[error("`{0}` is both a device and a scene")]
    Both(String),
    #[error("`{0}` is not a valid name: 1 to 64 letters, digits, `-`, `_` or `.`")]
    Name(String),
    #[error("device `{device}`: {why}")]
    Device { device: String, why: String },
    #[error("scene `{scene}`: item `{item}`: {why}")]
    Item {
        scene: String,
        item: String,
        why: String,
    },
    #[error("scene `{0}` is a variant of no scene")]
    Variant(String),
    #[error("scenes contain each other: {0}")]
    Cycle(String),
    #[error("scene `{scene}` has two variants for the same command: `{a}` and `{b}`")]
    SameVariant { scene: String, a: String, b: String },
    #[error("scene `{scene}` {why}")]
    TooBig { scene: String, why: String },
}

/// The most devices one run may reach (a scene listing a scene twice doubles its count).
pub const MAX_LEAVES: usize = 1000;
/// The deepest scenes may nest.
pub const MAX_DEPTH: usize = 32;

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars().count() <= 64
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits `target:command` (the command may itself contain `:`, as in `lamp:dim:30`).
pub fn parse_item(item: &str) -> Result<Item, String> {
    let (target, cmd) = match item.split_once(':') {
        Some((t, c)) => (t, Some(Command::parse(c).map_err(|e| e.to_string())?)),
        None => (item, None),
    };
    Ok(Item {
        target: target.trim().to_owned(),
        cmd,
    })
}

impl Catalog {
    /// Reads and checks the TOML import format.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let c = Catalog::read_toml(text)?;
        c.check()?;
        Ok(c)
    }

    /// Reads the TOML import format without checking it: a part to merge into a stored
    /// catalog may name targets only the stored one has (the merge is checked whole).
    pub fn read_toml(text: &str) -> Result<Catalog, CatalogError> {
        toml::from_str(text).map_err(|e| CatalogError::Toml(e.to_string()))
    }

    /// The import format's text of this catalog.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// The scene names without variants (`evening` for `evening` and `evening:off`).
    fn base_scenes(&self) -> BTreeSet<&str> {
        self.scenes
            .keys()
            .filter(|k| !k.contains(':'))
            .map(String::as_str)
            .collect()
    }

    pub fn check(&self) -> Result<(), CatalogError> {
        for (name, d) in &self.devices {
            if !valid_name(name) {
                return Err(CatalogError::Name(name.clone()));
            }
            let bad = |why: &str| CatalogError::Device {
                device: name.clone(),
                why: why.into(),
            };
            match d {
                Driver::Tplink { host, kind, .. } => {
                    if host.trim().is_empty() {
                        return Err(bad("`host` is empty"));
                    }
                    if kind != "plug" && kind != "bulb" {
                        return Err(bad("`kind` must be `plug` or `bulb`"));
                    }
                }
                Driver::Http { url } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(bad("`url` must start with http:// or https://"));
                    }
                }
                Driver::Mqtt { topic, .. } => {
                    if topic.is_empty() || topic.contains(['#', '+']) {
                        return Err(bad("`topic` must be a topic name without wildcards"));
                    }
                    if topic.starts_with("iottalk/home/") {
                        // A command topic would run a scene from itself; a state topic would
                        // forge a device's state.
                        return Err(bad("`topic` must not be under iottalk/home/"));
                    }
                }
                Driver::Da { da, odf } => {
                    if da.parse::<iot_proto::DaId>().is_err() || odf.is_empty() {
                        return Err(bad("`da` must be a DA id and `odf` a feature name"));
                    }
                }
                Driver::Delay { ms } => {
                    if *ms > 60_000 {
                        return Err(bad("`ms` is at most 60000"));
                    }
                }
            }
        }
        let bases = self.base_scenes();
        for (name, scene) in &self.scenes {
            let (base, variant) = match name.split_once(':') {
                Some((b, v)) => (b, Some(v)),
                None => (name.as_str(), None),
            };
            if !valid_name(base) {
                return Err(CatalogError::Name(name.clone()));
            }
            if let Some(v) = variant {
                let cmd = Command::parse(v).map_err(|_| CatalogError::Name(name.clone()))?;
                if !bases.contains(base) {
                    return Err(CatalogError::Variant(name.clone()));
                }
                if let Some(other) = self
                    .variants(base)
                    .find(|(k, c, _)| *c == cmd && *k != name.as_str())
                {
                    return Err(CatalogError::SameVariant {
                        scene: base.to_owned(),
                        a: other.0.to_owned(),
                        b: name.clone(),
                    });
                }
            }
            if self.devices.contains_key(base) {
                return Err(CatalogError::Both(base.to_owned()));
            }
            for item in scene.items() {
                let it = parse_item(item).map_err(|why| CatalogError::Item {
                    scene: name.clone(),
                    item: item.clone(),
                    why,
                })?;
                if !self.devices.contains_key(&it.target) && !bases.contains(it.target.as_str()) {
                    return Err(CatalogError::Item {
                        scene: name.clone(),
                        item: item.clone(),
                        why: "no device or scene of that name".into(),
                    });
                }
            }
        }
        self.check_cycles()?;
        self.check_size()
    }

    /// The variants of scene `base`: their key, command and scene.
    fn variants<'a>(
        &'a self,
        base: &'a str,
    ) -> impl Iterator<Item = (&'a str, Command, &'a SceneDoc)> + 'a {
        self.scenes.iter().filter_map(move |(k, s)| {
            let (b, v) = k.split_once(':')?;
            let cmd = Command::parse(v).ok()?;
            (b == base).then_some((k.as_str(), cmd, s))
        })
    }

    /// How many devices each scene reaches at most and how deep it nests, both bounded:
    /// the check runs after [`Self::check_cycles`], so the recursion ends.
    fn check_size(&self) -> Result<(), CatalogError> {
        let mut memo = BTreeMap::new();
        for base in self.base_scenes() {
            let (leaves, depth) = self.size(base, &mut memo);
            if leaves > MAX_LEAVES {
                return Err(CatalogError::TooBig {
                    scene: base.to_owned(),
                    why: format!("reaches {leaves} devices in one run (at most {MAX_LEAVES})"),
                });
            }
            if depth > MAX_DEPTH {
                return Err(CatalogError::TooBig {
                    scene: base.to_owned(),
                    why: format!("nests {depth} scenes deep (at most {MAX_DEPTH})"),
                });
            }
        }
        Ok(())
    }

    /// (devices reached, nesting depth) of scene `base`, the largest over its variants.
    fn size<'a>(
        &'a self,
        base: &'a str,
        memo: &mut BTreeMap<&'a str, (usize, usize)>,
    ) -> (usize, usize) {
        if let Some(known) = memo.get(base) {
            return *known;
        }
        let lists = self
            .scenes
            .get(base)
            .into_iter()
            .chain(self.variants(base).map(|(_, _, s)| s));
        let (mut leaves, mut depth) = (0usize, 1usize);
        for scene in lists {
            let mut sum = 0usize;
            for item in scene.items().iter().filter_map(|i| parse_item(i).ok()) {
                match self.scenes.get_key_value(item.target.as_str()) {
                    Some((k, _)) => {
                        let (l, d) = self.size(k, memo);
                        sum = sum.saturating_add(l);
                        depth = depth.max(d + 1);
                    }
                    None => sum = sum.saturating_add(1),
                }
            }
            leaves = leaves.max(sum);
        }
        memo.insert(base, (leaves, depth));
        (leaves, depth)
    }

    /// Scenes a scene (with its variants) names directly.
    fn children(&self, base: &str) -> BTreeSet<String> {
        self.scenes
            .iter()
            .filter(|(k, _)| {
                k.as_str() == base || k.split_once(':').is_some_and(|(b, _)| b == base)
            })
            .flat_map(|(_, s)| s.items().iter())
            .filter_map(|i| parse_item(i).ok())
            .map(|i| i.target)
            .filter(|t| self.scenes.contains_key(t))
            .collect()
    }

    fn check_cycles(&self) -> Result<(), CatalogError> {
        let mut done = BTreeSet::new();
        for start in self.base_scenes() {
            let mut path = Vec::new();
            self.visit(start, &mut path, &mut done)?;
        }
        Ok(())
    }

    fn visit(
        &self,
        scene: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), CatalogError> {
        if let Some(at) = path.iter().position(|p| p == scene) {
            let mut cycle = path[at..].to_vec();
            cycle.push(scene.to_owned());
            return Err(CatalogError::Cycle(cycle.join(" -> ")));
        }
        if done.contains(scene) {
            return Ok(());
        }
        path.push(scene.to_owned());
        for child in self.children(scene) {
            self.visit(&child, path, done)?;
        }
        path.pop();
        done.insert(scene.to_owned());
        Ok(())
    }

    /// The items scene `name` runs for command `cmd`: its variant for that command when it
    /// has one, else the plain scene.
    pub fn scene_for<'a>(&'a self, name: &'a str, cmd: Command) -> Option<&'a SceneDoc> {
        self.variants(name)
            .find(|(_, c, _)| *c == cmd)
            .map(|(_, _, s)| s)
            .or_else(|| self.scenes.get(name))
    }

    /// The TP-Link kind of a device's `kind` field (checked by [`Catalog::check`]).
    pub fn tplink_kind(kind: &str) -> Kind {
        if kind == "bulb" {
            Kind::Bulb
        } else {
            Kind::Plug
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[devices.lamp]
driver = "tplink"
host = "127.0.0.1"
port = 19999
kind = "bulb"

[devices.porch]
driver = "http"
url = "http://127.0.0.1:18080/porch/{cmd}"

[devices.pause]
driver = "delay"
ms = 500

[scenes]
evening = ["lamp:dim:30", "porch"]
"evening:off" = ["lamp", "porch"]

[scenes.wakeup]
mode = "sequence"
items = ["lamp:dim:10", "pause", "lamp:full"]
"#;

    #[test]
    fn the_documented_example_reads() {
        let c = Catalog::from_toml(EXAMPLE).unwrap();
        assert_eq!(c.devices.len(), 3);
        assert_eq!(
            c.devices["lamp"],
            Driver::Tplink {
                host: "127.0.0.1".into(),
                port: 19999,
                kind: "bulb".into()
            }
        );
        assert_eq!(c.scenes["wakeup"].mode(), Mode::Sequence);
        let text = c.to_toml().unwrap();
        assert_eq!(Catalog::from_toml(&text).unwrap(), c, "{text}");
        assert_eq!(c.scenes["evening"].mode(), Mode::Parallel);
        let off = c.scene_for("evening", Command::OFF).unwrap();
        assert_eq!(off.items(), ["lamp", "porch"]);
        let on = c.scene_for("evening", Command::ON).unwrap();
        assert_eq!(on.items(), ["lamp:dim:30", "porch"]);
        assert_eq!(
            parse_item("lamp:dim:30").unwrap(),
            Item {
                target: "lamp".into(),
                cmd: Some(Command { brightness: 30 })
            }
        );
    }

    #[test]
    fn variants_match_by_command_whatever_their_spelling() {
        let c = Catalog::from_toml(
            "[devices.a]\ndriver = \"delay\"\nms = 1\n[scenes]\ne = [\"a\"]\n\"e:med\" = []\n\"e:FULL\" = [\"a\", \"a\"]\n",
        )
        .unwrap();
        assert!(c
            .scene_for("e", Command::parse("dim:60").unwrap())
            .unwrap()
            .items()
            .is_empty());
        assert_eq!(c.scene_for("e", Command::ON).unwrap().items().len(), 2);
        assert_eq!(c.scene_for("e", Command::OFF).unwrap().items().len(), 1);
    }

    #[test]
    fn a_scene_that_reaches_too_many_devices_or_nests_too_deep_is_refused() {
        // s0 lists s1 twice, s1 lists s2 twice...: 2^11 devices from one command.
        let mut text = String::from("[devices.lamp]\ndriver = \"delay\"\nms = 1\n[scenes]\n");
        for i in 0..11 {
            text.push_str(&format!("s{i} = [\"s{n}\", \"s{n}\"]\n", n = i + 1));
        }
        text.push_str("s11 = [\"lamp\"]\n");
        let err = Catalog::from_toml(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "scene `s0` reaches 2048 devices in one run (at most 1000)"
        );
        let mut text = String::from("[devices.lamp]\ndriver = \"delay\"\nms = 1\n[scenes]\n");
        for i in 0..40 {
            text.push_str(&format!("s{i} = [\"s{}\"]\n", i + 1));
        }
        text.push_str("s40 = [\"lamp\"]\n");
        let err = Catalog::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("nests 41 scenes deep (at most 32)"), "{err}");
        let err =
            Catalog::from_toml("[devices.m]\ndriver = \"mqtt\"\ntopic = \"iottalk/home/cmd/x\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("must not be under iottalk/home/"), "{err}");
    }

    #[test]
    fn cycles_and_unknown_items_are_refused_by_name() {
        let text = r#"
[devices.lamp]
driver = "delay"
ms = 1
[scenes]
evening = ["porch-lights", "lamp"]
porch-lights = ["evening"]
"#;
        let err = Catalog::from_toml(text).unwrap_err().to_string();
        assert_eq!(
            err,
            "scenes contain each other: evening -> porch-lights -> evening"
        );
        let err = Catalog::from_toml("[scenes]\nx = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no device or scene"), "{err}");
        let err = Catalog::from_toml("[scenes]\nx = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "scenes contain each other: x -> x");
        assert!(Catalog::from_toml("[scenes]\n\"y:off\" = []\n").is_err());
        let err = Catalog::from_toml("[scenes]\ny = []\n\"y:off\" = []\n\"y:OFF\" = []\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "scene `y` has two variants for the same command: `y:off` and `y:OFF`"
        );
        assert!(Catalog::from_toml("[devices.a]\ndriver = \"warp\"\n").is_err());
        assert!(Catalog::from_toml(
            "[devices.a]\ndriver = \"tplink\"\nhost = \"h\"\nkind = \"toaster\"\n"
        )
        .is_err());
    }
}
