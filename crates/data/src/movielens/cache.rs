//! A compact binary cache of a parsed [`MovieLens100k`], so that a reload skips text parsing.
//!
//! Layout (little-endian):
//!
//! ```text
//! magic        8 bytes   "RECML100"
//! version      u32       CACHE_VERSION; bumped whenever the payload or the readers change
//! source_len   u32       length of the source fingerprint
//! source       bytes     layout and SHA-256 of each source file (UTF-8)
//! payload_len  u64
//! payload      bytes     users, items, ratings (columnar)
//! checksum     32 bytes  SHA-256 of everything above
//! ```
//!
//! A cache is used only when magic, version, source fingerprint, length and checksum all match;
//! anything else (an older version, edited source files, a truncated or flipped byte) makes the
//! loader rebuild it from the source files. It is written atomically.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Gender, Item, MovieLens100k, Ratings, User};
use crate::error::Result;
use crate::fetch::write_atomic;

/// File name of the cache inside the data set directory.
pub const CACHE_FILE: &str = "ml-100k.cache";
/// Format version of the cache. Bump it when the payload or the normalisation changes.
pub const CACHE_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"RECML100";

/// Serialises `ds` with the source fingerprint `source`.
pub(crate) fn encode(ds: &MovieLens100k, source: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + ds.ratings.len() * 17 + ds.items.len() * 40);
    put_u32(&mut p, ds.users.len() as u32);
    for u in &ds.users {
        put_u32(&mut p, u.id);
        p.push(u.age);
        p.push(matches!(u.gender, Gender::Male) as u8);
        put_str(&mut p, &u.occupation);
        put_str(&mut p, &u.zip);
    }
    put_u32(&mut p, ds.items.len() as u32);
    for i in &ds.items {
        put_u32(&mut p, i.id);
        p.extend_from_slice(&i.year.unwrap_or(0).to_le_bytes());
        put_u32(&mut p, i.genres);
        put_str(&mut p, &i.title);
    }
    let r = &ds.ratings;
    put_u32(&mut p, r.len() as u32);
    r.user.iter().for_each(|&x| put_u32(&mut p, x));
    r.item.iter().for_each(|&x| put_u32(&mut p, x));
    p.extend_from_slice(&r.rating);
    r.timestamp
        .iter()
        .for_each(|&x| p.extend_from_slice(&x.to_le_bytes()));

    let mut out = Vec::with_capacity(p.len() + 64 + source.len());
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, CACHE_VERSION);
    put_str(&mut out, source);
    out.extend_from_slice(&(p.len() as u64).to_le_bytes());
    out.extend_from_slice(&p);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Writes the cache file atomically.
pub(crate) fn save(path: &Path, ds: &MovieLens100k, source: &str) -> Result<()> {
    write_atomic(path, &encode(ds, source))
}

/// Reads the cache at `path` if it is valid for `source`; otherwise says why not.
pub(crate) fn load(path: &Path, source: &str) -> std::result::Result<MovieLens100k, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("no cache ({e})"))?;
    decode(&bytes, source)
}

