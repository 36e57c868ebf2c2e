//! The synthetic dataset on disk: Parquet tables plus the ground truth as JSON.
//!
//! ```text
//! DIR/
//!   items.parquet           one row per item (features and planted cluster)
//!   users/part-00000.parquet ...   per chunk of users: one row per user (profile and truth)
//!   events/part-00000.parquet ...  per chunk of users: one row per impression
//!   ground_truth.json       the planted truth (GroundTruth)
//!   config.toml             the configuration used
//!   manifest.json           counts and file list
//! ```
//! The events table is a flat interaction table (`user_id`, `item_id`, `ts`, labels `click`,
//! `fav`, `cart`, `purchase`, `rating`, categorical context `day`, `country`, `channel`,
//! `session`, `position`, and the list column `query`), so a generic interaction reader maps it
//! by column roles. The directory is written as `DIR.partial` and renamed when complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use arrow_array::builder::{ListBuilder, PrimitiveBuilder};
use arrow_array::types::{ArrowPrimitiveType, Int64Type, UInt32Type};
use arrow_array::{
    ArrayRef, Float32Array, Int64Array, ListArray, RecordBatch, UInt8Array, UInt16Array,
    UInt32Array,
};
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};

use super::SynthError;
use super::log::SynthLog;
use super::stream::Generator;
use super::table::{Chunk, Events, ItemTable, Ragged, UserTable};
use super::truth::GroundTruth;
use super::world::World;
use crate::atomic::write_atomic;
use crate::parquet_io::{Table, TableColumn, read_table, schema_of};

fn list_of<T: ArrowPrimitiveType>(r: &Ragged<T::Native>) -> ListArray {
    let field = Arc::new(Field::new("item", T::DATA_TYPE, false));
    let mut b = ListBuilder::with_capacity(PrimitiveBuilder::<T>::new(), r.len()).with_field(field);
    for i in 0..r.len() {
        b.values().append_slice(r.row(i));
        b.append(true);
    }
    b.finish()
}

fn list_field(name: &str, inner: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", inner, false))),
        false,
    )
}

fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> Result<RecordBatch, SynthError> {
    RecordBatch::try_new(schema_of(fields), cols)
        .map_err(|e| SynthError::Format(format!("building a record batch: {e}")))
}

fn u8s(v: &[u8]) -> ArrayRef {
    Arc::new(UInt8Array::from(v.to_vec()))
}
fn u32s(v: &[u32]) -> ArrayRef {
    Arc::new(UInt32Array::from(v.to_vec()))
}
fn f32s(v: &[f32]) -> ArrayRef {
    Arc::new(Float32Array::from(v.to_vec()))
}

/// The items table as a record batch.
fn items_batch(it: &ItemTable) -> Result<RecordBatch, SynthError> {
    let n = it.len() as u32;
    batch(
        vec![
            Field::new("item_id", DataType::UInt32, false),
            Field::new("category", DataType::UInt32, false),
            Field::new("brand", DataType::UInt32, false),
            Field::new("shop", DataType::UInt32, false),
            Field::new("price_level", DataType::UInt8, false),
            list_field("tags", DataType::UInt32),
            Field::new("rating", DataType::Float32, false),
            Field::new("sales", DataType::UInt32, false),
            Field::new("cluster", DataType::UInt32, false),
            Field::new("popularity", DataType::Float32, false),
            Field::new("quality", DataType::Float32, false),
        ],
        vec![
            Arc::new(UInt32Array::from_iter_values(0..n)),
            u32s(&it.category),
            u32s(&it.brand),
            u32s(&it.shop),
            u8s(&it.price),
            Arc::new(list_of::<UInt32Type>(&it.tags)),
            f32s(&it.rating),
            u32s(&it.sales),
            u32s(&it.cluster),
            f32s(&it.popularity),
            f32s(&it.quality),
        ],
    )
}

