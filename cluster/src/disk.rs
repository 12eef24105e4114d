//! A node's disk: what its state machine persists, kept in an embedded engine (fjall).
//!
//! The state machine emits *deltas* (`Output::Persist`); its durable state is a lattice
//! ([`DurableState`]), split into records by [`DurableState::parts`]. The disk merges each
//! staged delta into the record it names (read, join, write back) and writes every staged
//! record of a batch in one engine batch: one sync per batch of inputs, not one per write
//! (group commit; the runtime holds the outputs that followed a `Persist` until
//! [`Disk::commit`] returns). At start, [`Disk::open`] joins every record back into the value
//! the node starts from.
//!
//! The engine is fjall (an LSM tree, pure Rust): docs/performance.md gives the measurements
//! that chose it over redb. Its journal makes a committed batch survive a process crash at
//! once, and a power failure once synced, which is what the sync policies choose between.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use squall_proto::DurableState;

/// When a node's persisted deltas are synced to stable storage.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Sync after every input that persisted anything, before its outputs run: one sync per
    /// write. Loses nothing acknowledged, in a process crash or a power failure.
    Always,
    /// Group commit: sync once per batch of inputs the node took together, before any output
    /// of the batch that followed a `Persist` runs. Loses nothing acknowledged either; a
    /// write waits for the batch's sync, so throughput does not fall to one sync per write.
    #[default]
    Batch,
    /// Write to the operating system's buffers before the outputs run, never sync. Survives a
    /// process crash (`kill -9`); a power failure or kernel crash may lose acknowledged writes
    /// of the last seconds, which peers then send back (the incarnation rule) if they hold
    /// them.
    Never,
}

impl SyncPolicy {
    fn mode(self) -> PersistMode {
        match self {
            Self::Always | Self::Batch => PersistMode::SyncAll,
            Self::Never => PersistMode::Buffer,
        }
    }
}

/// The data format this build writes; a directory holding another is refused.
/// Format 2 (this build): a last-writer-wins value may be a delete (a tombstone), which changed
/// its encoding; format 1 directories are refused, not misread.
const FORMAT: &[u8] = b"squall-store 2";
/// Where the format is recorded.
const FORMAT_KEY: &[u8] = b"format";
/// Unflushed writes the engine keeps in memory before it writes them out as a table (fjall's
/// default is 64 MiB): with the 8 MiB block cache, what a node's disk costs it in memory.
const MEMTABLE: u64 = 16 << 20;

/// Why a disk could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The engine failed (an I/O error, a full disk, a lock held by another process).
    #[error("data directory {dir}: {detail}")]
    Engine {
        /// The node's data directory.
        dir: PathBuf,
        /// What the engine said.
        detail: String,
    },
    /// The directory holds something this build cannot read: damaged records, or not a
    /// Squall store at all. The node refuses to start rather than start empty.
    #[error(
        "data directory {dir} is corrupt ({detail}); the node will not start empty over it: \
         restore it from a backup, or move it away to let peers repopulate the node"
    )]
    Corrupt {
        /// The node's data directory.
        dir: PathBuf,
        /// What did not decode.
        detail: String,
    },
    /// The directory was written by an incompatible version of Squall.
    #[error("data directory {dir} holds format {found:?}; this build reads {expected:?}")]
    Incompatible {
        /// The node's data directory.
        dir: PathBuf,
        /// The format found.
        found: String,
        /// The format this build reads.
        expected: String,
    },
}

/// What a node found on its disk at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Records read (for a storage node: one per key, and one for the incarnation).
    pub records: usize,
    /// Their size in bytes, encoded.
    pub bytes: u64,
}

/// A node's data directory, holding durable state of type `D`.
pub struct Disk<D> {
    dir: PathBuf,
    db: Database,
    records: Keyspace,
    policy: SyncPolicy,
    /// Records merged since the last commit, each the join of what the engine held and every
    /// delta staged for it.
    staged: BTreeMap<Vec<u8>, D>,
    _state: PhantomData<D>,
}

