//! The table a `-R` run keeps: one dump of the kernel's table, shared by
//! every `-D` and `-U` line that selects entries, and kept up to date with
//! what the run itself changes. conntrack dumps the whole table for each
//! such line (2,000 `-U` lines against 50k entries: minutes); here a file
//! costs one dump. Entries are indexed by their original source address,
//! the usual selector of scripted lines (`-U -s A -m 1`), so a line with
//! one looks at that address's entries only.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::flow::Flow;

/// The kept table: the entries (a removed one leaves an empty slot, so
/// the index stays valid) and their slots by original source address.
#[derive(Debug, Default)]
pub struct KeptTable {
    flows: Vec<Option<Flow>>,
    by_src: HashMap<IpAddr, Vec<usize>>,
}

/// Whether two flows are the same table entry: the same original tuple in
/// the same zones.
pub fn same_entry(a: &Flow, b: &Flow) -> bool {
    a.family == b.family && a.orig == b.orig && a.orig_zone == b.orig_zone && a.zone == b.zone
}

impl KeptTable {
    /// A table of the entries of one dump.
    pub fn new(flows: Vec<Flow>) -> KeptTable {
        let mut t = KeptTable::default();
        for f in flows {
            t.add(f);
        }
        t
    }

    fn add(&mut self, f: Flow) {
        self.by_src
            .entry(f.orig.src)
            .or_default()
            .push(self.flows.len());
        self.flows.push(Some(f));
    }

    /// The slots to look at: those of original source `src`, or all.
    fn slots(&self, src: Option<IpAddr>) -> Vec<usize> {
        match src {
            Some(a) => self.by_src.get(&a).cloned().unwrap_or_default(),
            None => (0..self.flows.len()).collect(),
        }
    }

    /// The entries `pick` selects, in table order. `src` is the original
    /// source every selected entry has, when the selection names one.
    pub fn select(&self, src: Option<IpAddr>, pick: &dyn Fn(&Flow) -> bool) -> Vec<Flow> {
        self.slots(src)
            .into_iter()
            .filter_map(|i| self.flows.get(i).and_then(Option::as_ref))
            .filter(|f| pick(f))
            .cloned()
            .collect()
    }

    /// Puts an entry as the kernel now has it: replaces the same entry, or
    /// adds it.
    pub fn put(&mut self, f: Flow) {
        let at = self.slots(Some(f.orig.src)).into_iter().find(|&i| {
            self.flows
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|old| same_entry(old, &f))
        });
        match at.and_then(|i| self.flows.get_mut(i)) {
            Some(slot) => *slot = Some(f),
            None => self.add(f),
        }
    }

    /// Removes the entries `pick` selects (see [`KeptTable::select`]).
    pub fn remove_where(&mut self, src: Option<IpAddr>, pick: &dyn Fn(&Flow) -> bool) {
        for i in self.slots(src) {
            if let Some(slot) = self.flows.get_mut(i)
                && slot.as_ref().is_some_and(pick)
            {
                *slot = None;
            }
        }
    }

    /// Removes one entry.
    pub fn remove(&mut self, f: &Flow) {
        self.remove_where(Some(f.orig.src), &|old| same_entry(old, f));
    }

    /// Removes every entry of `family` (0: all), as a flush does.
    pub fn clear(&mut self, family: u8) {
        self.remove_where(None, &|f| family == 0 || f.family == family);
    }

    /// How many entries the table holds.
    pub fn len(&self) -> usize {
        self.flows.iter().flatten().count()
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::testutil::tcp4;
    use crate::flow::{AF_INET6, Tuple};

    fn flow(src: &str, sport: u16) -> Flow {
        let mut f = tcp4();
        f.orig.src = src.parse().unwrap();
        f.orig.sport = sport;
        f
    }

    #[test]
    fn select_put_and_remove() {
        let mut t = KeptTable::new(vec![
            flow("10.0.0.1", 1),
            flow("10.0.0.2", 2),
            flow("10.0.0.1", 3),
        ]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let all = |_: &Flow| true;
        assert_eq!(t.select(Some(a), &all).len(), 2);
        assert_eq!(t.select(None, &all).len(), 3);
        assert_eq!(t.select(None, &|f| f.orig.sport == 2).len(), 1);
        // replaced in place, not added
        let mut changed = flow("10.0.0.1", 3);
        changed.mark = Some(99);
        t.put(changed.clone());
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.select(Some(a), &|f| f.mark == Some(99)),
            vec![changed.clone()]
        );
        // a new entry is added, and found by its source
        t.put(flow("10.0.0.9", 9));
        assert_eq!(t.select(Some("10.0.0.9".parse().unwrap()), &all).len(), 1);
        t.remove(&changed);
        assert_eq!(t.select(Some(a), &all).len(), 1);
        t.remove_where(None, &|f| f.orig.sport == 2);
        assert_eq!(t.len(), 2);
        let mut v6 = flow("10.0.0.1", 5);
        v6.family = AF_INET6;
        v6.orig = Tuple {
            src: "fd00::1".parse().unwrap(),
            ..v6.orig
        };
        t.put(v6);
        t.clear(crate::flow::AF_INET);
        assert_eq!(t.len(), 1);
        t.clear(0);
        assert!(t.is_empty());
    }

    #[test]
    fn entries_differ_by_zone() {
        let a = flow("10.0.0.1", 1);
        let mut b = a.clone();
        assert!(same_entry(&a, &b));
        b.zone = Some(3);
        assert!(!same_entry(&a, &b));
        b = a.clone();
        b.orig_zone = Some(1);
        assert!(!same_entry(&a, &b));
    }
}