fn users_batch(u: &UserTable) -> Result<RecordBatch, SynthError> {
    let mut fields = vec![
        Field::new("user_id", DataType::UInt32, false),
        Field::new("country", DataType::UInt8, false),
        Field::new("age", DataType::UInt8, false),
        Field::new("gender", DataType::UInt8, false),
        list_field("follow_icons", DataType::UInt32),
        list_field("follow_ts", DataType::Int64),
        Field::new("cluster", DataType::UInt32, false),
        Field::new("price_level", DataType::UInt8, false),
        Field::new("activity", DataType::Float32, false),
        list_field("favourite_shops", DataType::UInt32),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        u32s(&u.user),
        u8s(&u.country),
        u8s(&u.age),
        u8s(&u.gender),
        Arc::new(list_of::<UInt32Type>(&u.follow_icon)),
        Arc::new(list_of::<Int64Type>(&u.follow_ts)),
        u32s(&u.cluster),
        u8s(&u.price_level),
        f32s(&u.activity),
        Arc::new(list_of::<UInt32Type>(&u.favourite_shops)),
    ];
    for d in 0..u.dim {
        fields.push(Field::new(format!("factor_{d}"), DataType::Float32, false));
        let col: Vec<f32> = (0..u.len()).map(|j| u.factor[j * u.dim + d]).collect();
        cols.push(Arc::new(Float32Array::from(col)));
    }
    batch(fields, cols)
}

