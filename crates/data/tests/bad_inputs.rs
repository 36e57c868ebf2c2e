//! The corpus of bad inputs (tests/data/corpus/): every file there is read by the reader it is
//! meant for, and must give an error that names the file, the line and the field (column or
//! key) — never a panic, never a silently wrong data set. A second group of inputs that look odd
//! but are accepted with a defined behaviour (out-of-order timestamps, CRLF, a byte order mark, a
//! huge raw ID in a CSV) checks that behaviour. docs/reliability.md lists every decision.
//!
//! Corpus layout: `grouplens/<file>~<case>` and `atomic/<file>~<case>` replace `<file>` of the
//! good fixture (tests/data/grouplens, tests/data/atomic); `csv/<case>.csv` is read with
//! tests/data/interactions.toml; `schema/` and `synth-config/` are TOML files. Every corpus
//! file must have an expectation below, and every expectation a file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rec_data::DataError;
use rec_data::interactions::InteractionSchema;
use rec_data::movielens::MovieLens100k;
use rec_data::synth::SynthConfig;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn corpus(group: &str) -> BTreeMap<String, PathBuf> {
    fs::read_dir(data().join("corpus").join(group))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), p)
        })
        .collect()
}

/// What a bad input must produce: a parse error at `line`, in `column`, whose reason contains
/// `reason`.
struct Expect {
    case: &'static str,
    line: u64,
    column: &'static str,
    reason: &'static str,
}

const fn e(case: &'static str, line: u64, column: &'static str, reason: &'static str) -> Expect {
    Expect {
        case,
        line,
        column,
        reason,
    }
}

/// Checks `err` against `want`: a [`DataError::Parse`] naming `file`, and a message that says
/// all of it in one line of text.
fn check(err: DataError, file: &Path, want: &Expect) {
    let msg = err.to_string();
    match err {
        DataError::Parse {
            file: f,
            line,
            column,
            reason,
            ..
        } => {
            assert_eq!(f, file, "{}: wrong file in {msg}", want.case);
            assert_eq!(
                (line, column.as_str()),
                (want.line, want.column),
                "{}: {msg}",
                want.case
            );
            assert!(
                reason.contains(want.reason),
                "{}: reason {reason:?} lacks {:?}",
                want.case,
                want.reason
            );
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(
                msg.contains(&format!("{name}:{line}: column `{column}`")),
                "{}: {msg}",
                want.case
            );
        }
        other => panic!("{}: expected a parse error, got {other}", want.case),
    }
}

/// Runs every case of a MovieLens layout: copies the good fixture into a temporary directory,
/// replaces one file by the corpus file, and reads.
fn run_layout(group: &str, good: &str, expect: &[Expect], read: impl Fn(&Path) -> DataError) {
    let files = corpus(group);
    let names: Vec<&str> = expect.iter().map(|x| x.case).collect();
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut n = names.clone();
            n.sort_unstable();
            n
        },
        "every corpus file needs an expectation and vice versa"
    );
    for want in expect {
        let tmp = tempfile::tempdir().unwrap();
        for f in fs::read_dir(data().join(good)).unwrap() {
            let p = f.unwrap().path();
            fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
        let (target, _) = want.case.split_once('~').unwrap();
        let path = tmp.path().join(target);
        fs::copy(&files[want.case], &path).unwrap();
        check(read(tmp.path()), &path, want);
    }
}

