//! Reader for GroupLens's original layout: `u.user` and `u.item` (pipe separated, latin-1) and
//! `u.data` (tab separated). Column names in error messages follow the data set's README.

use std::collections::HashSet;
use std::path::Path;

use super::{GENRES, Gender, Item, MovieLens100k, RawRating, User, split_title_year};
use crate::error::Result;
use crate::text::{At, empty_file, lines, read_file};

pub(super) fn read(dir: &Path) -> Result<MovieLens100k> {
    let users = read_users(&dir.join("u.user"))?;
    let items = read_items(&dir.join("u.item"))?;
    let uids: HashSet<u32> = users.iter().map(|u| u.id).collect();
    let iids: HashSet<u32> = items.iter().map(|i| i.id).collect();
    let ratings = read_ratings(&dir.join("u.data"), &uids, &iids)?;
    MovieLens100k::assemble(users, items, ratings)
}

fn read_users(path: &Path) -> Result<Vec<User>> {
    let data = read_file(path)?;
    let mut users = Vec::new();
    let mut seen = HashSet::new();
    for (line, bytes) in lines(&data) {
        let at = At { file: path, line };
        let f = at.fields(bytes, b'|', 5)?;
        let id = at.integral("user id", f[0], 1, u32::MAX as i64)? as u32;
        if !seen.insert(id) {
            return Err(at.err("user id", &id.to_string(), "duplicate user id"));
        }
        let age = at.integral("age", f[1], 0, 255)? as u8;
        let g = at.latin1("gender", f[2])?;
        let gender = Gender::parse(&g).ok_or_else(|| at.err("gender", &g, "expected M or F"))?;
        let occupation = at.latin1("occupation", f[3])?;
        if occupation.is_empty() {
            return Err(at.err("occupation", "", "empty occupation"));
        }
        let zip = at.latin1("zip code", f[4])?;
        users.push(User {
            id,
            age,
            gender,
            occupation,
            zip,
        });
    }
    if users.is_empty() {
        return Err(empty_file(path, "users"));
    }
    Ok(users)
}

fn read_items(path: &Path) -> Result<Vec<Item>> {
    let data = read_file(path)?;
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for (line, bytes) in lines(&data) {
        let at = At { file: path, line };
        let f = at.fields(bytes, b'|', 5 + GENRES.len())?;
        let id = at.integral("movie id", f[0], 1, u32::MAX as i64)? as u32;
        if !seen.insert(id) {
            return Err(at.err("movie id", &id.to_string(), "duplicate movie id"));
        }
        let raw_title = at.latin1("movie title", f[1])?;
        // The release date, video release date and URL are decoded only to check the encoding.
        for (col, v) in [
            ("release date", f[2]),
            ("video release date", f[3]),
            ("IMDb URL", f[4]),
        ] {
            at.latin1(col, v)?;
        }
        let mut genres = 0u32;
        for (g, name) in GENRES.iter().enumerate() {
            match f[5 + g] {
                b"0" => {}
                b"1" => genres |= 1 << g,
                other => {
                    return Err(at.err(
                        name,
                        &String::from_utf8_lossy(other),
                        "genre flag must be 0 or 1",
                    ));
                }
            }
        }
        let (title, year) = split_title_year(&raw_title);
        items.push(Item {
            id,
            title,
            year,
            genres,
        });
    }
    if items.is_empty() {
        return Err(empty_file(path, "movies"));
    }
    Ok(items)
}

fn read_ratings(path: &Path, users: &HashSet<u32>, items: &HashSet<u32>) -> Result<Vec<RawRating>> {
    let data = read_file(path)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(data.len() / 20);
    for (line, bytes) in lines(&data) {
        let at = At { file: path, line };
        let f = at.fields(bytes, b'\t', 4)?;
        let user = at.integral("user id", f[0], 1, u32::MAX as i64)? as u32;
        if !users.contains(&user) {
            return Err(at.err("user id", &user.to_string(), "user not in u.user"));
        }
        let item = at.integral("item id", f[1], 1, u32::MAX as i64)? as u32;
        if !items.contains(&item) {
            return Err(at.err("item id", &item.to_string(), "item not in u.item"));
        }
        // A second rating of one pair would let the split put it in training and test.
        if !seen.insert((user, item)) {
            return Err(at.err(
                "item id",
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
    if out.is_empty() {
        return Err(empty_file(path, "ratings"));
    }
    Ok(out)
}
