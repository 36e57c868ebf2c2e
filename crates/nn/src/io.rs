//! Saving and loading: checked tensor access, atomic files, and a whole [`Model`] to
//! safetensors + JSON.
//!
//! [`save_model`] writes two files, each atomically (temporary file in the same directory,
//! flushed, then renamed over the target): `NAME.safetensors` with every tensor (dense variables,
//! buffers, each table's parameters and optimizer state) and `NAME.json` with the metadata (model
//! name, variable names, each table's own metadata) and a 64-bit checksum of the tensors. The
//! checksum is also stored in the safetensors header, so a tensor file from another save, a
//! truncated file or flipped bytes are reported as errors by [`load_model`]. The checksum guards
//! against accidents, not against an adversary.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor};
use serde_json::{Value, json};

use crate::embedding::TensorMap;
use crate::model::Model;

/// The tensor `name` of `tensors`, checked to have shape `dims` and dtype `dtype`. A missing
/// tensor or a mismatch is an error naming the tensor.
pub fn take_tensor(
    tensors: &TensorMap,
    name: &str,
    dims: &[usize],
    dtype: DType,
) -> Result<Tensor> {
    let t = tensors
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("tensor `{name}` is missing")))?;
    if t.dims() != dims {
        candle_core::bail!(
            "tensor `{name}` has shape {:?}, expected {dims:?}",
            t.dims()
        );
    }
    if t.dtype() != dtype {
        candle_core::bail!(
            "tensor `{name}` has dtype {:?}, expected {dtype:?}",
            t.dtype()
        );
    }
    Ok(t.clone())
}

/// The unsigned integer `key` of a JSON object; `ctx` names the object in the error.
pub fn meta_usize(meta: &Value, key: &str, ctx: &str) -> Result<usize> {
    meta.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| candle_core::Error::Msg(format!("`{ctx}`: metadata has no integer `{key}`")))
}

/// The string `key` of a JSON object; `ctx` names the object in the error.
pub fn meta_str<'a>(meta: &'a Value, key: &str, ctx: &str) -> Result<&'a str> {
    meta.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| candle_core::Error::Msg(format!("`{ctx}`: metadata has no string `{key}`")))
}

/// Checks that `meta[key]` equals `expected`; `ctx` names the object in the error.
pub fn expect_meta(meta: &Value, key: &str, expected: &Value, ctx: &str) -> Result<()> {
    match meta.get(key) {
        Some(v) if v == expected => Ok(()),
        Some(v) => candle_core::bail!("`{ctx}`: saved {key} is {v}, expected {expected}"),
        None => candle_core::bail!("`{ctx}`: metadata has no `{key}`"),
    }
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically ([`rec_data::atomic`]): a reader sees the old file or
/// the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    rec_data::atomic::write_atomic(path, bytes).map_err(|e| io_err(path, "cannot save", e))
}

/// Writes `tensors` (and string `metadata` in the header) to the safetensors file `path`
/// atomically.
pub fn save_safetensors_atomic(
    path: &Path,
    tensors: &TensorMap,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let sorted: BTreeMap<&String, &Tensor> = tensors.iter().collect();
    rec_data::atomic::write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(sorted, Some(metadata), tmp)
            .map_err(|e| std::io::Error::other(format!("cannot write {}: {e}", tmp.display())))
    })
    .map_err(|e| io_err(path, "cannot save", e))
}

/// Reads a safetensors file into CPU tensors and its header metadata.
pub fn load_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| io_err(path, "not a valid safetensors file:", e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| io_err(path, "not a valid safetensors file:", e))?;
    Ok((tensors, meta))
}

/// A 64-bit checksum of named tensors (names, dtypes, shapes and raw bytes, in name order).
pub fn checksum(tensors: &TensorMap) -> Result<u64> {
    use safetensors::View;
    let mut h = Hash64::new();
    let sorted: BTreeMap<&String, &Tensor> = tensors.iter().collect();
    for (name, t) in sorted {
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype(), t.dims()).as_bytes());
        let t = t.to_device(&Device::Cpu)?;
        h.update(&t.data());
    }
    Ok(h.finish())
}

/// A fast word-wise multiplicative hash (not cryptographic).
struct Hash64(u64);