fn events_batch(e: Events) -> Result<RecordBatch, SynthError> {
    let bit = |b: u8| -> ArrayRef {
        Arc::new(UInt8Array::from_iter_values(
            e.behaviour.iter().map(|&x| u8::from(x & b != 0)),
        ))
    };
    let query: ArrayRef = Arc::new(list_of::<UInt32Type>(&e.query));
    let (click, fav, cart, purchase) = (
        bit(super::table::behaviour::CLICK),
        bit(super::table::behaviour::FAV),
        bit(super::table::behaviour::CART),
        bit(super::table::behaviour::PURCHASE),
    );
    // The columns move into Arrow arrays without a copy.
    batch(
        vec![
            Field::new("user_id", DataType::UInt32, false),
            Field::new("item_id", DataType::UInt32, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("day", DataType::UInt16, false),
            Field::new("session", DataType::UInt32, false),
            Field::new("position", DataType::UInt8, false),
            Field::new("country", DataType::UInt8, false),
            Field::new("channel", DataType::UInt8, false),
            list_field("query", DataType::UInt32),
            Field::new("click", DataType::UInt8, false),
            Field::new("fav", DataType::UInt8, false),
            Field::new("cart", DataType::UInt8, false),
            Field::new("purchase", DataType::UInt8, false),
            Field::new("rating", DataType::Float32, false),
        ],
        vec![
            Arc::new(UInt32Array::from(e.user)),
            Arc::new(UInt32Array::from(e.item)),
            Arc::new(Int64Array::from(e.ts)),
            Arc::new(UInt16Array::from(e.day)),
            Arc::new(UInt32Array::from(e.session)),
            Arc::new(UInt8Array::from(e.position)),
            Arc::new(UInt8Array::from(e.country)),
            Arc::new(UInt8Array::from(e.channel)),
            query,
            click,
            fav,
            cart,
            purchase,
            Arc::new(Float32Array::from(e.rating)),
        ],
    )
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteSummary {
    /// Users written.
    pub users: u64,
    /// Items written.
    pub items: u64,
    /// Event rows (impressions) written.
    pub events: u64,
    /// Behaviours of each type: click, fav, cart, purchase.
    pub behaviours: [u64; 4],
    /// Event files (one per chunk).
    pub chunks: u64,
    /// Users per chunk.
    pub chunk_users: u64,
    /// File names of the chunks, in user order: `users/NAME` and `events/NAME` hold the users
    /// of the chunk and their events.
    pub parts: Vec<String>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SynthError + '_ {
    move |e| SynthError::io(path, e)
}

fn pio(e: crate::parquet_io::ParquetIoError) -> SynthError {
    SynthError::Format(e.to_string())
}

/// Writes every user of `world` to `out` in chunks of `chunk_users` (generation on `threads`
/// threads overlaps with writing), the items, the ground truth, the configuration and a
/// manifest. Memory stays bounded by a few chunks whatever the number of users. The same
/// configuration and chunk size give byte-identical files. `out` must not exist unless
/// `overwrite`, which replaces only an earlier data set of this writer (or an empty
/// directory); files appear under `out` only when everything was written. `progress` is
/// called after every chunk with the users and events written so far.
pub fn write_dataset(
    world: Arc<World>,
    out: &Path,
    threads: usize,
    chunk_users: u64,
    overwrite: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<WriteSummary, SynthError> {
    if out.exists() && !overwrite {
        return Err(SynthError::Format(format!(
            "{} exists (pass `overwrite`, on the command line `--overwrite`, to replace it)",
            out.display()
        )));
    }
    if out.exists() {
        // Only a data set this writer wrote (or an empty directory) is replaced: `overwrite`
        // must not delete whatever else a mistyped path names.
        let ours = out.join("manifest.json").is_file() && out.join("ground_truth.json").is_file();
        let empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
        if !ours && !empty {
            return Err(SynthError::Format(format!(
                "{} is not a synthetic data set (no manifest.json and ground_truth.json): \
                 refusing to replace it; choose another output directory",
                out.display()
            )));
        }
    }
    let mut tmp_name = out.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = out.with_file_name(tmp_name);
    // A `.partial` directory left by an interrupted run of this writer carries its marker; any
    // other directory of that name is somebody else's and is not deleted.
    let marker = tmp.join(PARTIAL_MARKER);
    if tmp.exists() {
        let empty = std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_none());
        if !marker.is_file() && !empty {
            return Err(SynthError::Format(format!(
                "{} exists and was not left by this generator (no {PARTIAL_MARKER}): refusing \
                 to delete it; move it or choose another output directory",
                tmp.display()
            )));
        }
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    std::fs::write(
        &marker,
        b"an unfinished synthetic data set; safe to delete\n",
    )
    .map_err(io(&marker))?;
    let events_dir = tmp.join("events");
    std::fs::create_dir_all(&events_dir).map_err(io(&events_dir))?;

    let items_path = tmp.join("items.parquet");
    crate::parquet_io::write_batch(&items_path, &items_batch(&world.items)?).map_err(pio)?;

    let mut summary = WriteSummary {
        items: world.items.len() as u64,
        chunk_users: chunk_users.max(1),
        ..Default::default()
    };
    let users_dir = tmp.join("users");
    std::fs::create_dir_all(&users_dir).map_err(io(&users_dir))?;
    let generator = Generator::new(world.clone())
        .chunk_users(chunk_users)
        .threads(threads);
    // Generate the next chunk while the current one is written: at most three chunks live.
    let result: Result<(), SynthError> = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Chunk>(1);
        scope.spawn(move || {
            for chunk in generator {
                if tx.send(chunk).is_err() {
                    break;
                }
            }
        });
        for chunk in rx {
            let name = format!("part-{:05}.parquet", summary.chunks);
            let ub = users_batch(&chunk.users)?;
            crate::parquet_io::write_batch(&users_dir.join(&name), &ub).map_err(pio)?;
            drop(ub);
            summary.chunks += 1;
            summary.users += chunk.users.len() as u64;
            summary.events += chunk.events.len() as u64;
            let counts = chunk.events.behaviour_counts();
            for (acc, c) in summary.behaviours.iter_mut().zip(counts) {
                *acc += c;
            }
            let eb = events_batch(chunk.events)?;
            crate::parquet_io::write_batch(&events_dir.join(&name), &eb).map_err(pio)?;
            summary.parts.push(name);
            progress(summary.users, summary.events);
        }
        if summary.chunks == 0 {
            return Err(SynthError::Format("no users were generated".into()));
        }
        Ok(())
    });
    result?;

    world
        .ground_truth()
        .write_json(&tmp.join("ground_truth.json"))?;
    let cfg_path = tmp.join("config.toml");
    write_atomic(&cfg_path, world.cfg.to_toml_string().as_bytes()).map_err(io(&cfg_path))?;
    let manifest = tmp.join("manifest.json");
    let text = serde_json::to_string_pretty(&summary)
        .map_err(|e| SynthError::Format(format!("manifest: {e}")))?;
    write_atomic(&manifest, text.as_bytes()).map_err(io(&manifest))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&tmp, out).map_err(io(out))?;
    // The marker goes last, from the finished directory: a kill before the rename leaves a
    // marked `.partial` (deleted by the next run), one after it a complete data set.
    let marker = out.join(PARTIAL_MARKER);
    std::fs::remove_file(&marker).map_err(io(&marker))?;
    Ok(summary)
}

