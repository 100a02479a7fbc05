//! One shared copy of each repeated string (subscription ids, item names, notes, contract and
//! product ids): a month's records and assets repeat a few hundred names thousands of times.

use std::sync::Arc;

use foldhash::HashSet;

#[derive(Default)]
pub struct Interner {
    names: HashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `name`, made on first sight.
    pub fn shared(&mut self, name: &str) -> Arc<str> {
        match self.names.get(name) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = name.into();
                self.names.insert(shared.clone());
                shared
            }
        }
    }
}
