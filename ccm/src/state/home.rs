//! Changes to the home catalog: merged or replaced as a whole, checked as a whole (a cycle or
//! an item naming no target refuses the change and keeps the catalog as it was).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Kind, State};
use crate::error::CcmError;
use crate::home::catalog::{Catalog, Driver, SceneDoc};

/// The document name of the catalog.
const DOC: &str = "catalog";

impl State {
    /// Adds (or overwrites, by name) the devices and scenes of `c`; with `replace`, `c` becomes
    /// the whole catalog.
    pub fn put_home(&mut self, c: Catalog, replace: bool) -> Result<Arc<Catalog>, CcmError> {
        let mut next = if replace {
            Catalog::default()
        } else {
            (*self.home).clone()
        };
        next.devices.extend(c.devices);
        next.scenes.extend(c.scenes);
        self.set_home(next)
    }

    /// Replaces every device (scenes stay).
    pub fn put_home_devices(
        &mut self,
        devices: BTreeMap<String, Driver>,
    ) -> Result<Arc<Catalog>, CcmError> {
        let next = Catalog {
            devices,
            scenes: self.home.scenes.clone(),
        };
        self.set_home(next)
    }

    /// Replaces every scene (devices stay).
    pub fn put_home_scenes(
        &mut self,
        scenes: BTreeMap<String, SceneDoc>,
    ) -> Result<Arc<Catalog>, CcmError> {
        let next = Catalog {
            devices: self.home.devices.clone(),
            scenes,
        };
        self.set_home(next)
    }

    fn set_home(&mut self, next: Catalog) -> Result<Arc<Catalog>, CcmError> {
        next.check().map_err(|e| CcmError::invalid(e.to_string()))?;
        self.home = Arc::new(next);
        self.touch(Kind::Home, DOC);
        Ok(self.home.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_is_checked_whole_and_a_refusal_keeps_the_catalog() {
        let mut s = State::default();
        let c = Catalog::from_toml("[devices.a]\ndriver = \"delay\"\nms = 1\n").unwrap();
        s.put_home(c, false).unwrap();
        let more = Catalog::read_toml(
            "[devices.b]\ndriver = \"delay\"\nms = 2\n[scenes]\nx = [\"a\", \"b\"]\n",
        )
        .unwrap();
        s.put_home(more, false).unwrap();
        assert_eq!(s.home.devices.len(), 2);
        assert_eq!(s.take_touched().len(), 1);
        // Removing a device a scene names is refused.
        let err = s.put_home_devices(BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("no device or scene"), "{err}");
        assert_eq!(s.home.devices.len(), 2);
        let doc = s.doc(Kind::Home, DOC).unwrap();
        let mut again = State::default();
        again.load("home", DOC, &doc).unwrap();
        assert_eq!(again.home, s.home);
        s.put_home(Catalog::default(), true).unwrap();
        assert!(s.home.devices.is_empty() && s.home.scenes.is_empty());
    }
}