/// The file that marks a `DIR.partial` directory as this writer's unfinished output.
const PARTIAL_MARKER: &str = ".rec-data-partial";

fn ints_as<T: TryFrom<i64>>(t: &Table, name: &str, max: i64) -> Result<Vec<T>, SynthError> {
    Ok(t.ints_in(name, max)
        .map_err(pio)?
        .into_iter()
        .map(|x| T::try_from(x).ok().expect("checked range"))
        .collect())
}

fn list_as(t: &Table, name: &str, max: i64) -> Result<Ragged<u32>, SynthError> {
    let r = t.int_lists_in(name, max).map_err(pio)?;
    Ok(Ragged {
        offsets: r.offsets.clone(),
        values: r.values.iter().map(|&x| x as u32).collect(),
    })
}

/// The float column `name` as f32; every value must be finite (the generator writes no NaN or
/// infinity, and one would silently drop a label or poison a ranking feature).
fn floats32(t: &Table, name: &str) -> Result<Vec<f32>, SynthError> {
    let v = t.floats(name).map_err(pio)?;
    if let Some((row, x)) = v
        .iter()
        .enumerate()
        .find(|(_, x)| !(**x as f32).is_finite())
    {
        return Err(SynthError::format(
            &t.path,
            format!("column `{name}`, row {row}: value {x} is not a finite f32"),
        ));
    }
    Ok(v.iter().map(|&x| x as f32).collect())
}

/// Reads `items.parquet`; IDs are checked against the configuration in `truth`.
pub fn read_items(path: &Path, truth: &GroundTruth) -> Result<ItemTable, SynthError> {
    let c = &truth.config;
    let t = read_table(path, None).map_err(pio)?;
    let ids: Vec<u32> = ints_as(&t, "item_id", c.items as i64 - 1)?;
    if let Some(row) = ids.iter().enumerate().position(|(r, &id)| id as usize != r) {
        return Err(SynthError::format(
            path,
            format!("row {row}: item_id {} out of order", ids[row]),
        ));
    }
    // Events and samples index the item table by ID up to `items - 1`: every item must be here.
    if ids.len() != c.items as usize {
        return Err(SynthError::format(
            path,
            format!(
                "column `item_id`: {} rows, but ground_truth.json says {} items",
                ids.len(),
                c.items
            ),
        ));
    }
    let tags = list_as(&t, "tags", c.tags as i64 - 1)?;
    // Every item has a primary tag (the DUPN samples read it).
    if let Some(row) = (0..ids.len()).find(|&i| tags.row(i).is_empty()) {
        return Err(SynthError::format(
            path,
            format!("column `tags`, row {row}: empty list (every item has at least one tag)"),
        ));
    }
    Ok(ItemTable {
        category: ints_as(&t, "category", c.categories as i64 - 1)?,
        brand: ints_as(&t, "brand", c.brands as i64 - 1)?,
        shop: ints_as(&t, "shop", c.shops as i64 - 1)?,
        price: ints_as(&t, "price_level", 6)?,
        tags,
        cluster: ints_as(&t, "cluster", truth.num_item_clusters as i64 - 1)?,
        popularity: floats32(&t, "popularity")?,
        quality: floats32(&t, "quality")?,
        rating: floats32(&t, "rating")?,
        sales: ints_as(&t, "sales", u32::MAX as i64)?,
    })
}

