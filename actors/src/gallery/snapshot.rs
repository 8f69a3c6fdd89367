//! Snapshots of a trained IVF index, so that a large partition starts in seconds instead of
//! re-training (k-means over a sample) and re-assigning every template to its list.
//!
//! A snapshot is a directory holding the FAISS index file, the row ids it holds, and a
//! meta file. It is written whole into `snapshot.new/` and renamed into place, the old one
//! kept as `snapshot.old/` until then, so a crash at any instant leaves a usable snapshot
//! or none. It is never the only copy of anything: at load, templates stored after it are
//! added and templates deleted since are removed, from the store.
//!
//! With encryption on, the index is serialised to memory and written sealed under the
//! partition's data key (in 1 MiB chunks, bound to the partition and the snapshot's meta),
//! and so are its ids: no plaintext template reaches the disk. A snapshot holds the
//! templates of deleted subjects too, so a delete removes it (`remove`) before it is
//! answered; the actor writes a fresh one a minute after the last such delete, or at a
//! clean shutdown.

use std::fs;
use std::path::Path;

use faiss::index::ivf_flat::IVFFlatIndexImpl;
use faiss::index::{FromInnerPtr, IndexImpl, NativeIndex};
use serde::{Deserialize, Serialize};

use super::store::Codec;

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
    /// The index and ids files are sealed under the partition's data key.
    #[serde(default)]
    pub sealed: bool,
}

pub struct Snapshot {
    pub index: IVFFlatIndexImpl,
    pub ids: Vec<i64>,
    pub meta: Meta,
}

/// Write atomically (see the module documentation).
pub fn write(dir: &Path, index: &IVFFlatIndexImpl, ids: &[i64], meta: &Meta, codec: &Codec) -> Result<(), String> {
    let meta = Meta {
        sealed: codec.is_sealed(),
        ..meta.clone()
    };
    let meta_json = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    let new = dir.join(NEW);
    let _ = fs::remove_dir_all(&new);
    fs::create_dir_all(&new).map_err(|e| e.to_string())?;
    let id_bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    match codec.data_key() {
        None => {
            faiss::write_index(index, new.join("index.faiss").to_string_lossy().as_ref()).map_err(|e| e.to_string())?;
            fs::write(new.join("ids.bin"), id_bytes).map_err(|e| e.to_string())?;
        }
        Some((key, partition)) => {
            let plain = mem::serialize(index)?;
            let mut out = std::io::BufWriter::new(fs::File::create(new.join("index.faiss")).map_err(|e| e.to_string())?);
            key.seal_stream(plain.bytes(), &aad(partition, "index", &meta_json), &mut out)
                .map_err(|e| e.to_string())?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
            let mut sealed_ids = Vec::new();
            key.seal_stream(&id_bytes, &aad(partition, "ids", &meta_json), &mut sealed_ids)
                .map_err(|e| e.to_string())?;
            fs::write(new.join("ids.bin"), sealed_ids).map_err(|e| e.to_string())?;
        }
    }
    fs::write(new.join("meta.json"), &meta_json).map_err(|e| e.to_string())?;
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

/// Remove every snapshot of the partition (it holds templates the store no longer has).
/// True when one was there.
pub fn remove(dir: &Path) -> Result<bool, String> {
    let mut any = false;
    for d in [CURRENT, NEW, OLD] {
        let d = dir.join(d);
        if d.exists() {
            fs::remove_dir_all(&d).map_err(|e| format!("remove {}: {e}", d.display()))?;
            any = true;
        }
    }
    if any {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
    }
    Ok(any)
}

/// The newest complete snapshot matching `dim`, `nlist` and the partition's encryption, if
/// any.
pub fn read(dir: &Path, dim: usize, nlist: u32, codec: &Codec) -> Option<Snapshot> {
    [dir.join(CURRENT), dir.join(OLD)]
        .into_iter()
        .find_map(|d| match read_one(&d, dim, nlist, codec) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(snapshot = %d.display(), error = %e, "ignoring an unreadable index snapshot");
                None
            }
        })
}

