//! Partitions written by an earlier Keel, indexed again from their stored
//! records.
//!
//! Keel's tantivy builds SSTable term dictionaries (the `quickwit`
//! feature: a fraction of the CPU of the FST dictionaries it built
//! before, which cost a third of log ingest). It cannot read an FST
//! dictionary, so a partition from before the switch is rebuilt from the
//! `raw` field, which holds every record whole: into `<start>.new`, then
//! swapped in (`<start>` → `<start>.old`, `<start>.new` → `<start>`,
//! `<start>.old` removed). A crash at any step leaves a complete partition
//! under one of the names, and [`finish_swaps`] completes or undoes the
//! step on the next open, so no record is lost.

use std::path::{Path, PathBuf};

use tantivy::{Index, TantivyDocument};

use super::{Committed, Fields, IndexError, Record, Stored, committed, io};

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Complete or undo a swap a crash interrupted, for every partition
/// under `parts_dir`.
pub(super) fn finish_swaps(parts_dir: &Path) -> Result<(), IndexError> {
    let entries: Vec<PathBuf> = std::fs::read_dir(parts_dir)
        .map_err(io(parts_dir))?
        .flatten()
        .map(|e| e.path())
        .collect();
    for old in entries
        .iter()
        .filter(|p| p.extension() == Some("old".as_ref()))
    {
        let dir = old.with_extension("");
        let new = with_suffix(&dir, ".new");
        if !dir.exists() && new.exists() {
            // The old one was moved aside: the new one is complete.
            std::fs::rename(&new, &dir).map_err(io(&new))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(old).map_err(io(old))?;
        } else {
            std::fs::rename(old, &dir).map_err(io(old))?;
        }
    }
    for new in entries
        .iter()
        .filter(|p| p.extension() == Some("new".as_ref()))
    {
        // Built only partly (the old one is still in place): start again.
        if new.exists() && new.with_extension("").exists() {
            std::fs::remove_dir_all(new).map_err(io(new))?;
        }
    }
    Ok(())
}

/// Does a segment of `index` hold a term dictionary this build cannot
/// read?
pub(super) fn unreadable(index: &Index) -> Result<bool, IndexError> {
    let schema = index.schema();
    let searcher = index.reader()?.searcher();
    let indexed: Vec<_> = schema
        .fields()
        .filter(|(_, e)| e.is_indexed())
        .map(|(f, _)| f)
        .collect();
    Ok(searcher
        .segment_readers()
        .iter()
        .any(|s| indexed.iter().any(|f| s.inverted_index(*f).is_err())))
}

/// Index the records of the partition at `dir` again with `schema`, swap
/// the result in, and return how many records it holds.
pub(super) fn rebuild<R: Record>(
    dir: &Path,
    schema: &tantivy::schema::Schema,
    fields: &Fields,
    writer_memory_bytes: usize,
) -> Result<u64, IndexError> {
    let old = Index::open_in_dir(dir)?;
    let payload: Committed = committed(&old);
    let old_raw = old.schema().get_field("raw")?;
    let new_dir = with_suffix(dir, ".new");
    if new_dir.exists() {
        std::fs::remove_dir_all(&new_dir).map_err(io(&new_dir))?;
    }
    std::fs::create_dir_all(&new_dir).map_err(io(&new_dir))?;
    let new = Index::create_in_dir(&new_dir, schema.clone())?;
    let mut writer: tantivy::IndexWriter = new.writer_with_num_threads(1, writer_memory_bytes)?;
    let searcher = old.reader()?.searcher();
    let (mut records, mut unreadable) = (0u64, 0u64);
    let total: u64 = searcher.num_docs();
    tracing::info!(dir = %dir.display(), records = total, "indexing a partition from an earlier Keel again");
    for segment in searcher.segment_readers() {
        let store = segment
            .get_store_reader(1)
            .map_err(|e| IndexError::Index(e.into()))?;
        for doc_id in segment.doc_ids_alive() {
            let doc: TantivyDocument = store.get(doc_id)?;
            let raw = doc
                .get_first(old_raw)
                .and_then(|v| tantivy::schema::Value::as_str(&v))
                .unwrap_or_default();
            match serde_json::from_str::<Stored<R>>(raw) {
                Ok(s) => {
                    let (doc, _) = super::document(schema, fields, s.seq, s.record);
                    writer.add_document(doc)?;
                    records += 1;
                    if records.is_multiple_of(100_000) {
                        tracing::info!(dir = %dir.display(), done = records, of = total, "indexing again");
                    }
                }
                Err(_) => unreadable += 1,
            }
        }
    }
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&serde_json::to_string(&payload).unwrap_or_default());
    prepared.commit()?;
    writer.wait_merging_threads()?;
    drop(searcher);
    drop(old);
    if unreadable > 0 {
        // Not expected (Keel wrote that JSON), but never thrown away: the
        // old partition is kept beside the new one for a person to look at.
        let kept = with_suffix(dir, ".unreadable");
        std::fs::rename(dir, &kept).map_err(io(dir))?;
        std::fs::rename(&new_dir, dir).map_err(io(&new_dir))?;
        tracing::warn!(
            kept = %kept.display(),
            unreadable,
            "records whose stored JSON did not parse are not in the rebuilt partition; the old one is kept"
        );
    } else {
        let aside = with_suffix(dir, ".old");
        std::fs::rename(dir, &aside).map_err(io(dir))?;
        std::fs::rename(&new_dir, dir).map_err(io(&new_dir))?;
        std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
    }
    tracing::info!(dir = %dir.display(), records, "partition from an earlier Keel indexed again");
    Ok(records)
}
