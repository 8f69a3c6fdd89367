//! Offline key and partition maintenance (`facegate keys ...`, `facegate partitions drop`):
//! run against the data directory while the service is stopped, which `lock_data_dir`
//! enforces (the service holds the same lock while it serves).

use std::fs::File;
use std::path::Path;

use crate::directory::GalleryConfig;
use crate::gallery::{snapshot, store};
use crate::names::validate_partition;
use crate::seal::MasterKey;

const LOCK_FILE: &str = ".facegate.lock";

/// An exclusive lock on the data directory, held until the file is dropped: one server,
/// or one maintenance command, at a time.
pub fn lock_data_dir(root: &Path) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(root)?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(LOCK_FILE))?;
    // SAFETY: flock on a descriptor we own; it only takes an advisory lock.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "{} is in use by a running facegate (stop it first)",
            root.display()
        )));
    }
    Ok(f)
}

/// The partitions stored under the data directory, sorted.
pub fn partitions_on_disk(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| validate_partition(n).is_ok() && root.join(n).join(store::FILE_NAME).is_file())
        .collect();
    names.sort();
    Ok(names)
}

fn configured_key(cfg: &GalleryConfig) -> Result<MasterKey, String> {
    MasterKey::load(&cfg.encryption)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "gallery.encryption.mode is \"off\": there are no data keys to manage".to_string())
}

/// Wrap every partition's data key under `new` (the templates are not re-encrypted).
/// Safe to run again after an interruption: a partition already under `new` is left as
/// it is. Returns one line per partition.
pub fn rewrap(cfg: &GalleryConfig, new: &MasterKey) -> Result<Vec<String>, String> {
    let old = configured_key(cfg)?;
    let root = &cfg.data_dir;
    let mut lines = Vec::new();
    let mut failed = 0;
    for name in partitions_on_disk(root).map_err(|e| e.to_string())? {
        let dir = root.join(&name);
        let line = match store::Store::open(&dir, &name, cfg.max_templates_per_subject, Some(&old)) {
            Ok(mut s) => match s.rewrap(new) {
                Ok(()) => format!("{name}: data key re-wrapped under master key {}", new.id()),
                Err(e) => {
                    failed += 1;
                    format!("{name}: FAILED: {e}")
                }
            },
            Err(e) => match store::Store::open(&dir, &name, cfg.max_templates_per_subject, Some(new)) {
                Ok(_) => format!("{name}: already under master key {}", new.id()),
                Err(_) => {
                    failed += 1;
                    format!("{name}: FAILED: {e}")
                }
            },
        };
        lines.push(line);
    }
    if failed > 0 {
        return Err(format!("{failed} partition(s) not re-wrapped:\n{}", lines.join("\n")));
    }
    Ok(lines)
}

/// Re-encrypt one partition under a fresh data key; its index snapshot, sealed under the
/// old key, is removed (the next start rebuilds it). Returns the templates re-sealed.
pub fn rekey(cfg: &GalleryConfig, partition: &str) -> Result<usize, String> {
    validate_partition(partition).map_err(|e| e.to_string())?;
    let master = configured_key(cfg)?;
    let dir = cfg.data_dir.join(partition);
    if !dir.join(store::FILE_NAME).is_file() {
        return Err(format!("partition {partition:?} not found under {}", cfg.data_dir.display()));
    }
    let mut s = store::Store::open(&dir, partition, cfg.max_templates_per_subject, Some(&master)).map_err(|e| e.to_string())?;
    let n = s.rekey(partition, &master).map_err(|e| e.to_string())?;
    snapshot::remove(&dir)?;
    Ok(n)
}

/// Delete a whole partition: its data key and rows erased first (crypto-shredding: any
/// copy of its ciphertext that survives on the disk no longer opens), then its files.
pub fn drop_partition(cfg: &GalleryConfig, partition: &str) -> Result<(), String> {
    validate_partition(partition).map_err(|e| e.to_string())?;
    let dir = cfg.data_dir.join(partition);
    if !dir.join(store::FILE_NAME).is_file() {
        return Err(format!("partition {partition:?} not found under {}", cfg.data_dir.display()));
    }
    store::shred(&dir).map_err(|e| e.to_string())?;
    snapshot::remove(&dir)?;
    std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    std::fs::File::open(&cfg.data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())
}