fn read_users(path: &Path, truth: &GroundTruth) -> Result<UserTable, SynthError> {
    let c = &truth.config;
    let t = read_table(path, None).map_err(pio)?;
    let mut u = UserTable::new(truth.dim);
    u.user = ints_as(&t, "user_id", c.users as i64 - 1)?;
    if let Some(row) = (1..u.user.len()).find(|&r| u.user[r] != u.user[r - 1] + 1) {
        return Err(SynthError::format(
            path,
            format!(
                "row {row}: user_id {} does not follow {}",
                u.user[row],
                u.user[row - 1]
            ),
        ));
    }
    u.country = ints_as(&t, "country", truth.num_scenarios as i64 - 1)?;
    u.age = ints_as(&t, "age", 5)?;
    u.gender = ints_as(&t, "gender", 1)?;
    u.cluster = ints_as(&t, "cluster", truth.num_user_clusters as i64 - 1)?;
    u.price_level = ints_as(&t, "price_level", 6)?;
    u.activity = floats32(&t, "activity")?;
    u.favourite_shops = list_as(&t, "favourite_shops", c.shops as i64 - 1)?;
    u.follow_icon = list_as(&t, "follow_icons", c.icons as i64 - 1)?;
    let ts = match t.column("follow_ts").map_err(pio)? {
        TableColumn::IntList(r) => r.clone(),
        _ => return Err(SynthError::format(path, "column `follow_ts` is not a list")),
    };
    if ts.offsets != u.follow_icon.offsets {
        return Err(SynthError::format(
            path,
            "`follow_ts` and `follow_icons` are not aligned",
        ));
    }
    u.follow_ts = ts;
    let n = u.user.len();
    let cols: Vec<Vec<f32>> = (0..truth.dim)
        .map(|d| floats32(&t, &format!("factor_{d}")))
        .collect::<Result<_, _>>()?;
    u.factor = (0..n * truth.dim)
        .map(|k| cols[k % truth.dim][k / truth.dim])
        .collect();
    Ok(u)
}

fn read_events(path: &Path, truth: &GroundTruth) -> Result<Events, SynthError> {
    let c = &truth.config;
    let t = read_table(path, None).map_err(pio)?;
    let mut behaviour: Vec<u8> = vec![0; t.rows];
    for (bit, name) in super::table::behaviour::NAMES.iter().enumerate() {
        for (b, x) in behaviour.iter_mut().zip(ints_as::<u8>(&t, name, 1)?) {
            *b |= x << bit;
        }
    }
    Ok(Events {
        user: ints_as(&t, "user_id", c.users as i64 - 1)?,
        item: ints_as(&t, "item_id", c.items as i64 - 1)?,
        ts: ints_as(&t, "ts", i64::MAX)?,
        day: ints_as(&t, "day", c.days as i64 - 1)?,
        session: ints_as(&t, "session", u32::MAX as i64)?,
        position: ints_as(&t, "position", 255)?,
        country: ints_as(&t, "country", truth.num_scenarios as i64 - 1)?,
        channel: ints_as(&t, "channel", 2)?,
        query: list_as(&t, "query", c.num_query_terms() as i64 - 1)?,
        behaviour,
        rating: floats32(&t, "rating")?,
    })
}

