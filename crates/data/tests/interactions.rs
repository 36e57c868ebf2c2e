//! The generic interaction reader on fixtures: roles, encoding, vocabularies reused on other
//! data, and errors that name file, line, column and value.

use std::path::{Path, PathBuf};

use rec_data::interactions::{InteractionSchema, RawColumn, RawTable, Role};
use rec_data::{Column, DataError, FieldKind, OOV, TaskKind};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn schema() -> InteractionSchema {
    InteractionSchema::from_toml_file(&fixtures().join("interactions.toml")).unwrap()
}

#[test]
fn reads_and_encodes_every_role() {
    let raw = schema()
        .read_file(&fixtures().join("interactions.csv"))
        .unwrap();
    assert_eq!(raw.len(), 4);
    assert_eq!(raw.lines, [2, 3, 4, 5]);
    let enc = raw.encode(None).unwrap();
    let b = &enc.batch;
    let s = &b.schema;
    s.validate().unwrap();
    let names: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["user", "item", "country", "tags", "price"]);
    assert_eq!(s.user_field.as_deref(), Some("user"));
    assert_eq!(s.item_field.as_deref(), Some("item"));
    assert_eq!(s.scenario_field.as_deref(), Some("country"));
    assert_eq!(s.num_scenarios, 3);
    assert_eq!(s.field("tags").unwrap().kind, FieldKind::MultiHot);
    let tasks: Vec<(&str, TaskKind)> = s.tasks.iter().map(|t| (t.name.as_str(), t.kind)).collect();
    assert_eq!(
        tasks,
        [("stars", TaskKind::Regression), ("like", TaskKind::Binary)]
    );

    // Vocabularies by frequency: u1 (2 rows) first; i1 (2 rows) first.
    assert_eq!(b.ids("user").unwrap(), &[1, 2, 1, 3]);
    assert_eq!(enc.vocabs.fields["user"].token(1), Some("u1"));
    assert_eq!(b.ids("item").unwrap(), &[1, 1, 2, 3]);
    // Scenarios in sorted name order, no OOV slot.
    assert_eq!(enc.vocabs.scenarios, ["de", "fr", "us"]);
    assert_eq!(b.scenarios(), vec![1, 0, 1, 2]);
    // Multi-hot: b (3) > a (2) > c (1); the empty cell is an empty row.
    let tags = b.column("tags").unwrap();
    assert_eq!(tags.ragged_row(0).unwrap(), &[2, 1]);
    assert_eq!(tags.ragged_row(1).unwrap(), &[] as &[u32]);
    assert_eq!(tags.ragged_row(3).unwrap(), &[3, 2, 1]);
    assert_eq!(
        b.column("price").unwrap(),
        &Column::Dense {
            values: vec![9.5, 3.0, 1.25, 7.0],
            dim: 1
        }
    );
    assert_eq!(b.label("stars").unwrap(), &[5.0, 2.0, 4.0, 1.0]);
    assert_eq!(b.label("like").unwrap(), &[1.0, 0.0, 1.0, 0.0]);
    assert_eq!(enc.timestamps.as_deref(), Some(&[100, 101, 102, 103][..]));

    // A seeded split of the encoded table keeps every row once.
    let split = enc.random_split("mine", 3, [0.5, 0.25, 0.25]);
    assert_eq!(split.train.len() + split.valid.len() + split.test.len(), 4);
    assert_eq!(split.scenario_names, ["de", "fr", "us"]);
}

