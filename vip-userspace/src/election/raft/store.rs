//! The persisted part of the Raft state: the current term and whom we voted for in it.
//!
//! Raft's only durable promise in an election-only cluster is "one vote per term". A node
//! that forgot its vote after a restart could vote again in the same term and let two
//! candidates win it. So every change is on disk (temp file, fsync, rename, fsync of the
//! directory) before any message that depends on it leaves the node.
//!
//! It also holds the boot *epoch* that makes every datagram's counter unique (see
//! `auth.rs`): raised and made durable on every start, before the first datagram leaves.
use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{core::HardState, RaftError};

const FILE: &str = "raft-state.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// The node id that wrote the file: a state directory copied to (or shared with) another
    /// node would hand it someone else's vote.
    id: u64,
    term: u64,
    voted_for: Option<u64>,
    /// Boot epoch of the last start (absent in files written before authentication: 0).
    #[serde(default)]
    epoch: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    path: PathBuf,
    id: u64,
    /// This start's epoch, written with every save.
    epoch: u64,
}

impl Store {
    /// Open (creating the directory) and load the state; a missing file is term 0, no vote.
    pub fn open(dir: &Path, id: u64) -> Result<(Store, HardState), RaftError> {
        fs::create_dir_all(dir).map_err(|source| RaftError::State {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            path: dir.join(FILE),
            id,
            epoch: 0,
        };
        let (hs, epoch) = store.load_all()?;
        store.epoch = epoch;
        Ok((store, hs))
    }

    /// Start a new boot epoch: `max(last + 1, unix_secs)`, durable before it is returned.
    /// The clock term keeps epochs rising even if the file is lost (as long as the clock
    /// is not set back and starts are less frequent than one a second on average).
    pub fn begin_epoch(&mut self, hs: &HardState, unix_secs: u64) -> Result<u64, RaftError> {
        self.epoch = (self.epoch + 1).max(unix_secs);
        self.save(hs)?;
        Ok(self.epoch)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub fn load(&self) -> Result<HardState, RaftError> {
        self.load_all().map(|(hs, _)| hs)
    }

    fn load_all(&self) -> Result<(HardState, u64), RaftError> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((HardState::default(), 0))
            }
            Err(source) => {
                return Err(RaftError::State {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        // A file we can't read is an error, never "start from term 0": that would forget a
        // vote and is exactly the double vote this file exists to prevent.
        let d: OnDisk = serde_json::from_slice(&text).map_err(|e| RaftError::Corrupt {
            path: self.path.clone(),
            reason: crate::Chain(&e).to_string(),
        })?;
        if d.version != VERSION {
            return Err(RaftError::Corrupt {
                path: self.path.clone(),
                reason: format!("version {} (expected {VERSION})", d.version),
            });
        }
        if d.id != self.id {
            return Err(RaftError::Corrupt {
                path: self.path.clone(),
                reason: format!("written by node {} but this is node {}", d.id, self.id),
            });
        }
        Ok((
            HardState {
                term: d.term,
                voted_for: d.voted_for,
            },
            d.epoch,
        ))
    }

    /// Durably replace the state: write aside, fsync, rename over, fsync the directory (so
    /// the rename itself survives a power cut).
    pub fn save(&self, hs: &HardState) -> Result<(), RaftError> {
        let io = |source| RaftError::State {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(&OnDisk {
            version: VERSION,
            id: self.id,
            term: hs.term,
            voted_for: hs.voted_for,
            epoch: self.epoch,
        })
        .map_err(|e| RaftError::Corrupt {
            path: self.path.clone(),
            reason: crate::Chain(&e).to_string(),
        })?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&body).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &self.path).map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::election::raft::{
        core::{Core, Msg},
        test_support::{cfg, tempdir},
    };

    #[test]
    fn persisted_vote_survives_reload_and_is_not_given_twice() {
        let d = tempdir("store");
        let (store, hs) = Store::open(&d, 1).unwrap();
        assert_eq!(hs, HardState::default());
        // Node 1 votes for 2 in term 5 and persists it, as the I/O loop does.
        let members = BTreeSet::from([1, 2, 3]);
        let timing = cfg(&d).timing();
        let t0 = Instant::now();
        let mut c = Core::new(1, &members, timing, hs, t0);
        let later = t0 + Duration::from_millis(150);
        c.step(
            later,
            2,
            Msg::Vote {
                term: 5,
                transfer: false,
            },
        );
        store.save(&c.hard_state()).unwrap();
        drop(c);
        // Restart: same directory, fresh core.
        let (store, hs) = Store::open(&d, 1).unwrap();
        assert_eq!(
            hs,
            HardState {
                term: 5,
                voted_for: Some(2)
            }
        );
        let t1 = Instant::now();
        let mut c = Core::new(1, &members, timing, hs, t1);
        let later = t1 + Duration::from_millis(150);
        c.step(
            later,
            3,
            Msg::Vote {
                term: 5,
                transfer: true,
            },
        );
        c.step(
            later,
            2,
            Msg::Vote {
                term: 5,
                transfer: false,
            },
        );
        let out = c.take_out();
        assert!(
            matches!(
                out[0].1,
                Msg::VoteResp {
                    term: 5,
                    granted: false
                }
            ),
            "{out:?}"
        );
        assert!(
            matches!(
                out[1].1,
                Msg::VoteResp {
                    term: 5,
                    granted: true
                }
            ),
            "{out:?}"
        );
        // A new term is a new vote, and is persisted as such.
        c.step(
            later,
            3,
            Msg::Vote {
                term: 6,
                transfer: false,
            },
        );
        store.save(&c.hard_state()).unwrap();
        assert_eq!(
            store.load().unwrap(),
            HardState {
                term: 6,
                voted_for: Some(3)
            }
        );
        assert!(!d.join("raft-state.json.tmp").exists());
        // Every start a higher boot epoch, kept by the saves in between (auth.rs relies on
        // it); the clock term when it is ahead, the counter when the clock is behind.
        let (mut store, hs) = Store::open(&d, 1).unwrap();
        let e1 = store.begin_epoch(&hs, 1_000).unwrap();
        store.save(&hs).unwrap();
        let (mut store, hs) = Store::open(&d, 1).unwrap();
        let e2 = store.begin_epoch(&hs, 5).unwrap();
        assert_eq!((e1, e2), (1_000, 1_001));
        assert_eq!(
            store.load().unwrap().term,
            6,
            "the epoch leaves term and vote alone"
        );
        // Another node's state, or garbage, is refused rather than read as term 0.
        assert!(matches!(Store::open(&d, 2), Err(RaftError::Corrupt { .. })));
        std::fs::write(d.join("raft-state.json"), b"{not json").unwrap();
        assert!(matches!(Store::open(&d, 1), Err(RaftError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }
}