impl Hash64 {
    fn new() -> Self {
        Self(0x243F_6A88_85A3_08D3)
    }
    fn mix(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(31);
    }
    fn update(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(last));
        self.mix(bytes.len() as u64);
    }
    fn finish(&self) -> u64 {
        crate::init::mix64(self.0, 0x5851_F42D_4C95_7F2D)
    }
}

/// Everything needed to restore `model`'s parameters: tensors named `dense/NAME`,
/// `buffer/NAME` and `table/NAME/...`, and the JSON metadata.
pub fn model_state(model: &dyn Model) -> Result<(TensorMap, Value)> {
    let mut tensors = TensorMap::new();
    let mut dense = Vec::new();
    for (n, v) in model.dense_vars() {
        tensors.insert(format!("dense/{n}"), v.as_tensor().to_device(&Device::Cpu)?);
        dense.push(n);
    }
    let mut buffers = Vec::new();
    for (n, v) in model.buffers() {
        tensors.insert(
            format!("buffer/{n}"),
            v.as_tensor().to_device(&Device::Cpu)?,
        );
        buffers.push(n);
    }
    let mut tables = serde_json::Map::new();
    for (n, t) in model.tables() {
        let meta = t.save(&format!("table/{n}/"), &mut tensors)?;
        tables.insert(n, json!({ "kind": t.kind(), "meta": meta }));
    }
    Ok((
        tensors,
        json!({
            "model": model.name(),
            "dense": dense,
            "buffers": buffers,
            "tables": tables,
        }),
    ))
}

/// Restores what [`model_state`] produced into a model built with the same configuration.
/// Names, shapes, dtypes, table kinds and table metadata must match; anything else is an
/// error. Dense variables are all checked before any is written; a failing table may leave the
/// model partially loaded (rebuild it before retrying).
pub fn load_model_state(model: &mut dyn Model, tensors: &TensorMap, meta: &Value) -> Result<()> {
    let loaded = load_model_state_inner(model, tensors, meta);
    with_after_load(model, loaded)
}

/// `loaded`, the result of loading saved state into `model`, after [`Model::after_load`],
/// which runs also when the load failed part-way (the model may have changed); the load's
/// error comes first.
pub fn with_after_load<T>(model: &mut dyn Model, loaded: Result<T>) -> Result<T> {
    let after = model.after_load();
    let value = loaded?;
    after.map(|()| value)
}

fn load_model_state_inner(model: &mut dyn Model, tensors: &TensorMap, meta: &Value) -> Result<()> {
    let name = meta_str(meta, "model", "model")?;
    if name != model.name() && !model.former_names().contains(&name) {
        candle_core::bail!("saved model is `{name}`, this model is `{}`", model.name());
    }
    let mut known: Vec<String> = Vec::new();
    let mut assign = Vec::new();
    for (section, vars) in [("dense", model.dense_vars()), ("buffer", model.buffers())] {
        let key = if section == "dense" {
            "dense"
        } else {
            "buffers"
        };
        let saved: Vec<String> = meta
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("model metadata has no `{key}` list"))
            })?;
        let mine: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        if saved != mine {
            candle_core::bail!("saved {key} variables {saved:?} differ from the model's {mine:?}");
        }
        for (n, v) in vars {
            let tname = format!("{section}/{n}");
            let t = take_tensor(tensors, &tname, v.dims(), v.dtype())?;
            known.push(tname);
            assign.push((v, t));
        }
    }
    let saved_tables = meta
        .get("tables")
        .and_then(Value::as_object)
        .ok_or_else(|| candle_core::Error::Msg("model metadata has no `tables`".into()))?;
    let mine: Vec<String> = model.tables().into_iter().map(|(n, _)| n).collect();
    let theirs: Vec<String> = saved_tables.keys().cloned().collect();
    let (mut a, mut b) = (mine.clone(), theirs);
    a.sort();
    b.sort();
    if a != b {
        candle_core::bail!("saved tables {b:?} differ from the model's {a:?}");
    }
    for name in tensors.keys() {
        let ok = known.contains(name)
            || mine
                .iter()
                .any(|t| name.starts_with(&format!("table/{t}/")));
        if !ok {
            candle_core::bail!("unexpected tensor `{name}` in the saved model");
        }
    }
    for (v, t) in assign {
        v.set(&t.to_device(v.device())?)?;
    }
    for (n, table) in model.tables_mut() {
        let entry = &saved_tables[&n];
        let kind = meta_str(entry, "kind", &n)?;
        if kind != table.kind() {
            candle_core::bail!(
                "table `{n}` was saved as `{kind}`, the model has `{}`",
                table.kind()
            );
        }
        let tmeta = entry
            .get("meta")
            .ok_or_else(|| candle_core::Error::Msg(format!("table `{n}` has no metadata")))?;
        table.load(&format!("table/{n}/"), tensors, tmeta)?;
    }
    Ok(())
}