impl<D> std::fmt::Debug for Disk<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("dir", &self.dir).field("policy", &self.policy).finish()
    }
}

impl<D: DurableState + Serialize + DeserializeOwned> Disk<D> {
    /// Opens (or creates) the store in `dir` and joins every record into the state the node
    /// starts from. Refuses a directory of another format or with a record that does not
    /// decode.
    pub fn open(dir: &Path, policy: SyncPolicy) -> Result<(Self, D, Recovery), DiskError> {
        let disk = Self::engine(dir, policy)?;
        let mut state = D::default();
        let mut recovery = Recovery { records: 0, bytes: 0 };
        for record in disk.records.iter() {
            let (name, bytes) = record.into_inner().map_err(|e| classify(dir, e))?;
            let part: D = postcard::from_bytes(&bytes).map_err(|e| DiskError::Corrupt {
                dir: dir.to_owned(),
                detail: format!("record {:?}: {e}", String::from_utf8_lossy(&name)),
            })?;
            state.merge_delta(part);
            recovery.records += 1;
            recovery.bytes += bytes.len() as u64;
        }
        Ok((disk, state, recovery))
    }

    /// Opens the engine in `dir`, checking (or, for a new store, recording) the format.
    fn engine(dir: &Path, policy: SyncPolicy) -> Result<Self, DiskError> {
        let engine = |e: fjall::Error| classify(dir, e);
        let db =
            Database::builder(dir).worker_threads(1).cache_size(8 << 20).open().map_err(engine)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).map_err(engine)?;
        match meta.get(FORMAT_KEY).map_err(engine)? {
            Some(found) if &*found != FORMAT => {
                return Err(DiskError::Incompatible {
                    dir: dir.to_owned(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: String::from_utf8_lossy(FORMAT).into_owned(),
                });
            }
            Some(_) => {}
            None => {
                meta.insert(FORMAT_KEY, FORMAT).map_err(engine)?;
                db.persist(PersistMode::SyncAll).map_err(engine)?;
            }
        }
        let records = db
            .keyspace("records", || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE))
            .map_err(engine)?;
        Ok(Self {
            dir: dir.to_owned(),
            db,
            records,
            policy,
            staged: BTreeMap::new(),
            _state: PhantomData,
        })
    }

    /// The sync policy.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Merges `delta` into the records it names; nothing reaches the engine before
    /// [`Disk::commit`].
    pub fn stage(&mut self, delta: D) -> Result<(), DiskError> {
        for (name, part) in delta.parts() {
            let record = match self.staged.remove(&name) {
                Some(record) => record,
                None => self.read(&name)?,
            };
            let mut record = record;
            record.merge_delta(part);
            self.staged.insert(name, record);
        }
        Ok(())
    }

    /// Whether anything is staged.
    pub fn is_dirty(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Writes every staged record in one batch, synced as the policy says (always synced
    /// when `force_sync`: a node's start, whose new incarnation must survive anything).
    pub fn commit(&mut self, force_sync: bool) -> Result<(), DiskError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let mode = if force_sync { PersistMode::SyncAll } else { self.policy.mode() };
        let mut batch = self.db.batch().durability(Some(mode));
        for (name, record) in std::mem::take(&mut self.staged) {
            let bytes = postcard::to_allocvec(&record).map_err(|e| DiskError::Engine {
                dir: self.dir.clone(),
                detail: format!("encoding a record: {e}"),
            })?;
            batch.insert(&self.records, name, bytes);
        }
        batch.commit().map_err(|e| classify(&self.dir, e))
    }

    fn read(&self, name: &[u8]) -> Result<D, DiskError> {
        match self.records.get(name).map_err(|e| classify(&self.dir, e))? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| DiskError::Corrupt {
                dir: self.dir.clone(),
                detail: format!("record {:?}: {e}", String::from_utf8_lossy(name)),
            }),
            None => Ok(D::default()),
        }
    }
}

