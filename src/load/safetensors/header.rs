//! [`Header`]: a safetensors file's 8-byte length and JSON header, read with
//! `pread` and checked against the file before a tensor byte is read.
//!
//! How the `safetensors` crate is used: its [`TensorInfo`] is the schema of
//! one entry (serde parses `dtype`, `shape` and `data_offsets` into it, and
//! its [`Dtype`] knows every dtype string and `bitsize`), and
//! [`Metadata::new`](safetensors::tensor::Metadata::new) runs the crate's own
//! validation (offsets contiguous from 0 in order, sizes equal to dtype ×
//! shape, no overflow, whole bytes) as the last gate, so that a rule the
//! crate adds is enforced here too. What it does not do, this file does:
//! the crate's `read_metadata` wants the whole file in memory, turns
//! duplicate names into a silent last-wins (serde's map), reports most
//! failures without the tensor's name, and knows nothing of the file's
//! length; so the header is parsed by a visitor that keeps every entry,
//! and each rule is checked first here with an error that names the file,
//! the tensor and the numbers.

use core::fmt;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::super::{LoadError, Source};
use crate::Error;

/// The largest header accepted, in bytes: 100 MB, the `safetensors`
/// crate's own cap (its `MAX_HEADER_SIZE`, which it does not export).
/// Parsing a header costs a few times its size in memory.
pub const MAX_HEADER: u64 = 100_000_000;

/// How much of a file is read first: most headers fit, so one read gets
/// the length and the header together.
const FIRST_READ: usize = 64 << 10;

/// A safetensors file's header, checked against the file: every tensor's
/// name, dtype, shape and bytes, in the order of their offsets.
#[derive(Clone, Debug)]
pub struct Header {
    path: PathBuf,
    data_start: u64,
    file_len: u64,
    tensors: Vec<(String, TensorInfo)>,
    metadata: Vec<(String, String)>,
}

impl Header {
    /// Reads and checks `source`'s header with `pread` (directly where the
    /// file allows, so that a cold file's pages stay out of the page
    /// cache): the 8-byte length and, in the same read for headers up to
    /// 64 KiB, the header.
    pub fn read(source: &Source) -> Result<Header, Error> {
        let path = source.path();
        let len = source.len();
        if len < 8 {
            return Err(LoadError::Truncated {
                path: path.to_path_buf(),
                needed: 8,
                len,
            }
            .into());
        }
        let first = source.read_vec(0, (len as usize).min(FIRST_READ))?;
        let n = u64::from_le_bytes(first[..8].try_into().expect("8 bytes"));
        check_length(path, n, len)?;
        let end = 8 + n as usize;
        if end <= first.len() {
            return Header::parse_json(path, &first[8..end], len);
        }
        let rest = source.read_vec(first.len() as u64, end - first.len())?;
        let mut json = Vec::with_capacity(n as usize);
        json.extend_from_slice(&first[8..]);
        json.extend_from_slice(&rest);
        Header::parse_json(path, &json, len)
    }

    /// Checks the start of a file already in memory: `prefix` holds its
    /// first bytes (at least the 8-byte length and the header), `file_len`
    /// is its whole length, `path` names it in errors. What
    /// [`read`](Header::read) does after reading; the fuzz target's entry.
    pub fn parse(prefix: &[u8], file_len: u64, path: impl AsRef<Path>) -> Result<Header, Error> {
        let path = path.as_ref();
        let Some(length) = prefix.get(..8) else {
            return Err(LoadError::Truncated {
                path: path.to_path_buf(),
                needed: 8,
                len: file_len.min(prefix.len() as u64),
            }
            .into());
        };
        let n = u64::from_le_bytes(length.try_into().expect("8 bytes"));
        check_length(path, n, file_len)?;
        let Some(json) = prefix.get(8..8 + n as usize) else {
            return Err(LoadError::Truncated {
                path: path.to_path_buf(),
                needed: 8 + n,
                len: prefix.len() as u64,
            }
            .into());
        };
        Header::parse_json(path, json, file_len)
    }

    fn parse_json(path: &Path, json: &[u8], file_len: u64) -> Result<Header, Error> {
        let data_start = 8 + json.len() as u64;
        let raw: Raw = serde_json::from_slice(json).map_err(|source| LoadError::Header {
            path: path.to_path_buf(),
            source,
        })?;
        let mut names = HashSet::with_capacity(raw.tensors.len());
        for (name, _) in &raw.tensors {
            if !names.insert(name.as_str()) {
                return Err(LoadError::DuplicateName {
                    path: path.to_path_buf(),
                    name: name.clone(),
                }
                .into());
            }
        }
        if raw.metadata_seen > 1 {
            return Err(LoadError::DuplicateName {
                path: path.to_path_buf(),
                name: "__metadata__".into(),
            }
            .into());
        }
        drop(names);
        let mut tensors = raw.tensors;
        // The crate's own order: by offsets.
        tensors.sort_by_key(|(_, info)| info.data_offsets);
        let header = Header {
            path: path.to_path_buf(),
            data_start,
            file_len,
            tensors,
            metadata: raw.metadata,
        };
        header.check()?;
        Ok(header)
    }