/// The metadata file next to a tensors file: `x.safetensors` → `x.json`.
pub fn meta_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Saves `model` to `path` (safetensors) and [`meta_path`]`(path)` (JSON), atomically, with a
/// checksum. See the [module documentation](self).
pub fn save_model(model: &dyn Model, path: &Path) -> Result<()> {
    let (tensors, mut meta) = model_state(model)?;
    let sum = format!("{:016x}", checksum(&tensors)?);
    meta["format"] = json!("rec-nn-model/1");
    meta["checksum"] = json!(sum);
    meta["tensors_file"] = json!(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let header = HashMap::from([
        ("format".to_string(), "rec-nn-model/1".to_string()),
        ("checksum".to_string(), sum),
    ]);
    save_safetensors_atomic(path, &tensors, header)?;
    let text = serde_json::to_string_pretty(&meta)
        .map_err(|e| candle_core::Error::Msg(format!("cannot encode model metadata: {e}")))?;
    write_atomic(&meta_path(path), text.as_bytes())
}

/// Loads what [`save_model`] wrote into `model` (built with the same configuration), after
/// verifying the checksum.
pub fn load_model(model: &mut dyn Model, path: &Path) -> Result<()> {
    let mpath = meta_path(path);
    let text = std::fs::read_to_string(&mpath).map_err(|e| io_err(&mpath, "cannot read", e))?;
    let meta: Value =
        serde_json::from_str(&text).map_err(|e| io_err(&mpath, "invalid JSON in", e))?;
    let expected = meta_str(&meta, "checksum", "model")?;
    let (tensors, header) = load_safetensors(path)?;
    if header.get("checksum").map(String::as_str) != Some(expected) {
        candle_core::bail!(
            "{} and {} do not belong together (checksums differ)",
            path.display(),
            mpath.display()
        );
    }
    let actual = format!("{:016x}", checksum(&tensors)?);
    if actual != expected {
        candle_core::bail!(
            "{} is corrupted: checksum {actual}, expected {expected}",
            path.display()
        );
    }
    load_model_state(model, &tensors, &meta)
        .map_err(|e| candle_core::Error::Msg(format!("loading {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_tensor_checks_everything() -> Result<()> {
        let mut m = TensorMap::new();
        m.insert("a".into(), Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?);
        assert!(take_tensor(&m, "a", &[2, 3], DType::F32).is_ok());
        let e = take_tensor(&m, "a", &[3, 2], DType::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a`") && e.contains("shape"));
        assert!(take_tensor(&m, "a", &[2, 3], DType::F64).is_err());
        assert!(take_tensor(&m, "b", &[2, 3], DType::F32).is_err());
        Ok(())
    }

    #[test]
    fn atomic_files_and_checksums() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let p = dir.path().join("t.safetensors");
        let mut m = TensorMap::new();
        m.insert("x".into(), Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu)?);
        m.insert("y".into(), Tensor::new(&[7u32], &Device::Cpu)?);
        let sum = checksum(&m)?;
        save_safetensors_atomic(&p, &m, HashMap::from([("k".into(), "v".into())]))?;
        let (back, header) = load_safetensors(&p)?;
        assert_eq!(header["k"], "v");
        assert_eq!(checksum(&back)?, sum);
        m.insert("x".into(), Tensor::new(&[1f32, 2.0, 3.5], &Device::Cpu)?);
        assert_ne!(checksum(&m)?, sum);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        // Truncated files are errors, not panics.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(load_safetensors(&p).is_err());
        Ok(())
    }
}