#[test]
fn grouplens_corpus() {
    let expect = [
        e("u.data~truncated", 15, "(row)", "expected 4 fields"),
        e("u.data~extra-column", 5, "(row)", "found 5"),
        e("u.data~empty", 1, "(file)", "empty file: no ratings"),
        e("u.data~blank-lines-only", 1, "(file)", "empty file"),
        e("u.data~huge-id", 3, "user id", "out of range"),
        e(
            "u.data~negative-rating",
            7,
            "rating",
            "out of range (expected 1..=5)",
        ),
        e("u.data~fractional-rating", 2, "rating", "not an integer"),
        e("u.data~negative-timestamp", 4, "timestamp", "out of range"),
        e("u.data~nul-byte", 2, "item id", "not an integer"),
        e("u.data~unknown-item", 9, "item id", "not in u.item"),
        e(
            "u.data~duplicate-rating",
            6,
            "item id",
            "duplicate rating: user 1",
        ),
        e("u.user~missing-column", 2, "(row)", "expected 5 fields"),
        e("u.user~bad-gender", 3, "gender", "expected M or F"),
        e("u.user~duplicate-id", 4, "user id", "duplicate"),
        e("u.user~negative-age", 2, "age", "out of range"),
        e(
            "u.user~utf8-instead-of-latin1",
            4,
            "occupation",
            "looks like UTF-8",
        ),
        e("u.item~truncated", 3, "(row)", "expected 24 fields"),
        e("u.item~genre-flag", 4, "Western", "must be 0 or 1"),
        e("u.item~control-byte", 2, "movie title", "control character"),
    ];
    run_layout("grouplens", "grouplens", &expect, |dir| {
        MovieLens100k::read_grouplens(dir).unwrap_err()
    });
}

#[test]
fn atomic_corpus() {
    let expect = [
        e("tiny.inter~empty", 1, "(file)", "empty file"),
        e("tiny.inter~header-only", 1, "(file)", "no data rows"),
        e(
            "tiny.inter~missing-rating-column",
            1,
            "rating",
            "no `rating:...` column",
        ),
        e("tiny.inter~truncated", 16, "(row)", "expected 4 fields"),
        e("tiny.inter~extra-column", 6, "(row)", "found 5"),
        e("tiny.inter~huge-id", 3, "user_id", "out of range"),
        e("tiny.inter~negative-rating", 4, "rating", "out of range"),
        e("tiny.inter~nan-rating", 4, "rating", "not an integer"),
        e("tiny.inter~bad-utf8", 8, "item_id", "not UTF-8"),
        e(
            "tiny.inter~duplicate-rating",
            5,
            "item_id",
            "duplicate rating: user 4",
        ),
        e("tiny.item~latin1", 3, "movie_title", "not UTF-8"),
        e("tiny.item~unknown-genre", 5, "class", "not one of the 19"),
        e("tiny.user~gender", 5, "gender", "expected M or F"),
    ];
    run_layout("atomic", "atomic", &expect, |dir| {
        MovieLens100k::read_atomic(dir, "tiny").unwrap_err()
    });
}

fn csv_schema() -> InteractionSchema {
    InteractionSchema::from_toml_file(&data().join("interactions.toml")).unwrap()
}

#[test]
fn csv_corpus() {
    let expect = [
        e("empty.csv", 1, "(header)", "empty file"),
        e("truncated.csv", 5, "(row)", "expected 8 fields, found 4"),
        e("missing-field.csv", 3, "(row)", "found 7"),
        e("extra-field.csv", 4, "(row)", "found 9"),
        e("bad-utf8.csv", 4, "item", "not UTF-8"),
        e("latin1.csv", 5, "user", "not UTF-8"),
        e("negative-rating.csv", 3, "stars", "must not be negative"),
        e("nan-rating.csv", 2, "stars", "not a finite number"),
        e("inf-dense.csv", 4, "price", "not a finite number"),
        e("empty-item.csv", 5, "item", "empty value"),
        e(
            "fractional-timestamp.csv",
            3,
            "ts",
            "not an integer timestamp",
        ),
        e("missing-header-column.csv", 1, "stars", "no such column"),
        e("unterminated-quote.csv", 3, "(row)", "unterminated quote"),
    ];
    let files = corpus("csv");
    assert_eq!(files.len(), expect.len(), "every corpus file needs a case");
    let schema = csv_schema();
    for want in &expect {
        let path = &files[want.case];
        check(schema.read_file(path).unwrap_err(), path, want);
    }
}

