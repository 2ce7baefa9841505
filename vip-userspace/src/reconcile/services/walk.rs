//! One pass: the wanted services against the applied ones, as one walk of two sorted lists.
//! Apart from writing a service (`one`) because this is the part whose cost grows with the
//! number of services, and the order it keeps (removals, then each service's flip, then the
//! retired backends) is what keeps a packet from reaching a backend that is gone.
use std::collections::BTreeMap;

use super::{key_of, Changes, Retired, ServiceError, ServiceSync, SvcKey};
use crate::model::Service;

impl ServiceSync {
    /// Make the maps serve exactly `desired`. A service that cannot be placed fails alone
    /// (in `Changes::failed`, nothing of it live) and one whose backends do not all fit is
    /// served by those that do (and reported): removals always take effect. Only a failure
    /// to remove or retire what is gone is an error of the whole pass.
    pub fn apply(&mut self, desired: &[Service]) -> Result<Changes, ServiceError> {
        let mut ch = Changes::default();
        let mut deactivate = Vec::new();
        let want = wanted(desired);
        let (gone, todo) = self.diff(&want);
        for k in gone {
            self.remove(k, &mut deactivate)?;
            ch.removed += 1;
            ch.touched.push(k);
        }

        for (k, svc) in todo {
            ch.touched.push(k);
            if let Err(e) = self.apply_one(k, svc, &mut ch, &mut deactivate) {
                ch.failed.push((k, e));
            }
        }

        self.retire(deactivate)?;
        Ok(ch)
    }

    /// One walk of both sorted lists: what is gone, and what to apply (new, or not applied
    /// as it is wanted now); no lookup per service.
    fn diff<'s>(
        &self,
        want: &[(SvcKey, &'s Service)],
    ) -> (Vec<SvcKey>, Vec<(SvcKey, &'s Service)>) {
        let mut gone: Vec<SvcKey> = Vec::new();
        let mut todo: Vec<(SvcKey, &Service)> = Vec::new();
        let mut applied = self.applied.iter().peekable();
        for &(k, svc) in want {
            while let Some((a, _)) = applied.next_if(|(a, _)| **a < k) {
                gone.push(*a);
            }
            match applied.next_if(|(a, _)| **a == k) {
                Some((_, a)) if a.serves(svc) => {}
                _ => todo.push((k, svc)),
            }
        }
        gone.extend(applied.map(|(a, _)| *a));
        (gone, todo)
    }

    /// A service no longer wanted: its entry out of the map, its id and region given back,
    /// its backends to `deactivate`.
    fn remove(&mut self, k: SvcKey, deactivate: &mut Vec<Retired>) -> Result<(), ServiceError> {
        self.maps.remove_service(k)?;
        if let Some(a) = self.applied.remove(&k) {
            deactivate.extend(self.drop_backends(k, &[]));
            self.free_sids.push(a.id);
            if let Some(r) = a.region {
                self.free_region(&r);
            }
        }
        Ok(())
    }

    /// Only now, with every flip done, may a backend stop being valid.
    /// An id handed to the other family later finds its old entry here inactive (and gets a
    /// new generation, `acquire_backend`).
    fn retire(&mut self, deactivate: Vec<Retired>) -> Result<(), ServiceError> {
        for (family, id) in deactivate {
            self.maps.deactivate_backend(family, id)?;
            self.free_bids.push(id);
        }
        Ok(())
    }
}

/// In key order, one per key: as given when sorted (the plan's are), else sorted here
/// (the first of a key wins). Then what is gone is one walk beside `applied`.
fn wanted(desired: &[Service]) -> Vec<(SvcKey, &Service)> {
    let want: Vec<(SvcKey, &Service)> = if crate::model::sorted_unique(desired) {
        desired.iter().map(|s| (key_of(s), s)).collect()
    } else {
        let mut m: BTreeMap<SvcKey, &Service> = BTreeMap::new();
        for s in desired {
            m.entry(key_of(s)).or_insert(s);
        }
        m.into_iter().collect()
    };
    debug_assert!(want.windows(2).all(|w| w[0].0 < w[1].0));
    want
}
