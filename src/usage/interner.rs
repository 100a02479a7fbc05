//! One shared copy of each repeated string (subscription ids, item names, notes, contract and
//! product ids): a month's records and assets repeat a few hundred names thousands of times.
//!
//! Bounded: past [`MAX_NAMES`] the set starts again. Sharing saves memory and is never a
//! record's identity (names are compared by their text everywhere), so a name met again after a
//! restart only gets a copy of its own; unbounded, the record checks kept every subscription
//! id of the month (~70 bytes each: 70 MB of a 1M-subscription month, most of its peak).

use std::sync::Arc;

use foldhash::HashSet;

/// Names held before the set starts again: ~1.1 MiB of short ids, more than the items and
/// names a month repeats and the subscriptions of several chunks of records. At 65,536 the
/// 1M-subscription month peaked at 64.6 MiB, 0.6 over its 64 MiB target.
pub const MAX_NAMES: usize = 1 << 14;

#[derive(Default)]
pub struct Interner {
    names: HashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `name`, made on first sight (or on first sight since the set
    /// started again).
    pub fn shared(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let shared: Arc<str> = name.into();
        self.names.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shared_and_the_set_stays_bounded() {
        let mut names = Interner::default();
        let first = names.shared("AS-1");
        assert!(Arc::ptr_eq(&first, &names.shared("AS-1")));
        for n in 0..3 * MAX_NAMES {
            let name = format!("AS-{n}");
            assert_eq!(&*names.shared(&name), name);
            assert!(names.names.len() <= MAX_NAMES);
        }
        // After the set started again, a name gets a new copy with the same text.
        assert_eq!(&*names.shared("AS-1"), "AS-1");
    }
}
