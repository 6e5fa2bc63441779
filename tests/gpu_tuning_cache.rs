//! The file storage behind the GPU autotune cache (our copy of `cubecl-environment`, see
//! `vendor/README.md`): entries survive a restart, and a damaged or hostile file costs
//! cache entries, never a crash or a large allocation.

use std::path::{Path, PathBuf};

use cubecl_environment::bytes::Bytes;
use cubecl_environment::persistence::{FileStorage, Insertion, Origin, Storage};

/// A fresh file path in the system's temporary folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamtrack-tuning-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn bytes(text: &str) -> Bytes {
    Bytes::from_bytes_vec(text.as_bytes().to_vec())
}

fn value(storage: &FileStorage, key: &str) -> Option<String> {
    storage
        .get(key.as_bytes())
        .map(|v| String::from_utf8(v.to_vec()).expect("utf-8 values"))
}

fn entries(storage: &FileStorage) -> usize {
    let mut count = 0;
    storage.scan(&mut |_, _| count += 1);
    count
}

#[test]
fn entries_survive_a_restart_with_the_storage_contract() {
    let path = scratch("restart.kv");
    let matmul = FileStorage::open_file(&path, "autotune/wgpu-0/matmul");
    let reduce = FileStorage::open_file(&path, "autotune/wgpu-0/reduce");
    assert_eq!(
        matmul.insert(b"64x64", bytes("tiled"), Origin::Local),
        Insertion::Stored
    );
    assert_eq!(
        matmul.insert(b"64x64", bytes("simple"), Origin::Local),
        Insertion::Conflict(bytes("tiled")),
        "insert-only between local values"
    );
    matmul.insert(b"8x8", bytes("imported"), Origin::Imported);
    assert_eq!(
        matmul.insert(b"8x8", bytes("local"), Origin::Local),
        Insertion::Stored,
        "a local value replaces an imported one"
    );
    matmul.replace(b"64x64", bytes("repaired"), Origin::Local);
    matmul.insert(b"gone", bytes("x"), Origin::Local);
    matmul.purge_key(b"gone");
    reduce.insert(b"k", bytes("v"), Origin::Local);
    let purged = FileStorage::open_file(&path, "autotune/wgpu-0/old");
    purged.insert(b"k", bytes("v"), Origin::Local);
    purged.purge();

    // A new process reads the file back.
    let matmul = FileStorage::open_file(&path, "autotune/wgpu-0/matmul");
    assert_eq!(value(&matmul, "64x64").as_deref(), Some("repaired"));
    assert_eq!(value(&matmul, "8x8").as_deref(), Some("local"));
    assert_eq!(value(&matmul, "gone"), None);
    assert_eq!(entries(&matmul), 2);
    let reduce = FileStorage::open_file(&path, "autotune/wgpu-0/reduce");
    assert_eq!(value(&reduce, "k").as_deref(), Some("v"));
    assert_eq!(
        entries(&FileStorage::open_file(&path, "autotune/wgpu-0/old")),
        0
    );
}

/// Appends `tail` to the log at `path`.
fn append(path: &Path, tail: &[u8]) {
    let mut bytes = std::fs::read(path).expect("log written");
    bytes.extend_from_slice(tail);
    std::fs::write(path, bytes).expect("log rewritten");
}

#[test]
fn a_damaged_tail_is_dropped_and_cut_off_before_the_next_write() {
    let path = scratch("torn.kv");
    let storage = FileStorage::open_file(&path, "ns");
    storage.insert(b"kept", bytes("1"), Origin::Local);
    storage.insert(b"torn", bytes("2"), Origin::Local);
    // A crash in the middle of the last record's write.
    let whole = std::fs::read(&path).expect("log written");
    std::fs::write(&path, &whole[..whole.len() - 3]).expect("log cut");

    let storage = FileStorage::open_file(&path, "ns");
    assert_eq!(value(&storage, "kept").as_deref(), Some("1"));
    assert_eq!(value(&storage, "torn"), None);
    storage.insert(b"after", bytes("3"), Origin::Local);

    let storage = FileStorage::open_file(&path, "ns");
    assert_eq!(value(&storage, "kept").as_deref(), Some("1"));
    assert_eq!(
        value(&storage, "after").as_deref(),
        Some("3"),
        "the record written after the torn one reads back"
    );
}

#[test]
fn hostile_files_cost_entries_not_memory_or_a_crash() {
    let path = scratch("hostile.kv");
    let storage = FileStorage::open_file(&path, "ns");
    storage.insert(b"good", bytes("1"), Origin::Local);
    let good = std::fs::read(&path).expect("log written");

    // A record header declaring 4 GiB lengths: must be rejected before any allocation.
    let mut huge = vec![0u8];
    huge.extend_from_slice(&[0xff; 12]);
    huge.extend_from_slice(&[0; 8]);
    append(&path, &huge);
    let storage = FileStorage::open_file(&path, "ns");
    assert_eq!(value(&storage, "good").as_deref(), Some("1"));
    assert_eq!(entries(&storage), 1);

    // A flipped byte inside a record: the checksum drops it and everything after it.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&path, &flipped).expect("log rewritten");
    assert_eq!(entries(&FileStorage::open_file(&path, "ns")), 0);

    // Not a log at all: read as empty, then rewritten as a log by the next write.
    std::fs::write(&path, b"SQLite format 3\0 and then some").expect("file written");
    let storage = FileStorage::open_file(&path, "ns");
    assert_eq!(entries(&storage), 0);
    storage.insert(b"fresh", bytes("4"), Origin::Local);
    let storage = FileStorage::open_file(&path, "ns");
    assert_eq!(value(&storage, "fresh").as_deref(), Some("4"));
    assert_eq!(entries(&storage), 1);
}
