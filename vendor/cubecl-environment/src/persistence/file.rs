//! streamtrack: durable persistence in one append-only file per environment, in place of
//! the published crate's embedded Turso database.
//!
//! The file (`<environment>.kv` beside where the database would be) is a log of records; on
//! first use in a process it is read whole into memory and every later write is appended as
//! one record with a single `write` on a file opened for appending, so processes sharing a
//! root interleave whole records. Reading back is defensive, the file being outside the
//! program's control: every length is checked against the bytes left before anything is
//! allocated, every record carries a checksum, and the log ends at the first record that
//! fails either check (a torn write from a crash, a truncated or corrupt file), which is cut
//! off before the next append.
//!
//! Record layout, little-endian: `kind: u8`, `namespace_len: u32`, `key_len: u32`,
//! `value_len: u32`, `checksum: u64` (FNV-1a of everything else in the record), then the
//! namespace, key and value bytes. Kinds: an entry computed here, an imported entry, the
//! removal of one key, the purge of a whole namespace. A later record wins over an earlier
//! one, which is how a replaced entry reads back.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use hashbrown::HashMap;

use super::storage::{Entries, Insertion, NamespaceSummary, Origin, Storage, entries};
use crate::bytes::Bytes;
use crate::sync::{Arc, LazyLock, Mutex};

/// First bytes of every log file.
const MAGIC: &[u8; 8] = b"CCKVLOG1";
/// Bytes of a record before its namespace: kind, three lengths, checksum.
const HEADER: usize = 1 + 4 + 4 + 4 + 8;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Local = 0,
    Imported = 1,
    RemoveKey = 2,
    PurgeNamespace = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        [
            Self::Local,
            Self::Imported,
            Self::RemoveKey,
            Self::PurgeNamespace,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == byte)
    }

    fn stored(origin: Origin) -> Self {
        match origin {
            Origin::Local => Self::Local,
            Origin::Imported => Self::Imported,
        }
    }
}

/// One environment's log: the entries of every namespace it holds, and the file.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    namespaces: Mutex<HashMap<String, Arc<Mutex<Entries>>>>,
    /// The file opened for appending, once the first write needed it; `Err` with the reason
    /// once opening failed (then writes stay in memory, and the reason was logged once).
    file: Mutex<Option<Result<File, String>>>,
    /// Where a damaged file's valid prefix ended when it was read: the file is cut there
    /// before the first append (records another process appended since are lost with the
    /// damaged tail; they are cache entries, recomputed when missed).
    cut_at: Option<u64>,
}

/// The logs opened in this process, by path, so that every store of an environment shares
/// one log and one set of entries.
static LOGS: LazyLock<Mutex<HashMap<PathBuf, Arc<Log>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl Log {
    /// The log at `path`, read now if this process has not read it yet.
    fn shared(path: PathBuf) -> Arc<Log> {
        LOGS.lock()
            .entry(path.clone())
            .or_insert_with(|| Arc::new(Log::read(path)))
            .clone()
    }

    /// Reads the log at `path`; a missing or unreadable file is an empty log.
    fn read(path: PathBuf) -> Log {
        let bytes = std::fs::read(&path).unwrap_or_default();
        let mut namespaces: HashMap<String, Arc<Mutex<Entries>>> = HashMap::new();
        let valid_len = if bytes.starts_with(MAGIC) {
            MAGIC.len() + replay(&bytes[MAGIC.len()..], &mut namespaces)
        } else {
            0
        };
        if valid_len < bytes.len() {
            log::warn!(
                "{}: cache log damaged after byte {valid_len} of {}; the rest is dropped",
                path.display(),
                bytes.len()
            );
        }
        Log {
            path,
            namespaces: Mutex::new(namespaces),
            file: Mutex::new(None),
            cut_at: (valid_len < bytes.len()).then_some(valid_len as u64),
        }
    }

    fn namespace(&self, namespace: &str) -> Arc<Mutex<Entries>> {
        self.namespaces
            .lock()
            .entry(namespace.to_string())
            .or_default()
            .clone()
    }

    /// Appends one record; failures are logged (once) and leave the entry in memory only.
    fn append(&self, kind: Kind, namespace: &str, key: &[u8], value: &[u8]) {
        let mut file = self.file.lock();
        let file = file.get_or_insert_with(|| {
            self.open_for_append().map_err(|error| {
                let reason = format!("{}: {error}", self.path.display());
                log::warn!("cache entries stay in memory: cannot write {reason}");
                reason
            })
        });
        if let Ok(file) = file
            && let Err(error) = file.write_all(&record(kind, namespace, key, value))
        {
            log::warn!("{}: cache entry not written: {error}", self.path.display());
        }
    }

    /// Opens the file for appending, creating it with its magic, and cuts off a damaged tail.
    fn open_for_append(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        if let Some(len) = self.cut_at {
            file.set_len(len)?;
        }
        if file.metadata()?.len() == 0 {
            file.write_all(MAGIC)?;
        }
        Ok(file)
    }
}