/// Finds the event rows of every user of `users` (events must be grouped by user in the same
/// order and sorted by time within a user).
fn attach_events(users: &mut UserTable, events: &Events, path: &Path) -> Result<(), SynthError> {
    let mut offsets = Vec::with_capacity(users.len() + 1);
    offsets.push(0usize);
    let mut r = 0usize;
    for &u in &users.user {
        let start = r;
        while r < events.len() && events.user[r] == u {
            if r > start && events.ts[r] < events.ts[r - 1] {
                return Err(SynthError::format(
                    path,
                    format!(
                        "column `ts`, row {r}: time goes backwards within user {u} ({} after {})",
                        events.ts[r],
                        events.ts[r - 1]
                    ),
                ));
            }
            r += 1;
        }
        offsets.push(r);
    }
    if r != events.len() {
        return Err(SynthError::format(
            path,
            format!(
                "row {r}: user {} is out of order or not in this chunk",
                events.user[r]
            ),
        ));
    }
    users.event_offsets = offsets;
    Ok(())
}

/// Reads a dataset written by [`write_dataset`] one chunk at a time: every item is a
/// [`SynthLog`] holding the users of one chunk (with the shared items and truth), which the
/// sample builders accept like a whole log. Memory stays bounded by one chunk, so a trainer can
/// stream batches from a 10^7-user dataset.
pub struct SynthChunks {
    dir: PathBuf,
    truth: Arc<GroundTruth>,
    items: Arc<ItemTable>,
    parts: std::vec::IntoIter<String>,
    next_user: u32,
}

impl SynthChunks {
    /// Opens the dataset at `dir` (reads its manifest, ground truth and items).
    pub fn open(dir: &Path) -> Result<Self, SynthError> {
        let truth = Arc::new(GroundTruth::read_json(&dir.join("ground_truth.json"))?);
        let mpath = dir.join("manifest.json");
        let text = std::fs::read_to_string(&mpath).map_err(io(&mpath))?;
        let m: WriteSummary =
            serde_json::from_str(&text).map_err(|e| SynthError::format(&mpath, e))?;
        let items = Arc::new(read_items(&dir.join("items.parquet"), &truth)?);
        Ok(Self {
            dir: dir.to_path_buf(),
            truth,
            items,
            parts: m.parts.into_iter(),
            next_user: 0,
        })
    }

    /// The ground truth of the dataset.
    pub fn truth(&self) -> &Arc<GroundTruth> {
        &self.truth
    }

    fn read_part(&mut self, name: &str) -> Result<SynthLog, SynthError> {
        let upath = self.dir.join("users").join(name);
        let mut users = read_users(&upath, &self.truth)?;
        if users.user.first().is_some_and(|&u| u != self.next_user) {
            return Err(SynthError::format(
                &upath,
                format!(
                    "starts at user {}, expected {}",
                    users.user[0], self.next_user
                ),
            ));
        }
        self.next_user += users.len() as u32;
        let epath = self.dir.join("events").join(name);
        let events = read_events(&epath, &self.truth)?;
        attach_events(&mut users, &events, &epath)?;
        Ok(SynthLog {
            truth: self.truth.clone(),
            items: self.items.clone(),
            users,
            events,
        })
    }
}

impl Iterator for SynthChunks {
    type Item = Result<SynthLog, SynthError>;

    fn next(&mut self) -> Option<Self::Item> {
        let name = self.parts.next()?;
        Some(self.read_part(&name))
    }
}

impl SynthLog {
    /// Reads a whole dataset written by [`write_dataset`] into memory, checking every ID against
    /// the configuration and that events are sorted by user and time. See [`SynthChunks`] to
    /// stream a large one.
    pub fn read(dir: &Path) -> Result<SynthLog, SynthError> {
        let mut chunks = SynthChunks::open(dir)?;
        let mut log = SynthLog {
            truth: chunks.truth.clone(),
            items: chunks.items.clone(),
            users: UserTable::new(chunks.truth.dim),
            events: Events::default(),
        };
        for part in chunks.by_ref() {
            let part = part?;
            log.users.extend(&part.users, log.events.len());
            log.events.extend(&part.events);
        }
        if log.users.len() as u64 != log.truth.config.users {
            return Err(SynthError::format(
                dir,
                format!(
                    "{} users in the files, {} configured",
                    log.users.len(),
                    log.truth.config.users
                ),
            ));
        }
        Ok(log)
    }
}
