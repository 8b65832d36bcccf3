//! The web GUI's files (`ccm/assets/`), embedded in the binary: nothing to install or build.

/// `(path, content type, bytes)` of every asset; `/` serves `index.html`.
pub const ASSETS: &[(&str, &str, &[u8])] = &[(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("../assets/index.html"),
)];

/// The asset at `path` (without its leading `/`).
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}
