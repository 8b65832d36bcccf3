//! The web GUI's files (`ccm/assets/`), embedded in the binary: nothing to install or build.
//! Plain HTML, CSS and JavaScript modules written by hand; `js/main.js` lists the pages.
//! A new file under `ccm/assets/` must be added to [`ASSETS`] to be served.

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// `(path, content type, bytes)` of every asset; `/` serves `index.html`.
#[rustfmt::skip]
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../assets/index.html")),
    ("app.css", CSS, include_bytes!("../assets/app.css")),
    ("js/main.js", JS, include_bytes!("../assets/js/main.js")),
    ("js/api.js", JS, include_bytes!("../assets/js/api.js")),
    ("js/dom.js", JS, include_bytes!("../assets/js/dom.js")),
    ("js/store.js", JS, include_bytes!("../assets/js/store.js")),
    ("js/devices.js", JS, include_bytes!("../assets/js/devices.js")),
    ("js/models.js", JS, include_bytes!("../assets/js/models.js")),
    ("js/editor.js", JS, include_bytes!("../assets/js/editor.js")),
    ("js/functions.js", JS, include_bytes!("../assets/js/functions.js")),
    ("js/projects.js", JS, include_bytes!("../assets/js/projects.js")),
    ("js/project.js", JS, include_bytes!("../assets/js/project.js")),
    ("js/panel.js", JS, include_bytes!("../assets/js/panel.js")),
    ("js/monitor.js", JS, include_bytes!("../assets/js/monitor.js")),
    ("js/home.js", JS, include_bytes!("../assets/js/home.js")),
    ("js/home-catalog.js", JS, include_bytes!("../assets/js/home-catalog.js")),
];

/// The asset at `path` (without its leading `/`).
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `ccm/assets/` is served, and every module a page imports exists.
    #[test]
    fn every_asset_is_listed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    on_disk.push(rel);
                }
            }
        }
        for f in &on_disk {
            assert!(get(f).is_some(), "ccm/assets/{f} is not in ASSETS");
        }
        for (path, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let target = spec.strip_prefix("./").unwrap_or(spec);
                assert!(
                    get(&format!("js/{target}")).is_some(),
                    "{path} imports {spec}, which is not an asset"
                );
            }
        }
    }
}