#[test]
fn vocabularies_carry_over_to_new_data() {
    let s = schema();
    let train = s
        .read_file(&fixtures().join("interactions.csv"))
        .unwrap()
        .encode(None)
        .unwrap();
    let new = "user,item,stars,country,tags,price,ts\nu9,i2,3,us,z|a,1,5\n";
    let enc = s
        .read_bytes(new.as_bytes(), "new.csv")
        .unwrap()
        .encode(Some(&train.vocabs))
        .unwrap();
    let b = &enc.batch;
    assert_eq!(b.ids("user").unwrap(), &[OOV]);
    assert_eq!(b.ids("item").unwrap(), &[2]);
    assert_eq!(b.column("tags").unwrap().ragged_row(0).unwrap(), &[OOV, 2]);
    assert_eq!(b.schema.field("user").unwrap().vocab, 4);

    // An unseen scenario cannot be encoded: the error names the line.
    let bad = "user,item,stars,country,tags,price,ts\nu1,i1,3,jp,,1,5\n";
    let err = s
        .read_bytes(bad.as_bytes(), "new.csv")
        .unwrap()
        .encode(Some(&train.vocabs))
        .unwrap_err();
    match err {
        DataError::Parse {
            line,
            column,
            value,
            ..
        } => assert_eq!(
            (line, column.as_str(), value.as_str()),
            (2, "country", "jp")
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn a_file_to_score_may_leave_out_the_label_columns() {
    let s = schema();
    let new = "user,item,country,tags,price,ts\nu1,i2,fr,b,1,5\nu3,i1,us,,2,6\n";
    let names = s
        .header_names(new.as_bytes(), Path::new("new.csv"))
        .unwrap();
    assert_eq!(names, ["user", "item", "country", "tags", "price", "ts"]);
    // The full schema refuses the file: it has no `stars`.
    assert!(s.read_bytes(new.as_bytes(), "new.csv").is_err());
    let (scoring, labelled) = s.for_scoring(&names);
    assert!(!labelled);
    assert_eq!(scoring.like_threshold, None);
    let enc = scoring
        .read_bytes(new.as_bytes(), "new.csv")
        .unwrap()
        .encode(None)
        .unwrap();
    assert_eq!(enc.batch.len(), 2);
    assert!(enc.batch.schema.tasks.is_empty());
    let fields: Vec<&str> = enc
        .batch
        .schema
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(fields, ["user", "item", "country", "tags", "price"]);
    // A file with its labels keeps them; a headerless schema is left as it is.
    let full = std::fs::read(fixtures().join("interactions.csv")).unwrap();
    let names = s.header_names(&full, Path::new("x.csv")).unwrap();
    assert_eq!(s.for_scoring(&names), (s.clone(), true));
    let mut headerless = s.clone();
    headerless.header = false;
    assert_eq!(headerless.for_scoring(&[]), (headerless.clone(), true));
}

#[test]
fn bad_cells_name_file_line_column_and_value() {
    let path = fixtures().join("bad/interactions.csv");
    let err = schema().read_file(&path).unwrap_err();
    let msg = err.to_string();
    match err {
        DataError::Parse {
            file,
            line,
            column,
            value,
            ..
        } => {
            assert_eq!(file, path);
            assert_eq!(
                (line, column.as_str(), value.as_str()),
                (3, "price", "cheap")
            );
        }
        other => panic!("{other}"),
    }
    assert!(msg.contains("interactions.csv:3: column `price`"), "{msg}");

    let s = schema();
    let cases: [(&[u8], u64, &str); 4] = [
        (
            b"user,item,stars,country,tags,price,ts\nu1,i1,5,fr,a,1\n",
            2,
            "(row)",
        ),
        (
            b"user,item,stars,country,tags,price,ts\n,i1,5,fr,a,1,1\n",
            2,
            "user",
        ),
        (
            b"user,item,stars,country,tags,price,ts\nu1,i1,5,fr,a,1,soon\n",
            2,
            "ts",
        ),
        (
            b"user,item,stars,country,tags,price,ts\nu1,i1,5,fr,a,1,1\nu1,i\xff,5,fr,a,1,1\n",
            3,
            "item",
        ),
    ];
    for (text, want_line, want_col) in cases {
        match s.read_bytes(text, "x.csv").unwrap_err() {
            DataError::Parse { line, column, .. } => {
                assert_eq!((line, column.as_str()), (want_line, want_col), "{text:?}")
            }
            other => panic!("{other}"),
        }
    }
    // A missing column in the header.
    let err = s.read_bytes(b"user,item\nu,i\n", "x.csv").unwrap_err();
    assert!(err.to_string().contains("no such column"), "{err}");
    assert!(!err.to_string().contains("delimiter"), "{err}");
    // A tab-separated file read with the default `,`: the header is one column, and the error
    // says which delimiter the file seems to use and how to set it; the other way round too.
    let err = s
        .read_bytes(b"user\titem\tstars\nu\ti\t5\n", "x.tsv")
        .unwrap_err()
        .to_string();
    assert!(err.contains(r#"set delimiter = "tab""#), "{err}");
    let mut tsv = s.clone();
    tsv.delimiter = "tab".into();
    let err = tsv
        .read_bytes(b"user,item,stars,country,tags,price,ts\n", "x.csv")
        .unwrap_err()
        .to_string();
    assert!(err.contains(r#"set delimiter = ",""#), "{err}");
    // A column named twice: which one is meant would be a guess.
    let err = s
        .read_bytes(b"user,item,stars,country,tags,price,ts,user\n", "x.csv")
        .unwrap_err();
    match err {
        DataError::Parse { line, column, .. } => assert_eq!((line, column.as_str()), (1, "user")),
        other => panic!("{other}"),
    }
}

#[test]
fn line_numbers_count_crlf_blank_lines_and_lone_cr() {
    let s = schema();
    let head = "user,item,stars,country,tags,price,ts";
    let good = "u1,i1,5,fr,a,1,1";
    let bad = "u1,i1,5,fr,a,1,soon";
    // (text, line of the bad row)
    let cases = [
        (format!("{head}\r\n{bad}\r\n"), 2),
        (format!("{head}\r\n{good}\r\n{good}\r\n{bad}\r\n"), 4),
        (format!("{head}\n\n\n{bad}\n"), 4),
        (format!("{head}\n{good}\n\r\n\n{good}\n{bad}"), 6),
        (format!("{head}\r{good}\r{bad}\r"), 3),
    ];
    for (text, want) in cases {
        match s.read_bytes(text.as_bytes(), "x.csv").unwrap_err() {
            DataError::Parse { line, column, .. } => {
                assert_eq!((line, column.as_str()), (want, "ts"), "{text:?}")
            }
            other => panic!("{other}"),
        }
    }
    // The lines kept for later errors (an unknown scenario) are the same numbers.
    let train = s
        .read_bytes(format!("{head}\n{good}\n").as_bytes(), "a.csv")
        .unwrap()
        .encode(None)
        .unwrap();
    let text = format!("{head}\r\n{good}\r\n\r\nu1,i1,5,jp,a,1,1\r\n");
    match s
        .read_bytes(text.as_bytes(), "b.csv")
        .unwrap()
        .encode(Some(&train.vocabs))
        .unwrap_err()
    {
        DataError::Parse { line, column, .. } => {
            assert_eq!((line, column.as_str()), (4, "country"))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn vocabularies_lacking_a_column_are_refused_by_name() {
    let s = schema();
    let raw = s.read_file(&fixtures().join("interactions.csv")).unwrap();
    let mut vocabs = raw.encode(None).unwrap().vocabs;
    vocabs.fields.remove("tags");
    let err = raw.encode(Some(&vocabs)).unwrap_err().to_string();
    assert!(
        err.contains("`tags`") && err.contains("interactions.csv"),
        "{err}"
    );
}

#[test]
fn schemas_are_validated() {
    let bad = [
        "columns = []",
        "delimiter = \"::\"\n[[columns]]\nname = \"u\"\nrole = \"user\"",
        "[[columns]]\nname = \"u\"\nrole = \"user\"\n[[columns]]\nname = \"v\"\nrole = \"user\"",
        "[[columns]]\nname = \"u\"\nrole = \"user\"\nseparator = \"|\"",
        "like_threshold = 4.0\n[[columns]]\nname = \"u\"\nrole = \"user\"",
        "[[columns]]\nname = \"u\"\nrole = \"owner\"",
        "unknown_key = 1\n[[columns]]\nname = \"u\"\nrole = \"user\"",
        // A threshold that is not a number would label every row alike.
        "like_threshold = nan\n[[columns]]\nname = \"r\"\nrole = \"rating\"",
        "like_threshold = -inf\n[[columns]]\nname = \"r\"\nrole = \"rating\"",
        // Which rating would `like` come from?
        "like_threshold = 4.0\n[[columns]]\nname = \"r\"\nrole = \"rating\"\n[[columns]]\nname = \"q\"\nrole = \"rating\"",
    ];
    for text in bad {
        assert!(InteractionSchema::from_toml_str(text).is_err(), "{text}");
    }
    // Two rating columns without a threshold are two regression tasks, and that is fine.
    InteractionSchema::from_toml_str(
        "[[columns]]\nname = \"r\"\nrole = \"rating\"\n[[columns]]\nname = \"q\"\nrole = \"rating\"",
    )
    .unwrap();
}

#[test]
fn headerless_tsv_and_a_raw_table_built_by_another_reader() {
    let s = InteractionSchema::from_toml_str(
        r#"
        delimiter = "tab"
        header = false
        [[columns]]
        name = "user"
        role = "user"
        [[columns]]
        name = "skip"
        role = "ignore"
        [[columns]]
        name = "item"
        role = "item"
        [[columns]]
        name = "click"
        role = "label"
        "#,
    )
    .unwrap();
    let raw = s
        .read_bytes(b"a\tx\tp\t1\nb\ty\tq\tfalse\n", "t.tsv")
        .unwrap();
    let enc = raw.encode(None).unwrap();
    assert_eq!(enc.batch.label("click").unwrap(), &[1.0, 0.0]);

    // What a Parquet reader would do: build the raw columns itself and reuse the encoder.
    let table = RawTable::new(
        s.clone(),
        "data.parquet".into(),
        vec![
            RawColumn::Tokens(vec!["a".into(), "b".into()]),
            RawColumn::Tokens(vec!["p".into(), "q".into()]),
            RawColumn::Floats(vec![1.0, 0.0]),
        ],
        vec![1, 2],
    )
    .unwrap();
    let again = table.encode(None).unwrap();
    assert_eq!(again.batch.columns, enc.batch.columns);
    assert_eq!(again.batch.labels, enc.batch.labels);
    // Kinds and lengths are checked.
    assert!(
        RawTable::new(
            s,
            "x".into(),
            vec![
                RawColumn::Tokens(vec!["a".into()]),
                RawColumn::Floats(vec![1.0]),
                RawColumn::Floats(vec![1.0]),
            ],
            vec![1],
        )
        .is_err()
    );
    let _ = Role::Ignore;
}
