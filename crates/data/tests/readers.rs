//! The MovieLens readers on small hand-written fixtures (fictional movies; no MovieLens data is
//! committed): both layouts give the same data set, and malformed files give errors that name
//! file, line, column and value.

use std::fs;
use std::path::{Path, PathBuf};

use rec_data::DataError;
use rec_data::movielens::{GENRES, Gender, MovieLens100k};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
fn both_layouts_give_the_same_data_set() {
    let gl = MovieLens100k::read_grouplens(&fixtures().join("grouplens")).unwrap();
    let at = MovieLens100k::read_atomic(&fixtures().join("atomic"), "tiny").unwrap();
    assert_eq!(gl, at);
    assert_eq!(
        (gl.num_users(), gl.num_items(), gl.num_ratings()),
        (4, 5, 15)
    );

    // The normalisation, item by item.
    let titles: Vec<(&str, Option<u16>)> = gl
        .items
        .iter()
        .map(|i| (i.title.as_str(), i.year))
        .collect();
    assert_eq!(
        titles,
        [
            ("Blue Harbour", Some(1995)),
            ("Les Misérables du Nord", Some(1987)), // latin-1 0xE9 in u.item
            ("Night Train (Special Edition)", Some(1972)),
            ("The Long Road (1994)", None), // "(1994) (V)": RecBole's year is "V"
            ("unknown", None),              // RecBole spells it "unkonwn"
        ]
    );
    let names = |i: usize| -> Vec<&str> {
        gl.items[i]
            .genre_indices()
            .map(|g| GENRES[g as usize])
            .collect()
    };
    assert_eq!(names(0), ["Animation", "Children's", "Comedy"]);
    assert_eq!(names(4), ["unknown"]);
    assert_eq!(gl.users[3].zip, "T8H1N");
    assert_eq!(gl.users[1].gender, Gender::Female);

    // Ratings are in canonical order: by user, then time, then item (the atomic fixture lists
    // them in reverse and with its columns in another order).
    let r = &gl.ratings;
    let keys: Vec<(u32, i64, u32)> = (0..r.len())
        .map(|k| (r.user[k], r.timestamp[k], r.item[k]))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    // User 1 rated items 5, 1, 2 (tie at 881250949, broken by item), 3.
    assert_eq!(&r.item[..4], &[4, 0, 1, 2]);
    assert_eq!(&r.rating[..4], &[1, 5, 3, 4]);
}

/// Copies the good fixture files of a layout into a temporary directory and replaces `file` by
/// the bad fixture `bad`.
fn with_bad_file(layout: &str, file: &str, bad: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in fs::read_dir(fixtures().join(layout)).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    fs::copy(fixtures().join("bad").join(bad), tmp.path().join(file)).unwrap();
    tmp
}

fn parse_error(e: DataError) -> (PathBuf, u64, String, String, String) {
    match e {
        DataError::Parse {
            file,
            line,
            column,
            value,
            reason,
        } => (file, line, column, value, reason),
        other => panic!("expected a parse error, got {other}"),
    }
}

#[test]
fn bad_column_count_names_file_and_line() {
    let dir = with_bad_file("grouplens", "u.data", "u.data.columns");
    let err = MovieLens100k::read_grouplens(dir.path()).unwrap_err();
    let msg = err.to_string();
    let (file, line, column, value, reason) = parse_error(err);
    assert_eq!(file, dir.path().join("u.data"));
    assert_eq!(line, 3);
    assert_eq!(column, "(row)");
    assert_eq!(value, "1\t3\t4");
    assert!(reason.contains("expected 4 fields"), "{reason}");
    assert!(msg.contains("u.data:3"), "{msg}");
}

#[test]
fn non_numeric_rating_names_the_column_and_value() {
    let dir = with_bad_file("grouplens", "u.data", "u.data.rating");
    let (file, line, column, value, _) =
        parse_error(MovieLens100k::read_grouplens(dir.path()).unwrap_err());
    assert_eq!(file, dir.path().join("u.data"));
    assert_eq!(
        (line, column.as_str(), value.as_str()),
        (2, "rating", "three")
    );

    let dir = with_bad_file("atomic", "tiny.inter", "tiny.inter.rating");
    let err = MovieLens100k::read_atomic(dir.path(), "tiny").unwrap_err();
    let msg = err.to_string();
    let (file, line, column, value, _) = parse_error(err);
    assert_eq!(file, dir.path().join("tiny.inter"));
    // Line 1 is the header.
    assert_eq!(
        (line, column.as_str(), value.as_str()),
        (4, "rating", "five")
    );
    assert!(msg.contains("tiny.inter:4: column `rating`"), "{msg}");
}

#[test]
fn bad_encoding_is_an_error_in_both_layouts() {
    // A C1 control byte (0x92, a Windows-1252 quote) is not latin-1 text.
    let dir = with_bad_file("grouplens", "u.item", "u.item.encoding");
    let (_, line, column, _, reason) =
        parse_error(MovieLens100k::read_grouplens(dir.path()).unwrap_err());
    assert_eq!((line, column.as_str()), (2, "movie title"));
    assert!(reason.contains("bad encoding"), "{reason}");

    // A lone latin-1 byte is not UTF-8.
    let dir = with_bad_file("atomic", "tiny.item", "tiny.item.encoding");
    let (_, line, column, _, reason) =
        parse_error(MovieLens100k::read_atomic(dir.path(), "tiny").unwrap_err());
    assert_eq!((line, column.as_str()), (3, "movie_title"));
    assert!(reason.contains("not UTF-8"), "{reason}");

    // A UTF-8 file in the GroupLens layout would be misread as latin-1: refused.
    let dir = with_bad_file("grouplens", "u.user", "../grouplens/u.user");
    let item = fs::read(fixtures().join("grouplens/u.item")).unwrap();
    let utf8 = item
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .into_bytes();
    fs::write(dir.path().join("u.item"), utf8).unwrap();
    let (_, line, _, _, reason) =
        parse_error(MovieLens100k::read_grouplens(dir.path()).unwrap_err());
    assert_eq!(line, 2);
    assert!(reason.contains("looks like UTF-8"), "{reason}");
}

#[test]
fn unknown_ids_and_missing_files_are_errors() {
    let dir = with_bad_file("grouplens", "u.data", "../grouplens/u.data");
    fs::write(dir.path().join("u.data"), "1\t1\t5\t1\n9\t1\t5\t1\n").unwrap();
    let (_, line, column, value, _) =
        parse_error(MovieLens100k::read_grouplens(dir.path()).unwrap_err());
    assert_eq!((line, column.as_str(), value.as_str()), (2, "user id", "9"));

    fs::remove_file(dir.path().join("u.user")).unwrap();
    let err = MovieLens100k::read_grouplens(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("u.user"), "{err}");
}