/// The TOML corpora: every error names the file, the line and the key.
#[test]
fn config_corpora() {
    let schema_cases = [
        ("unknown-key.toml", 11, "seperator"),
        ("wrong-type.toml", 2, "header"),
        ("unknown-role.toml", 7, "product"),
        ("not-toml.toml", 2, "[[columns]"),
    ];
    let files = corpus("schema");
    assert_eq!(files.len(), schema_cases.len());
    for (case, line, key) in schema_cases {
        let path = &files[case];
        let msg = InteractionSchema::from_toml_file(path)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&path.display().to_string()), "{case}: {msg}");
        assert!(msg.contains(&format!("line {line}")), "{case}: {msg}");
        assert!(msg.contains(key), "{case}: {msg}");
    }

    let synth_cases = [
        ("unknown-key.toml", 6, "user_cluster"),
        ("wrong-type.toml", 2, "items"),
    ];
    let files = corpus("synth-config");
    assert_eq!(files.len(), synth_cases.len());
    for (case, line, key) in synth_cases {
        let path = &files[case];
        let msg = SynthConfig::from_toml_file(path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{case}: {msg}");
        assert!(msg.contains(&format!("line {line}")), "{case}: {msg}");
        assert!(msg.contains(key), "{case}: {msg}");
        assert_eq!(
            msg.matches("synthetic data configuration").count(),
            1,
            "{case}: {msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Odd but accepted, with a defined behaviour.

fn good_grouplens() -> MovieLens100k {
    MovieLens100k::read_grouplens(&data().join("grouplens")).unwrap()
}

fn grouplens_with(file: &str, bytes: &[u8]) -> std::result::Result<MovieLens100k, DataError> {
    let tmp = tempfile::tempdir().unwrap();
    for f in fs::read_dir(data().join("grouplens")).unwrap() {
        let p = f.unwrap().path();
        fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    fs::write(tmp.path().join(file), bytes).unwrap();
    MovieLens100k::read_grouplens(tmp.path())
}

#[test]
fn out_of_order_timestamps_crlf_and_a_bom_are_accepted() {
    let good = good_grouplens();
    let text = fs::read(data().join("grouplens/u.data")).unwrap();
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();

    // Ratings in reverse order (time goes backwards within every user): the same data set,
    // because ratings are sorted by (user, time, item) on reading.
    let mut rev = lines.clone();
    rev.reverse();
    let rev: Vec<u8> = rev.join(&b'\n').into_iter().chain(*b"\n").collect();
    assert_eq!(grouplens_with("u.data", &rev).unwrap(), good);

    // Windows line endings, a missing final newline and blank lines change nothing.
    let crlf: Vec<u8> = lines.join(&b"\r\n\r\n"[..]);
    assert_eq!(grouplens_with("u.data", &crlf).unwrap(), good);

    // A UTF-8 byte order mark in front of the first record is not part of the user id.
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(&text);
    assert_eq!(grouplens_with("u.data", &bom).unwrap(), good);
}

#[test]
fn csv_oddities_with_defined_behaviour() {
    let schema = csv_schema();
    let good = schema
        .read_file(&data().join("interactions.csv"))
        .unwrap()
        .encode(None)
        .unwrap();

    // A byte order mark before the header: the first column is still `user`.
    let text = fs::read(data().join("interactions.csv")).unwrap();
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(&text);
    let t = schema
        .read_bytes(&bom, "bom.csv")
        .unwrap()
        .encode(None)
        .unwrap();
    assert_eq!(t.batch.columns, good.batch.columns);

    // A huge raw ID is a token like any other: it gets a vocabulary index, in range.
    let huge = b"user,item,stars,country,tags,price,ts\n\
        184467440737095516150000,i1,5,fr,a,1,100\nu2,i1,3,fr,a,1,90\n";
    let t = schema
        .read_bytes(huge, "huge.csv")
        .unwrap()
        .encode(None)
        .unwrap();
    let users = t.batch.ids("user").unwrap();
    assert_eq!(users.len(), 2);
    assert!(
        users.iter().all(|&u| u >= 1 && (u as usize) < 3),
        "{users:?}"
    );

    // Timestamps out of order are kept per row as read (a time split sorts them itself).
    assert_eq!(t.timestamps.as_deref(), Some(&[100, 90][..]));

    // A row with a field too many is quoted as written, delimiters included.
    let extra = b"user,item,stars,country,tags,price,ts\nu1,i1,5,fr,a,1,100,extra\n";
    match schema.read_bytes(extra, "extra.csv").unwrap_err() {
        rec_data::DataError::Parse { line, value, .. } => {
            assert_eq!(line, 2);
            assert_eq!(value, "u1,i1,5,fr,a,1,100,extra");
        }
        other => panic!("{other}"),
    }

    // A header with no data row is a table with no row (the trainer refuses to train on it).
    let empty = schema
        .read_bytes(b"user,item,stars,country,tags,price,ts\n", "h.csv")
        .unwrap();
    assert!(empty.is_empty());
}

#[test]
fn an_encoded_id_out_of_range_is_refused_by_batch_validation() {
    let schema = csv_schema();
    let mut t = schema
        .read_file(&data().join("interactions.csv"))
        .unwrap()
        .encode(None)
        .unwrap();
    let vocab = t.batch.schema.field("item").unwrap().vocab as u32;
    if let rec_data::Column::Ids(ids) = &mut t.batch.columns[1] {
        ids[2] = vocab;
    }
    let msg = t.batch.validate().unwrap_err();
    assert!(msg.contains("item") && msg.contains("outside"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Parquet files of a synthetic data set with the wrong schema or contents.

mod parquet {
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::types::UInt32Type;
    use arrow_array::{
        Array, ArrayRef, Float32Array, Int64Array, ListArray, RecordBatch, StringArray, UInt32Array,
    };
    use arrow_schema::{DataType, Field};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use rec_data::parquet_io::{schema_of, write_batch};
    use rec_data::synth::{SynthConfig, SynthLog, World, write_dataset};

    fn read(path: &Path) -> RecordBatch {
        let f = std::fs::File::open(path).unwrap();
        let mut r = ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .with_batch_size(1 << 20)
            .build()
            .unwrap();
        let b = r.next().unwrap().unwrap();
        assert!(r.next().is_none());
        b
    }

    /// `b` with column `name` replaced by `col` (or dropped when `col` is None).
    fn with_column(b: &RecordBatch, name: &str, col: Option<ArrayRef>) -> RecordBatch {
        let mut fields = Vec::new();
        let mut cols = Vec::new();
        for (f, c) in b.schema().fields().iter().zip(b.columns()) {
            if f.name() != name {
                fields.push(f.as_ref().clone());
                cols.push(c.clone());
            } else if let Some(new) = &col {
                fields.push(Field::new(name, new.data_type().clone(), false));
                cols.push(new.clone());
            }
        }
        RecordBatch::try_new(schema_of(fields), cols).unwrap()
    }

    /// Writes a 30-user data set, lets `spoil` change it, and returns the reading error.
    fn spoiled(spoil: impl FnOnce(&Path)) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let cfg = SynthConfig {
            users: 30,
            ..SynthConfig::tiny()
        };
        write_dataset(
            Arc::new(World::new(&cfg).unwrap()),
            &dir,
            1,
            100,
            false,
            |_, _| {},
        )
        .unwrap();
        SynthLog::read(&dir).unwrap();
        spoil(&dir);
        SynthLog::read(&dir).unwrap_err().to_string()
    }

    #[test]
    fn wrong_schema_or_contents_name_the_file_column_and_row() {
        // An integer column stored as text.
        let e = spoiled(|d| {
            let p = d.join("items.parquet");
            let b = read(&p);
            let text: Vec<String> = (0..b.num_rows()).map(|i| i.to_string()).collect();
            let col: ArrayRef = Arc::new(StringArray::from(text));
            write_batch(&p, &with_column(&b, "item_id", Some(col))).unwrap();
        });
        assert!(
            e.contains("items.parquet") && e.contains("`item_id` is not an integer column"),
            "{e}"
        );

        // A missing column.
        let e = spoiled(|d| {
            let p = d.join("items.parquet");
            write_batch(&p, &with_column(&read(&p), "brand", None)).unwrap();
        });
        assert!(
            e.contains("items.parquet") && e.contains("no column `brand`"),
            "{e}"
        );

        // A value out of the configured range (12 categories in the tiny preset).
        let e = spoiled(|d| {
            let p = d.join("items.parquet");
            let b = read(&p);
            let mut v: Vec<u32> = b
                .column_by_name("category")
                .unwrap()
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap()
                .values()
                .to_vec();
            v[5] = 4_000_000_000;
            let col: ArrayRef = Arc::new(UInt32Array::from(v));
            write_batch(&p, &with_column(&b, "category", Some(col))).unwrap();
        });
        assert!(
            e.contains("items.parquet")
                && e.contains("column `category`, row 5: value 4000000000 outside 0..=11"),
            "{e}"
        );

        // An item table shorter than the configured item count (events index it up to
        // `items - 1`: this panicked when the samples were cut).
        let e = spoiled(|d| {
            let p = d.join("items.parquet");
            let b = read(&p);
            write_batch(&p, &b.slice(0, b.num_rows() - 1)).unwrap();
        });
        assert!(
            e.contains("items.parquet")
                && e.contains("column `item_id`: 599 rows, but ground_truth.json says 600 items"),
            "{e}"
        );

        // A NaN feature (it would poison the ranking features without a word).
        let e = spoiled(|d| {
            let p = d.join("items.parquet");
            let b = read(&p);
            let mut v: Vec<f32> = b
                .column_by_name("quality")
                .unwrap()
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .values()
                .to_vec();
            v[7] = f32::NAN;
            let col: ArrayRef = Arc::new(Float32Array::from(v));
            write_batch(&p, &with_column(&b, "quality", Some(col))).unwrap();
        });
        assert!(
            e.contains("items.parquet") && e.contains("column `quality`, row 7: value NaN"),
            "{e}"
        );

        // An item without tags (the DUPN samples read every item's primary tag).
        let e = spoiled(|d| {
            let p = d.join("items.parquet");
            let b = read(&p);
            let tags = b
                .column_by_name("tags")
                .unwrap()
                .as_any()
                .downcast_ref::<ListArray>()
                .unwrap();
            let rows: Vec<Option<Vec<Option<u32>>>> = (0..tags.len())
                .map(|i| {
                    let r = tags.value(i);
                    let r = r.as_any().downcast_ref::<UInt32Array>().unwrap();
                    Some(if i == 4 {
                        Vec::new()
                    } else {
                        r.values().iter().map(|&x| Some(x)).collect()
                    })
                })
                .collect();
            let col: ArrayRef = Arc::new(ListArray::from_iter_primitive::<UInt32Type, _, _>(rows));
            write_batch(&p, &with_column(&b, "tags", Some(col))).unwrap();
        });
        assert!(
            e.contains("items.parquet") && e.contains("column `tags`, row 4: empty list"),
            "{e}"
        );

        // Events out of time order within a user: the writer sorts them, so this is corrupt.
        let e = spoiled(|d| {
            let p = d.join("events/part-00000.parquet");
            let b = read(&p);
            let users = b
                .column_by_name("user_id")
                .unwrap()
                .as_any()
                .downcast_ref::<UInt32Array>()
                .unwrap()
                .values()
                .to_vec();
            let mut ts: Vec<i64> = b
                .column_by_name("ts")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec();
            let r = (1..users.len())
                .find(|&r| users[r] == users[r - 1] && ts[r] > ts[r - 1])
                .unwrap();
            ts.swap(r - 1, r);
            let col: ArrayRef = Arc::new(Int64Array::from(ts));
            assert_eq!(col.data_type(), &DataType::Int64);
            write_batch(&p, &with_column(&b, "ts", Some(col))).unwrap();
        });
        assert!(
            e.contains("part-00000.parquet")
                && e.contains("column `ts`, row")
                && e.contains("time goes backwards"),
            "{e}"
        );
    }
}
