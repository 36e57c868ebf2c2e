//! Reader for RecBole's "atomic" layout: `<stem>.user`, `<stem>.item`, `<stem>.inter`, tab
//! separated, UTF-8, with a typed header line (`user_id:token`, `rating:float`, ...). Columns
//! are found by name, so their order does not matter and extra columns are ignored.

use std::collections::HashSet;
use std::path::Path;

use super::{GENRES, Gender, Item, MovieLens100k, RawRating, User, parse_year};
use crate::error::Result;
use crate::text::{At, empty_file, lines, read_file};

pub(super) fn read(dir: &Path, stem: &str) -> Result<MovieLens100k> {
    let users = read_users(&dir.join(format!("{stem}.user")))?;
    let items = read_items(&dir.join(format!("{stem}.item")))?;
    let uids: HashSet<u32> = users.iter().map(|u| u.id).collect();
    let iids: HashSet<u32> = items.iter().map(|i| i.id).collect();
    let ratings = read_ratings(&dir.join(format!("{stem}.inter")), &uids, &iids)?;
    MovieLens100k::assemble(users, items, ratings)
}

/// A parsed atomic file: the positions of the wanted columns, and the data rows.
struct Table<'a> {
    path: &'a Path,
    ncols: usize,
    cols: Vec<usize>,
    rows: Vec<(u64, &'a [u8])>,
}

impl<'a> Table<'a> {
    /// Reads the header of `data` and finds the columns `wanted` (names without the type).
    fn new(path: &'a Path, data: &'a [u8], wanted: &[&str]) -> Result<Self> {
        let mut it = lines(data);
        let Some((hline, header)) = it.next() else {
            return Err(empty_file(path, "header line"));
        };
        let at = At {
            file: path,
            line: hline,
        };
        let header = at.utf8("(header)", header)?;
        let names: Vec<&str> = header
            .split('\t')
            .map(|h| h.split_once(':').map_or(h, |(n, _)| n))
            .collect();
        let cols = wanted
            .iter()
            .map(|w| {
                names
                    .iter()
                    .position(|n| n == w)
                    .ok_or_else(|| at.err(w, header, format!("the header has no `{w}:...` column")))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<(u64, &[u8])> = it.collect();
        if rows.is_empty() {
            return Err(at.err(
                "(file)",
                "",
                "no data rows after the header (truncated or not the right file?)",
            ));
        }
        Ok(Self {
            path,
            ncols: names.len(),
            cols,
            rows,
        })
    }

    /// The wanted fields of each row, with the row's position.
    fn rows(&self) -> impl Iterator<Item = Result<(At<'a>, Vec<&'a [u8]>)>> + '_ {
        self.rows.iter().map(move |&(line, bytes)| {
            let at = At {
                file: self.path,
                line,
            };
            let f = at.fields(bytes, b'\t', self.ncols)?;
            Ok((at, self.cols.iter().map(|&c| f[c]).collect()))
        })
    }
}

fn read_users(path: &Path) -> Result<Vec<User>> {
    let data = read_file(path)?;
    let t = Table::new(
        path,
        &data,
        &["user_id", "age", "gender", "occupation", "zip_code"],
    )?;
    let mut users = Vec::new();
    let mut seen = HashSet::new();
    for row in t.rows() {
        let (at, f) = row?;
        let id = at.integral("user_id", f[0], 1, u32::MAX as i64)? as u32;
        if !seen.insert(id) {
            return Err(at.err("user_id", &id.to_string(), "duplicate user id"));
        }
        let age = at.integral("age", f[1], 0, 255)? as u8;
        let g = at.utf8("gender", f[2])?;
        let gender = Gender::parse(g).ok_or_else(|| at.err("gender", g, "expected M or F"))?;
        let occupation = at.utf8("occupation", f[3])?.to_string();
        if occupation.is_empty() {
            return Err(at.err("occupation", "", "empty occupation"));
        }
        let zip = at.utf8("zip_code", f[4])?.to_string();
        users.push(User {
            id,
            age,
            gender,
            occupation,
            zip,
        });
    }
    Ok(users)
}

fn read_items(path: &Path) -> Result<Vec<Item>> {
    let data = read_file(path)?;
    let t = Table::new(
        path,
        &data,
        &["item_id", "movie_title", "release_year", "class"],
    )?;
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for row in t.rows() {
        let (at, f) = row?;
        let id = at.integral("item_id", f[0], 1, u32::MAX as i64)? as u32;
        if !seen.insert(id) {
            return Err(at.err("item_id", &id.to_string(), "duplicate item id"));
        }
        let mut title = at.utf8("movie_title", f[1])?.trim().to_string();
        // RecBole's file misspells item 267's title (`unknown` in GroupLens's u.item).
        if title == "unkonwn" {
            title = "unknown".into();
        }
        let year = parse_year(at.utf8("release_year", f[2])?.trim());
        let class = at.utf8("class", f[3])?;
        let mut genres = 0u32;
        for tok in class.split(' ').filter(|t| !t.is_empty()) {
            let g = GENRES
                .iter()
                .position(|&n| n == tok)
                .ok_or_else(|| at.err("class", tok, "not one of the 19 MovieLens genres"))?;
            genres |= 1 << g;
        }
        items.push(Item {
            id,
            title,
            year,
            genres,
        });
    }
    Ok(items)
}

fn read_ratings(path: &Path, users: &HashSet<u32>, items: &HashSet<u32>) -> Result<Vec<RawRating>> {
    let data = read_file(path)?;
    let t = Table::new(path, &data, &["user_id", "item_id", "rating", "timestamp"])?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(t.rows.len());
    for row in t.rows() {
        let (at, f) = row?;
        let user = at.integral("user_id", f[0], 1, u32::MAX as i64)? as u32;
        if !users.contains(&user) {
            return Err(at.err("user_id", &user.to_string(), "user not in the .user file"));
        }
        let item = at.integral("item_id", f[1], 1, u32::MAX as i64)? as u32;
        if !items.contains(&item) {
            return Err(at.err("item_id", &item.to_string(), "item not in the .item file"));
        }
        // A second rating of one pair would let the split put it in training and test.
        if !seen.insert((user, item)) {
            return Err(at.err(
                "item_id",
                &item.to_string(),
                format!("duplicate rating: user {user} already rated this item"),
            ));
        }
        let rating = at.integral("rating", f[2], 1, 5)? as u8;
        let timestamp = at.integral("timestamp", f[3], 0, i64::MAX / 2)?;
        out.push(RawRating {
            user,
            item,
            rating,
            timestamp,
        });
    }
    Ok(out)
}
