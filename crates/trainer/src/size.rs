//! What a model costs to serve: its dense parameters and, per embedding table, the bytes it
//! needs next to what a full table of the same vocabulary and width would need. CEL's tables
//! also give their number of clusters. Reported by `cargo xtask train` at the end of a run,
//! in `report.md` and in `results.json`.

use std::fmt::Write as _;

use rec_nn::model::Model;
use serde::{Deserialize, Serialize};

/// The size of one embedding table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSize {
    /// The table's name in the model (its field, or the vocabulary's owner).
    pub name: String,
    /// The implementation: `full`, `hashed`, `qr`, `frequency`, `cel`, ...
    pub kind: String,
    /// IDs of the field, the out-of-vocabulary index 0 included.
    pub vocab: usize,
    /// Width of a vector.
    pub dim: usize,
    /// Trainable floats.
    pub params: usize,
    /// Bytes needed to serve it (parameters plus any ID-to-row map; no optimizer state).
    pub bytes: usize,
    /// A full `f32` table of the same vocabulary and width: `vocab * dim * 4`.
    pub full_bytes: usize,
    /// CEL: the number of clusters the IDs share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
}

/// The size of a model: dense parameters (buffers included) and embedding tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSize {
    /// Dense parameters and buffers (floats).
    pub dense_params: usize,
    /// Their bytes.
    pub dense_bytes: usize,
    /// One entry per table, in the model's order.
    pub tables: Vec<TableSize>,
}

impl ModelSize {
    /// Measures `model` as it is now.
    pub fn of(model: &dyn Model) -> Self {
        let vars = model.dense_vars().into_iter().chain(model.buffers());
        let (mut dense_params, mut dense_bytes) = (0, 0);
        for (_, v) in vars {
            dense_params += v.elem_count();
            dense_bytes += v.elem_count() * v.dtype().size_in_bytes();
        }
        let tables = model
            .tables()
            .into_iter()
            .map(|(name, t)| TableSize {
                name,
                kind: t.kind().to_string(),
                vocab: t.vocab(),
                dim: t.dim(),
                params: t.num_params(),
                bytes: t.bytes(),
                full_bytes: t.vocab() * t.dim() * std::mem::size_of::<f32>(),
                clusters: t
                    .as_any()
                    .downcast_ref::<embedding_cel::ClusteredEmbedding>()
                    .map(|c| c.num_clusters()),
            })
            .collect();
        ModelSize {
            dense_params,
            dense_bytes,
            tables,
        }
    }

    /// Bytes of every table together.
    pub fn table_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.bytes).sum()
    }

    /// Bytes full tables of the same vocabularies and widths would need together.
    pub fn full_table_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.full_bytes).sum()
    }

    /// Bytes needed to serve the model: dense parameters and tables.
    pub fn total_bytes(&self) -> usize {
        self.dense_bytes + self.table_bytes()
    }

    /// One line, e.g. `size: 1.2 MB to serve (dense 40.1 kB; tables 1.1 MB, 38.2x smaller than
    /// full tables)`. The comparison is left out when every table is full.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "size: {} to serve (dense {}; tables {}",
            human(self.total_bytes()),
            human(self.dense_bytes),
            human(self.table_bytes())
        );
        if self.tables.iter().any(|t| t.bytes != t.full_bytes) {
            let _ = write!(
                s,
                ", {} than full tables",
                ratio(self.full_table_bytes(), self.table_bytes())
            );
        }
        s.push(')');
        s
    }

    /// A Markdown table, one row per embedding table, with the dense part and the total.
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "| part | kind | IDs | width | rows | clusters | bytes | full table | smaller by |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for t in &self.tables {
            let _ = writeln!(
                md,
                "| table `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                t.kind,
                t.vocab,
                t.dim,
                t.params / t.dim.max(1),
                t.clusters.map_or("-".into(), |c| c.to_string()),
                human(t.bytes),
                human(t.full_bytes),
                ratio(t.full_bytes, t.bytes)
            );
        }
        let _ = writeln!(
            md,
            "| dense | | | | | | {} | | |\n| **total** | | | | | | **{}** | | |",
            human(self.dense_bytes),
            human(self.total_bytes())
        );
        md
    }
}

/// `full / bytes` in words: `38.2x smaller`, or `2.0x larger` for a table bigger than a full one
/// (e.g. CEL with personal vectors); `-` for a table as large as a full one.
fn ratio(full: usize, bytes: usize) -> String {
    if bytes == 0 || bytes == full {
        return "-".into();
    }
    let r = full as f64 / bytes as f64;
    if r >= 1.0 {
        format!("{r:.1}x smaller")
    } else {
        format!("{:.1}x larger", 1.0 / r)
    }
}

/// Bytes in decimal units: `512 B`, `40.1 kB`, `1.2 MB`, `3.4 GB`.
pub fn human(bytes: usize) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units_and_ratios() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(40_100), "40.1 kB");
        assert_eq!(human(1_260_000), "1.3 MB");
        assert_eq!(human(3_400_000_000), "3.4 GB");
        assert_eq!(ratio(3820, 100), "38.2x smaller");
        assert_eq!(ratio(100, 200), "2.0x larger");
        assert_eq!(ratio(100, 0), "-");
        assert_eq!(ratio(100, 100), "-");
    }
}
