//! [`Index`]: a sharded checkpoint's `*.safetensors.index.json`: which
//! shard holds each tensor. Its `weight_map` is read; other keys (the
//! `metadata` with `total_size`, for one) are skipped.

use core::fmt;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use super::super::LoadError;
use super::header::{Pairs, skip};
use crate::Error;

/// The largest index file read, in bytes: 100 MB, as for headers.
const MAX_INDEX: u64 = super::MAX_HEADER;

/// A sharded checkpoint's index: the shards, in the order their names
/// first appear, and which shard holds each tensor.
#[derive(Clone, Debug)]
pub struct Index {
    path: PathBuf,
    shards: Vec<PathBuf>,
    /// Each tensor's name and the index of its shard in `shards`.
    tensors: Vec<(String, usize)>,
}

impl Index {
    /// Reads and checks the index at `path`: JSON with an object
    /// `weight_map` of tensor names to shard file names, each a relative
    /// path inside the index's folder (no `..`, not absolute), no name
    /// twice.
    pub fn read(path: impl AsRef<Path>) -> Result<Index, Error> {
        let path = path.as_ref();
        let bad = |reason: String| -> Error {
            LoadError::Index {
                path: path.to_path_buf(),
                reason,
            }
            .into()
        };
        let io = |call, source| super::super::source::io_error(path, call, source);
        let meta = std::fs::metadata(path).map_err(|e| io("stat", e))?;
        if meta.len() > MAX_INDEX {
            return Err(bad(format!(
                "{} bytes, past the cap of {MAX_INDEX}",
                meta.len()
            )));
        }
        let text = std::fs::read(path).map_err(|e| io("read", e))?;
        let raw: RawIndex =
            serde_json::from_slice(&text).map_err(|error| bad(error.to_string()))?;
        let Some(map) = raw.weight_map else {
            return Err(bad("no `weight_map`".into()));
        };
        if raw.weight_maps > 1 {
            return Err(bad("`weight_map` appears twice".into()));
        }
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut names = HashSet::with_capacity(map.len());
        let mut shard_names: Vec<&str> = Vec::new();
        let mut tensors = Vec::with_capacity(map.len());
        for (name, shard) in &map {
            if !names.insert(name.as_str()) {
                return Err(LoadError::DuplicateName {
                    path: path.to_path_buf(),
                    name: name.clone(),
                }
                .into());
            }
            check_shard_name(shard).map_err(|reason| bad(format!("shard {shard:?}: {reason}")))?;
            let index = match shard_names.iter().position(|s| s == shard) {
                Some(index) => index,
                None => {
                    shard_names.push(shard);
                    shard_names.len() - 1
                }
            };
            tensors.push((name.clone(), index));
        }
        let shards = shard_names.iter().map(|s| folder.join(s)).collect();
        Ok(Index {
            path: path.to_path_buf(),
            shards,
            tensors,
        })
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shards' paths, in the order their names first appear.
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }

    /// Each tensor's name and the index of its shard in
    /// [`shards`](Index::shards).
    pub fn tensors(&self) -> &[(String, usize)] {
        &self.tensors
    }
}

/// A shard's file name: not empty, relative, no `..`, no NUL.
fn check_shard_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.contains('\0') {
        return Err("empty or with a NUL byte");
    }
    for component in Path::new(name).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("leaves the index's folder (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(())
}

struct RawIndex {
    weight_map: Option<Vec<(String, String)>>,
    weight_maps: usize,
}

impl<'de> Deserialize<'de> for RawIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawIndex, D::Error> {
        struct IndexVisitor;
        impl<'de> Visitor<'de> for IndexVisitor {
            type Value = RawIndex;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a safetensors index: an object with `weight_map`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawIndex, A::Error> {
                let mut raw = RawIndex {
                    weight_map: None,
                    weight_maps: 0,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "weight_map" {
                        raw.weight_maps += 1;
                        raw.weight_map = Some(map.next_value::<Pairs>()?.0);
                    } else {
                        skip(&mut map)?;
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(IndexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_stay_in_the_folder() {
        assert!(check_shard_name("model-00001-of-00002.safetensors").is_ok());
        assert!(check_shard_name("./sub/model.safetensors").is_ok());
        assert!(check_shard_name("../model.safetensors").is_err());
        assert!(check_shard_name("sub/../../x").is_err());
        assert!(check_shard_name("/etc/passwd").is_err());
        assert!(check_shard_name("").is_err());
        assert!(check_shard_name("a\0b").is_err());
    }
}