    /// Every rule, with an error that names the tensor; then the crate's.
    fn check(&self) -> Result<(), Error> {
        let path = || self.path.clone();
        let mut end = 0usize;
        let mut previous: Option<&str> = None;
        for (name, info) in &self.tensors {
            let (start, stop) = info.data_offsets;
            if stop < start {
                return Err(LoadError::ReversedOffsets {
                    path: path(),
                    name: name.clone(),
                    start,
                    end: stop,
                }
                .into());
            }
            let bytes = tensor_bytes(info).map_err(|partial| match partial {
                false => LoadError::ShapeOverflow {
                    path: path(),
                    name: name.clone(),
                },
                true => LoadError::PartialByte {
                    path: path(),
                    name: name.clone(),
                },
            })?;
            if bytes != stop - start {
                return Err(LoadError::SizeMismatch {
                    path: path(),
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    expected: bytes,
                    found: stop - start,
                }
                .into());
            }
            if start < end {
                return Err(LoadError::Overlap {
                    path: path(),
                    name: name.clone(),
                    other: previous.unwrap_or_default().to_string(),
                }
                .into());
            }
            if start > end {
                return Err(LoadError::Gap {
                    path: path(),
                    name: name.clone(),
                    expected: end,
                    start,
                }
                .into());
            }
            let file_end = self.data_start.saturating_add(stop as u64);
            if file_end > self.file_len {
                return Err(LoadError::TensorPastEnd {
                    path: path(),
                    name: name.clone(),
                    end: file_end,
                    file_len: self.file_len,
                }
                .into());
            }
            end = stop;
            if stop > start {
                previous = Some(name);
            }
        }
        let data_end = self.data_start + end as u64;
        if data_end != self.file_len {
            return Err(LoadError::TrailingBytes {
                path: path(),
                data_end,
                len: self.file_len,
            }
            .into());
        }
        // The crate's validation, on what was just checked: it should agree.
        Metadata::new(None, self.tensors.clone()).map_err(|error| LoadError::Invalid {
            path: path(),
            reason: error.to_string(),
        })?;
        Ok(())
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the tensors' bytes start in the file: 8 plus the header's
    /// length. Offsets in [`TensorInfo::data_offsets`] count from here.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The file's length when the header was read.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of tensors.
    pub fn data_len(&self) -> u64 {
        self.file_len - self.data_start
    }

    /// Every tensor, in the order of its offsets.
    pub fn tensors(&self) -> &[(String, TensorInfo)] {
        &self.tensors
    }

    /// The `__metadata__` entries (string to string), as the file has them.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }
}

/// The header length against the cap and the file.
fn check_length(path: &Path, n: u64, file_len: u64) -> Result<(), Error> {
    if n > MAX_HEADER {
        return Err(LoadError::HeaderTooLarge {
            path: path.to_path_buf(),
            len: n,
            max: MAX_HEADER,
        }
        .into());
    }
    if 8 + n > file_len {
        return Err(LoadError::Truncated {
            path: path.to_path_buf(),
            needed: 8 + n,
            len: file_len,
        }
        .into());
    }
    Ok(())
}

/// The bytes a tensor of `info`'s dtype and shape holds; `Err(false)` if
/// that overflows, `Err(true)` if it is not a whole number of bytes.
pub(crate) fn tensor_bytes(info: &TensorInfo) -> Result<usize, bool> {
    let elements = info
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or(false)?;
    let bits = elements.checked_mul(info.dtype.bitsize()).ok_or(false)?;
    if bits % 8 != 0 {
        return Err(true);
    }
    Ok(bits / 8)
}

/// What the JSON object holds, every entry kept (duplicates included, for
/// the check above), in the file's order.
struct Raw {
    tensors: Vec<(String, TensorInfo)>,
    metadata: Vec<(String, String)>,
    metadata_seen: usize,
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a safetensors header: an object of tensors and `__metadata__`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut raw = Raw {
            tensors: Vec::new(),
            metadata: Vec::new(),
            metadata_seen: 0,
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                raw.metadata_seen += 1;
                raw.metadata = map.next_value::<Pairs>()?.0;
            } else {
                let info: TensorInfo = map.next_value()?;
                raw.tensors.push((key, info));
            }
        }
        Ok(raw)
    }
}

/// A JSON object of strings, kept as pairs in order (duplicates included).
pub(crate) struct Pairs(pub(crate) Vec<(String, String)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Pairs, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

/// Skips any JSON value (for keys an index may carry that are not read).
pub(crate) fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}
