//! Parquet input and output (arrow-rs), with atomic writes and a generic typed table reader.
//!
//! - Whole small files (JSON, TOML next to the Parquet files) go through
//!   [`crate::atomic::write_atomic`].
//! - [`ParquetSink`]: a Parquet file written a row group at a time (bounded memory), renamed into
//!   place only by [`ParquetSink::finish`]; deterministic bytes for the same data.
//! - [`read_table`]: any flat Parquet file into typed columns (integers, floats, text, integer
//!   lists), the way a generic interaction reader wants them; nulls are rejected with the file,
//!   column and row.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::synth::Ragged;

/// An error of Parquet input or output, with the file it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ParquetIoError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub msg: String,
}

fn perr(path: &Path, msg: impl std::fmt::Display) -> ParquetIoError {
    ParquetIoError {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Writer properties used for every file of `schema`: Snappy, a fixed `created_by`, no
/// wall-clock values, so the same data always gives the same bytes.
pub fn writer_properties(schema: &arrow_schema::Schema) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("rec-data".to_string())
        .set_max_row_group_row_count(Some(1 << 20));
    // Sorted or slowly changing integer columns of interaction logs shrink several-fold with
    // delta encoding; Parquet has it for integers only, so a column of another type by one of
    // these names keeps the default encoding.
    for col in DELTA_COLUMNS {
        let integer = schema
            .field_with_name(col)
            .is_ok_and(|f| f.data_type().is_integer());
        if integer {
            let path = ColumnPath::from(*col);
            b = b
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    b.build()
}

/// Integer columns written with delta encoding: timestamps and IDs that are sorted within a
/// file.
pub const DELTA_COLUMNS: &[&str] = &["ts", "user_id", "session"];

/// A Parquet file being written: each [`write`](Self::write) becomes at least one row group; the
/// file appears under its final name only when [`finish`](Self::finish) succeeds, and a sink
/// that fails or is dropped unfinished removes its temporary file
/// ([`crate::atomic::temp_path`], private to this writer).
pub struct ParquetSink {
    writer: Option<ArrowWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
}

impl ParquetSink {
    /// Starts writing `path` with `schema`.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self, ParquetIoError> {
        let tmp = crate::atomic::temp_path(path).map_err(|e| perr(path, e))?;
        let file = File::create(&tmp).map_err(|e| perr(&tmp, e))?;
        let props = writer_properties(&schema);
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            perr(path, e)
        })?;
        Ok(Self {
            writer: Some(writer),
            tmp,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    /// Writes `batch` and flushes it as a row group (memory stays bounded by one batch).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetIoError> {
        let w = self.writer.as_mut().expect("not finished");
        w.write(batch).map_err(|e| perr(&self.path, e))?;
        w.flush().map_err(|e| perr(&self.path, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the file and renames it into place; on failure the temporary file is removed
    /// and `path` is untouched.
    pub fn finish(mut self) -> Result<(), ParquetIoError> {
        let w = self.writer.take().expect("finished once");
        let done = (|| {
            let file = w.into_inner().map_err(|e| perr(&self.path, e))?;
            file.sync_all().map_err(|e| perr(&self.tmp, e))?;
            drop(file);
            std::fs::rename(&self.tmp, &self.path).map_err(|e| perr(&self.path, e))
        })();
        match &done {
            Err(_) => {
                let _ = std::fs::remove_file(&self.tmp);
            }
            Ok(()) => {
                // Persisting the directory entry is best effort, as for every atomic write.
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
                    && let Ok(d) = File::open(dir)
                {
                    let _ = d.sync_all();
                }
            }
        }
        done
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Not finished (an error happened): leave no partial file behind.
            self.writer.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes one record batch to `path` atomically.
pub fn write_batch(path: &Path, batch: &RecordBatch) -> Result<(), ParquetIoError> {
    let mut sink = ParquetSink::create(path, batch.schema())?;
    sink.write(batch)?;
    sink.finish()
}

/// The values of one column of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub enum TableColumn {
    /// Any integer or boolean column.
    Int(Vec<i64>),
    /// Any floating-point column.
    Float(Vec<f64>),
    /// A string column.
    Text(Vec<String>),
    /// A list of integers per row.
    IntList(Ragged<i64>),
}

impl TableColumn {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            TableColumn::Int(v) => v.len(),
            TableColumn::Float(v) => v.len(),
            TableColumn::Text(v) => v.len(),
            TableColumn::IntList(r) => r.len(),
        }
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend(&mut self, other: TableColumn) {
        match (self, other) {
            (TableColumn::Int(a), TableColumn::Int(b)) => a.extend(b),
            (TableColumn::Float(a), TableColumn::Float(b)) => a.extend(b),
            (TableColumn::Text(a), TableColumn::Text(b)) => a.extend(b),
            (TableColumn::IntList(a), TableColumn::IntList(b)) => a.extend(&b),
            _ => unreachable!("one column keeps its type across record batches"),
        }
    }
}

/// A flat table read from Parquet: named, typed columns of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Path it was read from (for error messages).
    pub path: PathBuf,
    /// Column names, in file order (or projection order).
    pub names: Vec<String>,
    /// Columns, aligned with `names`.
    pub columns: Vec<TableColumn>,
    /// Number of rows.
    pub rows: usize,
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Result<&TableColumn, ParquetIoError> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
            .ok_or_else(|| perr(&self.path, format!("no column `{name}`")))
    }

    /// The integer column `name`, each value checked to lie in `0..=max`.
    pub fn ints_in(&self, name: &str, max: i64) -> Result<Vec<i64>, ParquetIoError> {
        match self.column(name)? {
            TableColumn::Int(v) => {
                if let Some((row, x)) = v.iter().enumerate().find(|(_, x)| !(0..=max).contains(*x))
                {
                    return Err(perr(
                        &self.path,
                        format!("column `{name}`, row {row}: value {x} outside 0..={max}"),
                    ));
                }
                Ok(v.clone())
            }
            _ => Err(perr(
                &self.path,
                format!("column `{name}` is not an integer column"),
            )),
        }
    }

    /// The float column `name`.
    pub fn floats(&self, name: &str) -> Result<&[f64], ParquetIoError> {
        match self.column(name)? {
            TableColumn::Float(v) => Ok(v),
            _ => Err(perr(
                &self.path,
                format!("column `{name}` is not a float column"),
            )),
        }
    }

    /// The integer-list column `name`, each value checked to lie in `0..=max`.
    pub fn int_lists_in(&self, name: &str, max: i64) -> Result<&Ragged<i64>, ParquetIoError> {
        match self.column(name)? {
            TableColumn::IntList(r) => {
                if let Some(x) = r.values.iter().find(|x| !(0..=max).contains(*x)) {
                    let pos = r.values.iter().position(|y| y == x).unwrap_or(0);
                    let row = r.offsets.partition_point(|&o| o <= pos) - 1;
                    return Err(perr(
                        &self.path,
                        format!("column `{name}`, row {row}: value {x} outside 0..={max}"),
                    ));
                }
                Ok(r)
            }
            _ => Err(perr(
                &self.path,
                format!("column `{name}` is not a list column"),
            )),
        }
    }
}

/// The file row of element `i` of an array being converted.
type RowOf<'a> = &'a dyn Fn(usize) -> usize;

fn no_nulls(path: &Path, name: &str, a: &dyn Array, row_of: RowOf) -> Result<(), ParquetIoError> {
    if a.null_count() > 0 {
        let i = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
        return Err(perr(
            path,
            format!("column `{name}`, row {}: missing value", row_of(i)),
        ));
    }
    Ok(())
}

fn ints_of(
    path: &Path,
    name: &str,
    a: &ArrayRef,
    row_of: RowOf,
) -> Result<Vec<i64>, ParquetIoError> {
    no_nulls(path, name, a.as_ref(), row_of)?;
    Ok(match a.data_type() {
        DataType::Boolean => a
            .as_boolean()
            .iter()
            .map(|x| i64::from(x == Some(true)))
            .collect(),
        DataType::Int8 => a
            .as_primitive::<Int8Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
        DataType::Int16 => a
            .as_primitive::<Int16Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
        DataType::Int32 => a
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
        DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
        DataType::UInt8 => a
            .as_primitive::<UInt8Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
        DataType::UInt16 => a
            .as_primitive::<UInt16Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
        DataType::UInt32 => a
            .as_primitive::<UInt32Type>()
            .values()
            .iter()
            .map(|&x| x as i64)
            .collect(),
        DataType::UInt64 => {
            let v = a.as_primitive::<UInt64Type>().values();
            if let Some(i) = v.iter().position(|&x| x > i64::MAX as u64) {
                return Err(perr(
                    path,
                    format!(
                        "column `{name}`, row {}: value {} too large",
                        row_of(i),
                        v[i]
                    ),
                ));
            }
            v.iter().map(|&x| x as i64).collect()
        }
        t => {
            return Err(perr(
                path,
                format!("column `{name}` has type {t}, not an integer type"),
            ));
        }
    })
}

fn convert(
    path: &Path,
    name: &str,
    a: &ArrayRef,
    base: usize,
) -> Result<TableColumn, ParquetIoError> {
    Ok(match a.data_type() {
        DataType::Float32 => {
            no_nulls(path, name, a.as_ref(), &|i| base + i)?;
            TableColumn::Float(
                a.as_primitive::<Float32Type>()
                    .values()
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
            )
        }
        DataType::Float64 => {
            no_nulls(path, name, a.as_ref(), &|i| base + i)?;
            TableColumn::Float(a.as_primitive::<Float64Type>().values().to_vec())
        }
        DataType::Utf8 => {
            no_nulls(path, name, a.as_ref(), &|i| base + i)?;
            TableColumn::Text(
                a.as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap_or("").to_string())
                    .collect(),
            )
        }
        DataType::LargeUtf8 => {
            no_nulls(path, name, a.as_ref(), &|i| base + i)?;
            TableColumn::Text(
                a.as_string::<i64>()
                    .iter()
                    .map(|s| s.unwrap_or("").to_string())
                    .collect(),
            )
        }
        DataType::List(_) | DataType::LargeList(_) => {
            no_nulls(path, name, a.as_ref(), &|i| base + i)?;
            let (offsets, values): (Vec<usize>, ArrayRef) = match a.data_type() {
                DataType::List(_) => {
                    let l = a.as_list::<i32>();
                    (
                        l.value_offsets().iter().map(|&o| o as usize).collect(),
                        l.values().clone(),
                    )
                }
                _ => {
                    let l = a.as_list::<i64>();
                    (
                        l.value_offsets().iter().map(|&o| o as usize).collect(),
                        l.values().clone(),
                    )
                }
            };
            let first = offsets[0];
            let last = *offsets.last().unwrap_or(&first);
            let vals = values.slice(first, last - first);
            let rel: Vec<usize> = offsets.iter().map(|o| o - first).collect();
            // A value's row is the last row starting at or before it.
            let row_of = |i: usize| base + rel.partition_point(|&o| o <= i) - 1;
            let ints = ints_of(path, name, &vals, &row_of)?;
            TableColumn::IntList(Ragged {
                offsets: rel,
                values: ints,
            })
        }
        _ => TableColumn::Int(ints_of(path, name, a, &|i| base + i)?),
    })
}

/// Reads a flat Parquet file into typed columns; `columns` selects (and orders) the columns to
/// read, `None` reads all.
pub fn read_table(path: &Path, columns: Option<&[&str]>) -> Result<Table, ParquetIoError> {
    let file = File::open(path).map_err(|e| perr(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| perr(path, e))?;
    let file_names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let file_types: Vec<DataType> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let wanted: Vec<String> = match columns {
        Some(c) => c.iter().map(|s| s.to_string()).collect(),
        None => file_names.clone(),
    };
    let mut roots = Vec::with_capacity(wanted.len());
    for w in &wanted {
        match file_names.iter().position(|n| n == w) {
            Some(i) => roots.push(i),
            None => {
                return Err(perr(
                    path,
                    format!("no column `{w}` (it has: {})", file_names.join(", ")),
                ));
            }
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| perr(path, e))?;
    let mut table = Table {
        path: path.to_path_buf(),
        names: wanted.clone(),
        columns: Vec::new(),
        rows: 0,
    };
    // Typed empty columns from the file's schema, so an empty file still has typed columns.
    let mut cols: Vec<Option<TableColumn>> = Vec::with_capacity(wanted.len());
    for w in &wanted {
        let idx = file_names
            .iter()
            .position(|n| n == w)
            .expect("checked above");
        let dt = file_types[idx].clone();
        let empty = arrow_array::new_empty_array(&dt);
        cols.push(Some(convert(path, w, &empty, 0)?));
    }
    for batch in reader {
        let batch = batch.map_err(|e| perr(path, e))?;
        let schema = batch.schema();
        for (slot, w) in cols.iter_mut().zip(&wanted) {
            let idx = schema
                .index_of(w)
                .map_err(|e| perr(path, format!("column `{w}`: {e}")))?;
            let col = convert(path, w, batch.column(idx), table.rows)?;
            match slot {
                Some(c) => c.extend(col),
                None => *slot = Some(col),
            }
        }
        table.rows += batch.num_rows();
    }
    table.columns = cols.into_iter().map(|c| c.expect("typed above")).collect();
    Ok(table)
}

/// Convenience: a schema reference from fields.
pub fn schema_of(fields: Vec<arrow_schema::Field>) -> SchemaRef {
    Arc::new(arrow_schema::Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{ListBuilder, UInt32Builder};
    use arrow_array::{Float32Array, Int64Array, StringArray, UInt8Array};
    use arrow_schema::Field;

    fn sample() -> RecordBatch {
        let mut list = ListBuilder::new(UInt32Builder::new());
        list.values().append_slice(&[1, 2]);
        list.append(true);
        list.append(true);
        list.values().append_slice(&[7]);
        list.append(true);
        let list = list.finish();
        let schema = schema_of(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("flag", DataType::UInt8, false),
            Field::new("x", DataType::Float32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("terms", list.data_type().clone(), false),
        ]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![10, 11, 12])),
                Arc::new(UInt8Array::from(vec![0, 1, 1])),
                Arc::new(Float32Array::from(vec![0.5, 1.5, 2.5])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(list),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trip_is_typed_and_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        write_batch(&a, &sample()).unwrap();
        write_batch(&b, &sample()).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["a.parquet", "b.parquet"],
            "no temporary file is left"
        );
        let t = read_table(&a, None).unwrap();
        assert_eq!(t.rows, 3);
        assert_eq!(t.column("id").unwrap(), &TableColumn::Int(vec![10, 11, 12]));
        assert_eq!(t.floats("x").unwrap(), &[0.5, 1.5, 2.5]);
        assert_eq!(
            t.column("name").unwrap(),
            &TableColumn::Text(vec!["a".into(), "b".into(), "c".into()])
        );
        let terms = t.int_lists_in("terms", 10).unwrap();
        assert_eq!(terms.row(0), &[1, 2]);
        assert!(terms.row(1).is_empty());
        assert_eq!(terms.row(2), &[7]);
        let e = t.int_lists_in("terms", 5).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("value 7"), "{e}");
        let e = t.ints_in("flag", 0).unwrap_err().to_string();
        assert!(e.contains("row 1"), "{e}");
        let p = read_table(&a, Some(&["x", "id"])).unwrap();
        assert_eq!(p.names, vec!["x", "id"]);
        let e = read_table(&a, Some(&["nope"])).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("a.parquet"), "{e}");
    }

    #[test]
    fn an_empty_file_keeps_its_column_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.parquet");
        write_batch(&p, &sample().slice(0, 0)).unwrap();
        let t = read_table(&p, None).unwrap();
        assert_eq!(t.rows, 0);
        assert_eq!(t.floats("x").unwrap(), &[] as &[f64]);
        assert!(t.int_lists_in("terms", 3).unwrap().is_empty());
        assert_eq!(t.column("name").unwrap(), &TableColumn::Text(vec![]));
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename at the end fails.
        let target = dir.path().join("x.parquet");
        std::fs::create_dir_all(target.join("sub")).unwrap();
        let e = write_batch(&target, &sample()).unwrap_err().to_string();
        assert!(e.contains("x.parquet"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["x.parquet"], "only the untouched directory remains");
    }

    #[test]
    fn delta_columns_of_another_type_are_written_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema_of(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("ts", DataType::Float64, false),
            Field::new("session", DataType::Int64, false),
        ]);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["u1", "u2"])),
                Arc::new(arrow_array::Float64Array::from(vec![0.5, 1.5])),
                Arc::new(Int64Array::from(vec![3, 4])),
            ],
        )
        .unwrap();
        let p = dir.path().join("log.parquet");
        write_batch(&p, &batch).unwrap();
        // The integer column is still delta-encoded, the others are not.
        let reader =
            parquet::file::reader::SerializedFileReader::new(File::open(&p).unwrap()).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&reader);
        let delta: Vec<bool> = meta
            .row_group(0)
            .columns()
            .iter()
            .map(|c| c.encodings().any(|e| e == Encoding::DELTA_BINARY_PACKED))
            .collect();
        assert_eq!(delta, [false, false, true]);
        let t = read_table(&p, None).unwrap();
        assert_eq!(
            t.column("user_id").unwrap(),
            &TableColumn::Text(vec!["u1".into(), "u2".into()])
        );
        assert_eq!(t.column("session").unwrap(), &TableColumn::Int(vec![3, 4]));
    }

    #[test]
    fn a_missing_value_inside_a_list_names_its_row() {
        let mut list = ListBuilder::new(UInt32Builder::new());
        list.values().append_slice(&[1, 2, 3]);
        list.append(true);
        list.append(true); // empty lists before the null do not shift its row
        list.append(true);
        list.values().append_null();
        list.append(true);
        let list = list.finish();
        let schema = schema_of(vec![Field::new("terms", list.data_type().clone(), false)]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(list)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.parquet");
        write_batch(&p, &batch).unwrap();
        let e = read_table(&p, None).unwrap_err().to_string();
        assert!(e.contains("row 3") && e.contains("terms"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.parquet");
        std::fs::write(&p, b"not a parquet file").unwrap();
        let e = read_table(&p, None).unwrap_err().to_string();
        assert!(e.contains("bad.parquet"), "{e}");
    }
}
