//! Who each template belongs to, in about 4 bytes per template plus one entry per subject.
//!
//! Store row ids are dense (SQLite AUTOINCREMENT), so a vector indexed by row id maps a
//! template to a subject slot; each subject's name is held once. At a million templates
//! this bookkeeping is what decides whether a partition fits its memory budget beside
//! the 2 KB vector itself.

use std::collections::HashMap;
use std::sync::Arc;

const NONE: u32 = u32::MAX;

#[derive(Default)]
pub struct Subjects {
    /// Row id -> subject slot (NONE when the row is not in the index).
    by_id: Vec<u32>,
    /// Slot -> subject name and its number of templates (None: a free slot).
    slots: Vec<Option<(Arc<str>, u32)>>,
    lookup: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
    templates: usize,
}

impl Subjects {
    pub fn insert(&mut self, id: i64, subject: &str) {
        let Ok(row) = usize::try_from(id) else { return };
        if self.by_id.get(row).is_some_and(|s| *s != NONE) {
            return; // already known
        }
        let slot = match self.lookup.get(subject) {
            Some(slot) => *slot,
            None => {
                let name: Arc<str> = Arc::from(subject);
                let slot = match self.free.pop() {
                    Some(free) => {
                        self.slots[free as usize] = Some((name.clone(), 0));
                        free
                    }
                    None => {
                        self.slots.push(Some((name.clone(), 0)));
                        (self.slots.len() - 1) as u32
                    }
                };
                self.lookup.insert(name, slot);
                slot
            }
        };
        if let Some((_, n)) = &mut self.slots[slot as usize] {
            *n += 1;
        }
        if self.by_id.len() <= row {
            self.by_id.resize(row + 1, NONE);
        }
        self.by_id[row] = slot;
        self.templates += 1;
    }

    /// Forget a template; true if it was known.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(slot) = usize::try_from(id).ok().and_then(|row| self.by_id.get_mut(row)) else {
            return false;
        };
        let s = std::mem::replace(slot, NONE);
        if s == NONE {
            return false;
        }
        self.templates -= 1;
        let emptied = match &mut self.slots[s as usize] {
            Some((name, n)) => {
                *n -= 1;
                (*n == 0).then(|| name.clone())
            }
            None => None,
        };
        if let Some(name) = emptied {
            self.lookup.remove(&name);
            self.slots[s as usize] = None;
            self.free.push(s);
        }
        true
    }

    /// The subject slot and name of a template.
    pub fn of(&self, id: i64) -> Option<(u32, &str)> {
        let slot = *usize::try_from(id).ok().and_then(|row| self.by_id.get(row))?;
        self.slots.get(slot as usize)?.as_ref().map(|(name, _)| (slot, name.as_ref()))
    }

    pub fn contains(&self, subject: &str) -> bool {
        self.lookup.contains_key(subject)
    }

    pub fn subjects(&self) -> usize {
        self.lookup.len()
    }

    pub fn templates(&self) -> usize {
        self.templates
    }

    /// Every template's row id.
    pub fn ids(&self) -> Vec<i64> {
        self.by_id
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != NONE)
            .map(|(i, _)| i as i64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_subjects_and_reuses_slots() {
        let mut s = Subjects::default();
        s.insert(1, "a");
        s.insert(2, "a");
        s.insert(5, "b");
        assert_eq!((s.subjects(), s.templates()), (2, 3));
        assert_eq!(s.of(5).map(|x| x.1), Some("b"));
        assert!(s.remove(1) && !s.remove(1));
        assert!(s.contains("a"));
        assert!(s.remove(2));
        assert!(!s.contains("a"));
        s.insert(9, "c");
        assert_eq!(s.of(9).map(|x| x.0), Some(0), "the freed slot is reused");
        assert_eq!(s.ids(), vec![5, 9]);
        assert_eq!(s.of(3), None);
    }
}