fn read_one(d: &Path, dim: usize, nlist: u32, codec: &Codec) -> Result<Option<Snapshot>, String> {
    let Ok(meta_json) = fs::read(d.join("meta.json")) else {
        return Ok(None);
    };
    let meta: Meta = serde_json::from_slice(&meta_json).map_err(|e| e.to_string())?;
    if meta.dim != dim || meta.nlist != nlist || meta.sealed != codec.is_sealed() {
        return Ok(None);
    }
    let bytes = fs::read(d.join("ids.bin")).map_err(|e| e.to_string())?;
    let (ids, index) = match codec.data_key() {
        None => {
            let index = faiss::read_index(d.join("index.faiss").to_string_lossy().as_ref())
                .and_then(|i| i.into_ivf_flat())
                .map_err(|e| e.to_string())?;
            (to_ids(&bytes), index)
        }
        Some((key, partition)) => {
            let ids = key
                .open_stream(&bytes, &aad(partition, "ids", &meta_json))
                .map_err(|e| e.to_string())?;
            let sealed = fs::read(d.join("index.faiss")).map_err(|e| e.to_string())?;
            let plain = key
                .open_stream(&sealed, &aad(partition, "index", &meta_json))
                .map_err(|e| e.to_string())?;
            drop(sealed);
            (to_ids(&ids), mem::deserialize(&plain)?)
        }
    };
    if ids.len() != meta.templates {
        return Err(format!("{} ids for {} templates", ids.len(), meta.templates));
    }
    Ok(Some(Snapshot { index, ids, meta }))
}

fn to_ids(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

fn aad(partition: &str, part: &str, meta_json: &[u8]) -> Vec<u8> {
    [
        b"facegate/snapshot/v1\0",
        partition.as_bytes(),
        b"\0",
        part.as_bytes(),
        b"\0",
        meta_json,
    ]
    .concat()
}

/// FAISS index (de)serialisation through memory streams: its C API reads and writes a
/// `FILE *`, and a file on disk would hold the plaintext.
mod mem {
    use super::*;
    use zeroize::Zeroize;

    /// A buffer malloc'd by `open_memstream`: zeroed and freed when dropped.
    pub struct Buf {
        ptr: *mut libc::c_char,
        len: usize,
    }

    impl Buf {
        pub fn bytes(&self) -> &[u8] {
            if self.ptr.is_null() {
                return &[];
            }
            // SAFETY: open_memstream left `len` initialised bytes at `ptr`, owned by us.
            unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            if !self.ptr.is_null() {
                // SAFETY: as in `bytes`, and nothing else refers to the buffer; it was
                // allocated by the C library's malloc, so free() releases it.
                unsafe {
                    std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.len).zeroize();
                    libc::free(self.ptr as *mut libc::c_void);
                }
            }
        }
    }

    fn last_error() -> String {
        // SAFETY: FAISS returns a NUL-terminated thread-local message or null.
        unsafe {
            let p = faiss_sys::faiss_get_last_error();
            if p.is_null() {
                "unknown FAISS error".into()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    pub fn serialize(index: &IVFFlatIndexImpl) -> Result<Buf, String> {
        let mut buf = Buf {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: open_memstream writes the buffer's address and size through the two
        // pointers, which outlive the stream (closed below before they are read). The
        // index pointer is valid for the borrow of `index`; libc's FILE is the FILE FAISS
        // was compiled against.
        unsafe {
            let f = libc::open_memstream(&mut buf.ptr, &mut buf.len);
            if f.is_null() {
                return Err(format!("open_memstream: {}", std::io::Error::last_os_error()));
            }
            let rc = faiss_sys::faiss_write_index(index.inner_ptr() as *const faiss_sys::FaissIndex, f as *mut faiss_sys::FILE);
            let closed = libc::fclose(f);
            if rc != 0 {
                return Err(last_error());
            }
            if closed != 0 {
                return Err("writing the index to memory failed".into());
            }
        }
        Ok(buf)
    }

    pub fn deserialize(bytes: &[u8]) -> Result<IVFFlatIndexImpl, String> {
        if bytes.is_empty() {
            return Err("empty index".into());
        }
        let mut out: *mut faiss_sys::FaissIndex = std::ptr::null_mut();
        // SAFETY: the stream reads `bytes` (mode "r", never written through) and is closed
        // before this borrow ends; FAISS hands over ownership of the index it returns.
        unsafe {
            let f = libc::fmemopen(bytes.as_ptr() as *mut libc::c_void, bytes.len(), c"rb".as_ptr());
            if f.is_null() {
                return Err(format!("fmemopen: {}", std::io::Error::last_os_error()));
            }
            let rc = faiss_sys::faiss_read_index(
                f as *mut faiss_sys::FILE,
                faiss::index::io_flags::IoFlags::MEM_RESIDENT.into(),
                &mut out,
            );
            libc::fclose(f);
            if rc != 0 || out.is_null() {
                return Err(last_error());
            }
            IndexImpl::from_inner_ptr(out).into_ivf_flat().map_err(|e| e.to_string())
        }
    }
}
