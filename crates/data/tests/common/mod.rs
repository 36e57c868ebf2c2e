//! Test helpers: loading the real ml-100k (failing loudly when it is absent), and writing a
//! data set back out in either published layout.
//!
//! The writers exist because the GroupLens zip cannot be downloaded where the tests run: to test
//! the GroupLens reader on the full data set, the test writes GroupLens-format files generated
//! from the fetched atomic files (and vice versa when GroupLens files were fetched), then checks
//! that both readers give identical data sets. They are the inverse of the documented
//! normalisation: a known year is written back as `Title (YYYY)`; an unknown year after a title
//! that itself ends in `)` as `Title (V)` (as in the real item 1412), else the bare title.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use rec_data::movielens::{
    GENRES, GROUPLENS_ZIP_SHA256, Layout, MovieLens100k, dataset_dir, find_verified,
};

/// The real ml-100k from the data directory, and the layout it was fetched in. Panics with the
/// command to run when it is absent: these tests must never pass silently without the data.
pub fn ml100k() -> (MovieLens100k, Layout) {
    let root = rec_data::fetch::data_dir().unwrap_or_else(|e| panic!("{e}"));
    let ds = MovieLens100k::load_in(&root).unwrap_or_else(|e| {
        panic!(
            "these tests need the real MovieLens-100k: run `cargo xtask data fetch ml-100k` \
             (data directory: {}).\n{e}",
            root.display()
        )
    });
    let (layout, _) = find_verified(&dataset_dir(&root), GROUPLENS_ZIP_SHA256)
        .unwrap()
        .unwrap();
    (ds, layout)
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("GroupLens files hold latin-1 text only"))
        .collect()
}

fn grouplens_title(title: &str, year: Option<u16>) -> String {
    match year {
        Some(y) => format!("{title} ({y})"),
        None if title.ends_with(')') => format!("{title} (V)"),
        None => title.to_string(),
    }
}

/// Writes `u.user`, `u.item`, `u.data` (latin-1) for `ds` into `dir`.
pub fn write_grouplens(ds: &MovieLens100k, dir: &Path) {
    let mut user = String::new();
    for u in &ds.users {
        let g = u.gender.code();
        writeln!(user, "{}|{}|{g}|{}|{}", u.id, u.age, u.occupation, u.zip).unwrap();
    }
    let mut item = String::new();
    for i in &ds.items {
        let date = i.year.map_or(String::new(), |y| format!("01-Jan-{y}"));
        let flags: Vec<&str> = (0..GENRES.len())
            .map(|g| if i.genres & (1 << g) != 0 { "1" } else { "0" })
            .collect();
        let title = grouplens_title(&i.title, i.year);
        let url = format!("http://example.invalid/{}", i.id);
        writeln!(item, "{}|{title}|{date}||{url}|{}", i.id, flags.join("|")).unwrap();
    }
    let mut data = String::new();
    let r = &ds.ratings;
    for k in 0..r.len() {
        let (u, i) = (
            ds.users[r.user[k] as usize].id,
            ds.items[r.item[k] as usize].id,
        );
        writeln!(data, "{u}\t{i}\t{}\t{}", r.rating[k], r.timestamp[k]).unwrap();
    }
    std::fs::write(dir.join("u.user"), latin1(&user)).unwrap();
    std::fs::write(dir.join("u.item"), latin1(&item)).unwrap();
    std::fs::write(dir.join("u.data"), latin1(&data)).unwrap();
}

/// Writes `<stem>.user`, `<stem>.item`, `<stem>.inter` (UTF-8, typed headers) for `ds`.
pub fn write_atomic(ds: &MovieLens100k, dir: &Path, stem: &str) {
    let mut user =
        String::from("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n");
    for u in &ds.users {
        let g = u.gender.code();
        writeln!(
            user,
            "{}\t{}\t{g}\t{}\t{}",
            u.id, u.age, u.occupation, u.zip
        )
        .unwrap();
    }
    let mut item =
        String::from("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n");
    for i in &ds.items {
        let year = i.year.map_or("V".to_string(), |y| y.to_string());
        let class: Vec<&str> = i.genre_indices().map(|g| GENRES[g as usize]).collect();
        writeln!(item, "{}\t{}\t{year}\t{}", i.id, i.title, class.join(" ")).unwrap();
    }
    let mut inter = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    let r = &ds.ratings;
    for k in 0..r.len() {
        let (u, i) = (
            ds.users[r.user[k] as usize].id,
            ds.items[r.item[k] as usize].id,
        );
        writeln!(inter, "{u}\t{i}\t{}\t{}", r.rating[k], r.timestamp[k]).unwrap();
    }
    std::fs::write(dir.join(format!("{stem}.user")), user).unwrap();
    std::fs::write(dir.join(format!("{stem}.item")), item).unwrap();
    std::fs::write(dir.join(format!("{stem}.inter")), inter).unwrap();
}
