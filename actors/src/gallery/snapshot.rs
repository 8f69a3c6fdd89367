//! Snapshots of a trained IVF index, so that a large partition starts in seconds instead of
//! re-training (k-means over a sample) and re-assigning every template to its list.
//!
//! A snapshot is a directory holding the FAISS index file, the row ids it holds, and a
//! meta file. It is written whole into `snapshot.new/` and renamed into place, the old one
//! kept as `snapshot.old/` until then, so a crash at any instant leaves a usable snapshot
//! or none. It is never the only copy of anything: at load, templates stored after it are
//! added and templates deleted since are removed, from the store.

use std::fs;
use std::path::Path;

use faiss::index::ivf_flat::IVFFlatIndexImpl;
use serde::{Deserialize, Serialize};

const CURRENT: &str = "snapshot";
const NEW: &str = "snapshot.new";
const OLD: &str = "snapshot.old";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub dim: usize,
    pub nlist: u32,
    /// The highest store row id the snapshot covers.
    pub max_id: i64,
    pub templates: usize,
}

pub struct Snapshot {
    pub index: IVFFlatIndexImpl,
    pub ids: Vec<i64>,
    pub meta: Meta,
}

/// Write atomically (see the module documentation).
pub fn write(dir: &Path, index: &IVFFlatIndexImpl, ids: &[i64], meta: &Meta) -> Result<(), String> {
    let new = dir.join(NEW);
    let _ = fs::remove_dir_all(&new);
    fs::create_dir_all(&new).map_err(|e| e.to_string())?;
    faiss::write_index(index, new.join("index.faiss").to_string_lossy().as_ref()).map_err(|e| e.to_string())?;
    let id_bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    fs::write(new.join("ids.bin"), id_bytes).map_err(|e| e.to_string())?;
    fs::write(new.join("meta.json"), serde_json::to_vec(meta).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    for f in ["index.faiss", "ids.bin", "meta.json"] {
        fs::File::open(new.join(f)).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
    }
    let (current, old) = (dir.join(CURRENT), dir.join(OLD));
    let _ = fs::remove_dir_all(&old);
    if current.exists() {
        fs::rename(&current, &old).map_err(|e| e.to_string())?;
    }
    fs::rename(&new, &current).map_err(|e| e.to_string())?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// The newest complete snapshot matching `dim` and `nlist`, if any.
pub fn read(dir: &Path, dim: usize, nlist: u32) -> Option<Snapshot> {
    [dir.join(CURRENT), dir.join(OLD)]
        .into_iter()
        .find_map(|d| match read_one(&d, dim, nlist) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(snapshot = %d.display(), error = %e, "ignoring an unreadable index snapshot");
                None
            }
        })
}

fn read_one(d: &Path, dim: usize, nlist: u32) -> Result<Option<Snapshot>, String> {
    let Ok(meta) = fs::read(d.join("meta.json")) else { return Ok(None) };
    let meta: Meta = serde_json::from_slice(&meta).map_err(|e| e.to_string())?;
    if meta.dim != dim || meta.nlist != nlist {
        return Ok(None);
    }
    let bytes = fs::read(d.join("ids.bin")).map_err(|e| e.to_string())?;
    let ids: Vec<i64> = bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let index = faiss::read_index(d.join("index.faiss").to_string_lossy().as_ref())
        .and_then(|i| i.into_ivf_flat())
        .map_err(|e| e.to_string())?;
    if ids.len() != meta.templates {
        return Err(format!("{} ids for {} templates", ids.len(), meta.templates));
    }
    Ok(Some(Snapshot { index, ids, meta }))
}