/// Decodes a cache image; any mismatch or inconsistency is an error (the caller rebuilds).
pub(crate) fn decode(bytes: &[u8], source: &str) -> std::result::Result<MovieLens100k, String> {
    if bytes.len() < MAGIC.len() + 4 + 4 + 8 + 32 || &bytes[..8] != MAGIC {
        return Err("not a cache file".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    let mut r = Reader { b: body, pos: 8 };
    let version = r.u32()?;
    if version != CACHE_VERSION {
        return Err(format!(
            "cache version {version}, this build writes {CACHE_VERSION}"
        ));
    }
    if r.str()? != source {
        return Err("the source files changed since the cache was written".into());
    }
    let plen = r.u64()? as usize;
    if plen != body.len() - r.pos {
        return Err("truncated or padded cache".into());
    }
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch (corrupt cache)".into());
    }

    let nu = r.u32()? as usize;
    let mut users = Vec::with_capacity(nu.min(1 << 24));
    for _ in 0..nu {
        let id = r.u32()?;
        let age = r.u8()?;
        let gender = if r.u8()? == 1 {
            Gender::Male
        } else {
            Gender::Female
        };
        let occupation = r.str()?.to_string();
        let zip = r.str()?.to_string();
        users.push(User {
            id,
            age,
            gender,
            occupation,
            zip,
        });
    }
    let ni = r.u32()? as usize;
    let mut items = Vec::with_capacity(ni.min(1 << 24));
    for _ in 0..ni {
        let id = r.u32()?;
        let year = r.u16()?;
        let genres = r.u32()?;
        let title = r.str()?.to_string();
        items.push(Item {
            id,
            title,
            year: (year != 0).then_some(year),
            genres,
        });
    }
    let n = r.u32()? as usize;
    let user = r.u32s(n)?;
    let item = r.u32s(n)?;
    let rating = r.take(n)?.to_vec();
    let timestamp: Vec<i64> = r
        .take(n * 8)?
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if r.pos != body.len() {
        return Err("trailing bytes in cache payload".into());
    }
    if user.iter().any(|&u| u as usize >= nu)
        || item.iter().any(|&i| i as usize >= ni)
        || rating.iter().any(|&x| !(1..=5).contains(&x))
    {
        return Err("inconsistent cache payload".into());
    }
    Ok(MovieLens100k {
        users,
        items,
        ratings: Ratings {
            user,
            item,
            rating,
            timestamp,
        },
    })
}

fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated cache")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn u32s(&mut self, n: usize) -> std::result::Result<Vec<u32>, String> {
        let bytes = self.take(n.checked_mul(4).ok_or("truncated cache")?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    fn str(&mut self) -> std::result::Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "bad string in cache".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::movielens::testutil::tiny;

    #[test]
    fn roundtrip_and_every_corruption_is_detected() {
        let ds = tiny(7);
        let img = encode(&ds, "src-a");
        assert_eq!(decode(&img, "src-a").unwrap(), ds);
        // Another source, another version, truncation and any flipped byte are all refused.
        assert!(decode(&img, "src-b").unwrap_err().contains("source"));
        let mut v = img.clone();
        v[8] ^= 1;
        assert!(decode(&v, "src-a").unwrap_err().contains("version"));
        assert!(decode(&img[..img.len() - 1], "src-a").is_err());
        for pos in (12..img.len()).step_by(97) {
            let mut c = img.clone();
            c[pos] ^= 0x10;
            assert!(decode(&c, "src-a").is_err(), "flip at {pos} went unnoticed");
        }
    }

    /// Re-seals `img` with a valid checksum, as a hostile writer would, so that the payload
    /// decoder behind the checksum is reached.
    fn reseal(mut img: Vec<u8>) -> Vec<u8> {
        if img.len() >= 32 {
            let n = img.len() - 32;
            let sum = Sha256::digest(&img[..n]);
            img[n..].copy_from_slice(&sum);
        }
        img
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Random bytes, flipped bytes, truncations, and flipped bytes re-sealed with a valid
        /// checksum: decoding never panics, and whatever it accepts is consistent.
        #[test]
        fn decoding_never_panics(
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..6),
            cut in 0usize..8192,
            random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            seal in proptest::prelude::any::<bool>(),
        ) {
            let ds = tiny(3);
            let img = encode(&ds, "src");
            let mut m = img.clone();
            let body = 8 + 4 + 4 + 3 + 8; // header up to the payload
            for (p, b) in &flips {
                let i = body + p % (m.len() - body - 32);
                m[i] ^= b | 1;
            }
            let m = if seal { reseal(m) } else { m };
            for candidate in [m, img[..cut.min(img.len())].to_vec(), random.clone()] {
                if let Ok(back) = decode(&candidate, "src") {
                    let r = &back.ratings;
                    proptest::prop_assert!(r.user.iter().all(|&u| (u as usize) < back.users.len()));
                    proptest::prop_assert!(r.item.iter().all(|&i| (i as usize) < back.items.len()));
                    proptest::prop_assert!(r.rating.iter().all(|x| (1..=5).contains(x)));
                }
            }
            if !seal {
                // An unsealed flip is always caught (by the checksum or a check before it).
                let mut c = img.clone();
                let i = body + flips[0].0 % (c.len() - body - 32);
                c[i] ^= flips[0].1 | 1;
                proptest::prop_assert!(decode(&c, "src").is_err());
            }
        }
    }
}