/// Sorts an engine error: damage and unreadable formats are [`DiskError::Corrupt`] (so the
/// node refuses to start over them); the rest (I/O, a full disk, a lock) stay engine errors.
fn classify(dir: &Path, e: fjall::Error) -> DiskError {
    let dir = dir.to_owned();
    match e {
        fjall::Error::InvalidVersion(found) => DiskError::Incompatible {
            dir,
            found: format!("fjall {found:?}"),
            expected: String::from_utf8_lossy(FORMAT).into_owned(),
        },
        fjall::Error::Io(io) => DiskError::Engine { dir, detail: io.to_string() },
        fjall::Error::Locked => DiskError::Engine {
            dir,
            detail: "locked by another process (is the node already running?)".to_owned(),
        },
        fjall::Error::Poisoned | fjall::Error::KeyspaceDeleted => {
            DiskError::Engine { dir, detail: format!("{e:?}") }
        }
        other => DiskError::Corrupt { dir, detail: format!("{other:?}") },
    }
}

#[cfg(test)]
mod tests {
    use squall_proto::kvs::Stored;
    use squall_proto::lattice::{LatticeValue, Lww, Stamp, WriterId};

    use super::*;

    fn lww(time: u64, payload: &'static str) -> LatticeValue {
        LatticeValue::Lww(Lww::new(Stamp::new(time, WriterId(1)), bytes::Bytes::from(payload)))
    }

    fn value(key: &str, time: u64, payload: &'static str) -> Stored {
        Stored::value(key, &lww(time, payload))
    }

    #[test]
    fn committed_deltas_come_back_merged_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, start, recovery) =
                Disk::<Stored>::open(dir.path(), SyncPolicy::Batch).unwrap();
            assert_eq!(start, Stored::default());
            assert_eq!(recovery.records, 0);
            disk.stage(Stored::incarnation(1)).unwrap();
            disk.stage(value("a", 2, "new")).unwrap();
            disk.commit(false).unwrap();
            // An older value for the same key and a lower incarnation merge, not overwrite.
            disk.stage(value("a", 1, "old")).unwrap();
            disk.stage(value("b", 1, "b")).unwrap();
            disk.stage(Stored::incarnation(0)).unwrap();
            disk.commit(false).unwrap();
        }
        let (_, state, recovery) = Disk::<Stored>::open(dir.path(), SyncPolicy::Batch).unwrap();
        let mut expected = Stored::incarnation(1);
        expected.merge_delta(value("a", 2, "new"));
        expected.merge_delta(value("b", 1, "b"));
        assert_eq!(state, expected);
        assert_eq!(recovery.records, 3, "the incarnation and two keys");
    }

    #[test]
    fn staged_deltas_are_lost_without_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _, _) = Disk::<Stored>::open(dir.path(), SyncPolicy::Never).unwrap();
            disk.stage(value("a", 1, "kept")).unwrap();
            disk.commit(false).unwrap();
            disk.stage(value("b", 1, "lost")).unwrap();
            assert!(disk.is_dirty());
        }
        let (_, state, _) = Disk::<Stored>::open(dir.path(), SyncPolicy::Never).unwrap();
        assert_eq!(state, value("a", 1, "kept"));
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
            meta.insert(FORMAT_KEY, b"squall-store 99").unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let err = Disk::<Stored>::open(dir.path(), SyncPolicy::Batch).unwrap_err();
        assert!(matches!(err, DiskError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("squall-store 99"), "{err}");
    }

    #[test]
    fn a_record_that_does_not_decode_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (disk, _, _) = Disk::<Stored>::open(dir.path(), SyncPolicy::Batch).unwrap();
            disk.records.insert(b"kbroken", [0xff_u8; 3]).unwrap();
            disk.db.persist(PersistMode::SyncAll).unwrap();
        }
        let err = Disk::<Stored>::open(dir.path(), SyncPolicy::Batch).unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("kbroken"), "{err}");
    }

    #[test]
    fn garbage_in_the_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("version"), b"this is not a fjall store").unwrap();
        let err = Disk::<Stored>::open(dir.path(), SyncPolicy::Batch).unwrap_err();
        assert!(matches!(err, DiskError::Corrupt { .. } | DiskError::Incompatible { .. }), "{err}");
    }
}