/// Applies the records of `log` (the bytes after the magic) to `namespaces`; returns the
/// length of the valid prefix.
fn replay(log: &[u8], namespaces: &mut HashMap<String, Arc<Mutex<Entries>>>) -> usize {
    let mut at = 0;
    while let Some((record, len)) = parse(&log[at..]) {
        let entries = namespaces.entry(record.namespace.to_string()).or_default();
        let mut entries = entries.lock();
        match record.kind {
            Kind::Local | Kind::Imported => {
                let origin = if record.kind == Kind::Local {
                    Origin::Local
                } else {
                    Origin::Imported
                };
                let value = Bytes::from_bytes_vec(record.value.to_vec());
                entries.insert(record.key.to_vec(), (value, origin));
            }
            Kind::RemoveKey => {
                entries.remove(record.key);
            }
            Kind::PurgeNamespace => entries.clear(),
        }
        at += len;
    }
    at
}

/// One record read from a log.
struct Record<'a> {
    kind: Kind,
    namespace: &'a str,
    key: &'a [u8],
    value: &'a [u8],
}

/// The record at the start of `bytes` and its length; `None` when the bytes do not hold a
/// whole, intact record.
fn parse(bytes: &[u8]) -> Option<(Record<'_>, usize)> {
    let header = bytes.get(..HEADER)?;
    let kind = Kind::from_byte(header[0])?;
    let length = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap()) as usize;
    let (namespace_len, key_len, value_len) = (length(1), length(5), length(9));
    let checksum = u64::from_le_bytes(header[13..21].try_into().unwrap());
    let total = HEADER
        .checked_add(namespace_len)?
        .checked_add(key_len)?
        .checked_add(value_len)?;
    let body = bytes.get(HEADER..total)?;
    let (namespace, rest) = body.split_at(namespace_len);
    let (key, value) = rest.split_at(key_len);
    if fnv1a(&[&header[..13], body]) != checksum {
        return None;
    }
    let namespace = core::str::from_utf8(namespace).ok()?;
    Some((
        Record {
            kind,
            namespace,
            key,
            value,
        },
        total,
    ))
}

/// The bytes of one record.
fn record(kind: Kind, namespace: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + namespace.len() + key.len() + value.len());
    out.push(kind as u8);
    for part in [namespace.as_bytes(), key, value] {
        let len = u32::try_from(part.len()).expect("cache records are far below 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
    }
    let checksum = fnv1a(&[&out, namespace.as_bytes(), key, value]);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// 64-bit FNV-1a over the concatenation of `parts`.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// One namespace of an environment's log.
#[derive(Debug, Clone)]
pub struct FileStorage {
    namespace: String,
    entries: Arc<Mutex<Entries>>,
    log: Arc<Log>,
}

impl FileStorage {
    /// `namespace` of the active environment, kept in `<environment>.kv` beside the path
    /// the environment's database would have.
    pub(crate) fn in_environment(namespace: &str) -> Self {
        Self::of_log(
            Log::shared(crate::environment::path().with_extension("kv")),
            namespace,
        )
    }

    /// `namespace` of the log at `file`, read now whether or not this process read it
    /// before: an explicit storage for tests and tools, not shared with the environment's
    /// stores.
    pub fn open_file(file: &Path, namespace: &str) -> Self {
        Self::of_log(Arc::new(Log::read(file.to_path_buf())), namespace)
    }

    fn of_log(log: Arc<Log>, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            entries: log.namespace(namespace),
            log,
        }
    }

    /// The namespaces of the active environment's log that hold entries.
    pub(crate) fn summaries() -> Vec<NamespaceSummary> {
        let log = Log::shared(crate::environment::path().with_extension("kv"));
        let namespaces = log.namespaces.lock();
        namespaces
            .iter()
            .filter_map(|(name, entries)| {
                let entries = entries.lock();
                (!entries.is_empty()).then(|| NamespaceSummary {
                    namespace: name.clone(),
                    entries: entries.len() as u64,
                    bytes: entries
                        .iter()
                        .map(|(key, (value, _))| (key.len() + value.len()) as u64)
                        .sum(),
                })
            })
            .collect()
    }

    fn stored(&self, outcome: Insertion, key: &[u8], value: &[u8], origin: Origin) -> Insertion {
        if matches!(outcome, Insertion::Stored) {
            self.log
                .append(Kind::stored(origin), &self.namespace, key, value);
        }
        outcome
    }
}

impl Storage for FileStorage {
    fn get(&self, key: &[u8]) -> Option<Bytes> {
        entries::get(&self.entries.lock(), key)
    }

    fn insert(&self, key: &[u8], value: Bytes, origin: Origin) -> Insertion {
        let bytes = value.to_vec();
        let outcome = entries::insert(&mut self.entries.lock(), key, value, origin);
        self.stored(outcome, key, &bytes, origin)
    }

    fn replace(&self, key: &[u8], value: Bytes, origin: Origin) -> Insertion {
        let bytes = value.to_vec();
        let outcome = entries::replace(&mut self.entries.lock(), key, value, origin);
        self.stored(outcome, key, &bytes, origin)
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        entries::scan(&self.entries.lock(), visit)
    }

    fn purge(&self) {
        self.entries.lock().clear();
        self.log
            .append(Kind::PurgeNamespace, &self.namespace, &[], &[]);
    }

    fn purge_key(&self, key: &[u8]) {
        self.entries.lock().remove(key);
        self.log.append(Kind::RemoveKey, &self.namespace, key, &[]);
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.log.path.display(), self.namespace)
    }
}
