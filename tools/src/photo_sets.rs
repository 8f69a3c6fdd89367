//! The photo sets the speed benchmarks run on: what access-control cameras and enrolment
//! desks send, from thumbnails to 2.5-megapixel phone photos.

use std::path::{Path, PathBuf};

/// Photos per set read from a folder.
const FROM_A_FOLDER: usize = 40;

pub struct PhotoSet {
    pub name: String,
    pub photos: Vec<Vec<u8>>,
}

/// The sets named (a file, or a folder whose first 40 images, sorted, form one set), or
/// by default: 40 LFW photos (150x150), obama2.jpg (626x1200), deepface's img2.jpg
/// (1536x1152, progressive) and img1.jpg (1382x1868), those of them that are present.
pub fn load(given: &[PathBuf]) -> Result<Vec<PhotoSet>, String> {
    if !given.is_empty() {
        return given.iter().map(|p| set_of(p)).collect();
    }
    let shared = crate::config::resolve(Path::new("../shared/data/faces"));
    let defaults = [
        shared.join("lfw/images"),
        crate::config::resolve(Path::new("models/testdata/obama2.jpg")),
        shared.join("deepface/flat/img2.jpg"),
        shared.join("deepface/flat/img1.jpg"),
    ];
    defaults.iter().filter(|p| p.exists()).map(|p| set_of(p)).collect()
}

fn set_of(path: &Path) -> Result<PhotoSet, String> {
    let files = if path.is_dir() {
        let mut all = crate::enrol_dir::images(path);
        all.sort();
        all.truncate(FROM_A_FOLDER);
        all
    } else {
        vec![path.to_path_buf()]
    };
    let photos = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| format!("{}: {e}", f.display())))
        .collect::<Result<Vec<_>, _>>()?;
    if photos.is_empty() {
        return Err(format!("{}: no images", path.display()));
    }
    let name = match path.file_name() {
        Some(n) if path.is_dir() => format!("{} x{}", n.to_string_lossy(), photos.len()),
        Some(n) => n.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    };
    Ok(PhotoSet { name, photos })
}
