//! Sample builders: the synthetic log as `rec_data::Batch`es, split by day (P-ECOM / P-MS: train
//! on days 0..D-2, test on day D-1; days counted from 0).
//!
//! Conventions shared by every builder:
//! - categorical values are the file ID + 1 (0 = OOV); the scenario field `country` keeps
//!   `0..num_scenarios` (no OOV), as the schema requires;
//! - `hour` is a band of 4 hours (1..=6), `weekend` is 1 on weekdays and 2 on Saturday/Sunday;
//! - a request's history is every behaviour strictly before the request's session started (a
//!   result page is ranked before any of its clicks), the most recent `max_history` kept,
//!   oldest first; an impression with click, fav, cart and purchase gives four behaviours.

use std::sync::Arc;

use rand::Rng;

use super::config::PRICE_LEVELS;
use super::log::SynthLog;
use super::table::{behaviour, channel};
use crate::batch::{Batch, Column};
use crate::iter::{mix_seed, rng};
use crate::schema::{FieldSpec, Schema, TaskKind, TaskSpec};

/// Train and test samples of one protocol.
#[derive(Debug, Clone)]
pub struct Split {
    /// Days 0..D-2.
    pub train: Batch,
    /// Day D.
    pub test: Batch,
}

/// Which labels the CTR builder attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrTarget {
    /// Task `click` (binary).
    Click,
    /// Task `rating` (regression): `scale * R[u, i] + noise` with R = U (C S).
    Rating,
    /// Both tasks, `click` first.
    Both,
}

/// Options of [`SynthLog::ctr_split`] (CEL and SAML).
#[derive(Debug, Clone)]
pub struct CtrOptions {
    /// Labels to attach (default: click).
    pub target: CtrTarget,
    /// Length of the optional behaviour sequence (`hist_item_id`, `hist_category`: the most
    /// recently clicked items before the session). 0 (default) leaves it out.
    pub history: usize,
    /// Share of non-clicked impressions kept (1.0 = all; seeded).
    pub negative_rate: f32,
    /// A user with at most this many training impressions is in the `cold_users` slice.
    pub cold_user_max: u32,
    /// An item with at most this many training impressions is in the `cold_items` slice.
    pub cold_item_max: u32,
    /// Seed of the negative subsampling.
    pub seed: u64,
}

impl Default for CtrOptions {
    fn default() -> Self {
        Self {
            target: CtrTarget::Click,
            history: 0,
            negative_rate: 1.0,
            cold_user_max: 10,
            cold_item_max: 5,
            seed: 0,
        }
    }
}

/// Options of [`SynthLog::dupn_split`].
#[derive(Debug, Clone)]
pub struct DupnOptions {
    /// Most behaviours in a sample's history (default 50; the paper uses up to 100).
    pub max_history: usize,
    /// Share of non-clicked impressions kept in the CTR stream (seeded).
    pub ctr_negative_rate: f32,
    /// L2R sample weight n_i by the strongest behaviour on the impression: none, click, fav,
    /// cart, purchase (default 1, 1, 2, 3, 5: a purchase counts more than a click).
    pub l2r_weights: [f32; 5],
    /// Non-followed icons drawn as negatives per follow event (FIFP).
    pub fifp_negatives: usize,
    /// Non-favourite shops drawn as negatives per positive (SPP).
    pub spp_negatives: usize,
    /// Seed of subsampling and negative draws.
    pub seed: u64,
    /// First day (0-based) whose samples go into the training streams (default 0: every
    /// training day, 0..=D-2; day D-1 is the test day). The daily update sets it to the new day, so that the model fine-tuned
    /// from yesterday's checkpoint trains on that day only; earlier behaviours still form the
    /// histories, and the kept samples, the test day and every random draw are the same as
    /// without it.
    pub train_from_day: u16,
}

impl Default for DupnOptions {
    fn default() -> Self {
        Self {
            max_history: 50,
            ctr_negative_rate: 1.0,
            l2r_weights: [1.0, 1.0, 2.0, 3.0, 5.0],
            fifp_negatives: 1,
            spp_negatives: 1,
            seed: 0,
            train_from_day: 0,
        }
    }
}

/// The five DUPN task streams of one split, over one shared schema. Each batch carries labels
/// only for its own task (NaN elsewhere); only the L2R batch has sample weights.
#[derive(Debug, Clone)]
pub struct DupnTasks {
    /// CTR: every impression (non-clicks subsampled by `ctr_negative_rate`); label click.
    pub ctr: Batch,
    /// L2R: every search impression; label click; weight by strongest behaviour.
    pub l2r: Batch,
    /// PPP: every session with a purchase; label the price level (0..7) of its first purchase.
    pub ppp: Batch,
    /// FIFP: every follow event (label 1) and drawn non-followed icons (label 0).
    pub fifp: Batch,
    /// SPP (transfer task): per active day a favourite shop (1) and drawn other shops (0).
    pub spp: Batch,
}

/// DUPN samples: the shared schema and the train and test task streams.
#[derive(Debug, Clone)]
pub struct DupnSplit {
    /// The schema of every batch.
    pub schema: Arc<Schema>,
    /// Days 0..D-2.
    pub train: DupnTasks,
    /// Day D.
    pub test: DupnTasks,
}

/// The tasks DUPN trains jointly (SPP is the transfer task).
pub const DUPN_JOINT_TASKS: [&str; 4] = ["ctr", "l2r", "ppp", "fifp"];

impl DupnTasks {
    /// The batch of task `name` (`ctr`, `l2r`, `ppp`, `fifp`, `spp`).
    pub fn get(&self, name: &str) -> Option<&Batch> {
        match name {
            "ctr" => Some(&self.ctr),
            "l2r" => Some(&self.l2r),
            "ppp" => Some(&self.ppp),
            "fifp" => Some(&self.fifp),
            "spp" => Some(&self.spp),
            _ => None,
        }
    }

    /// The streams of `tasks` concatenated into one batch (shuffle it with
    /// [`BatchIter`](crate::BatchIter)); weights are 1 where a stream has none.
    pub fn mixed(&self, tasks: &[&str]) -> Batch {
        let parts: Vec<&Batch> = tasks.iter().filter_map(|t| self.get(t)).collect();
        if parts.is_empty() {
            return Batch::empty(self.ctr.schema.clone());
        }
        concat(&parts)
    }

    /// The jointly trained streams (CTR, L2R, PPP, FIFP) as one batch.
    pub fn joint(&self) -> Batch {
        self.mixed(&DUPN_JOINT_TASKS)
    }
}

/// Concatenates batches of one schema; weights become 1 where a batch has none (and stay absent
/// if no batch has any); slices are kept only when every batch has them.
///
/// # Panics
/// If `parts` is empty (there is no schema to build on) or the batches have different schemas.
pub fn concat(parts: &[&Batch]) -> Batch {
    let Some(first) = parts.first() else {
        panic!("concat needs at least one batch");
    };
    let mut out = Batch::empty(first.schema.clone());
    let any_weights = parts.iter().any(|b| b.weights.is_some());
    let mut weights = Vec::new();
    for b in parts {
        for (c, o) in out.columns.iter_mut().zip(&b.columns) {
            c.extend(o).expect("batches of one schema");
        }
        for (l, o) in out.labels.iter_mut().zip(&b.labels) {
            l.extend_from_slice(o);
        }
        if any_weights {
            match &b.weights {
                Some(w) => weights.extend_from_slice(w),
                None => weights.extend(std::iter::repeat_n(1.0, b.len())),
            }
        }
    }
    if any_weights {
        out.weights = Some(weights);
    }
    for s in &first.slices {
        let mut mask = Vec::new();
        for b in parts {
            match b.slice(&s.name) {
                Some(m) => mask.extend_from_slice(m),
                None => {
                    mask.clear();
                    break;
                }
            }
        }
        if mask.len() == out.len() {
            out.slices.push(crate::batch::Slice {
                name: s.name.clone(),
                mask,
            });
        }
    }
    out
}

/// Bucket (0..9) of the time between a behaviour and the request, in seconds: < 1 min, < 10 min,
/// < 1 h, < 6 h, < 1 day, < 2 days, < 4 days, < 8 days, more.
pub fn time_gap_bucket(gap: i64) -> u32 {
    const EDGES: [i64; 8] = [60, 600, 3_600, 21_600, 86_400, 172_800, 345_600, 691_200];
    EDGES.partition_point(|&e| e <= gap) as u32
}

/// Hour band 1..=6 (4 hours each) of a Unix time.
fn hour_band(ts: i64) -> u32 {
    (ts.rem_euclid(86_400) / 3_600 / 4) as u32 + 1
}

/// 2 on Saturday and Sunday, else 1 (1970-01-01 was a Thursday).
fn weekend(ts: i64) -> u32 {
    let weekday = (ts.div_euclid(86_400) + 3).rem_euclid(7);
    if weekday >= 5 { 2 } else { 1 }
}

/// A uniform number in [0, 1) for subsampling event row `r`, keyed on the impression's identity
/// (user, session, position), so a chunk and the whole log make the same choices.
fn keep_unit(seed: u64, ev: &super::table::Events, r: usize) -> f32 {
    let key = (u64::from(ev.session[r]) << 8) | u64::from(ev.position[r]);
    (mix_seed(mix_seed(seed, u64::from(ev.user[r])), key) >> 40) as f32 / (1u64 << 24) as f32
}

/// Appends one sample's values, field by field.
struct Builder {
    schema: Arc<Schema>,
    cols: Vec<Column>,
    labels: Vec<Vec<f32>>,
    weights: Option<Vec<f32>>,
}

impl Builder {
    fn new(schema: &Arc<Schema>, weighted: bool) -> Self {
        let b = Batch::empty(schema.clone());
        Self {
            schema: schema.clone(),
            cols: b.columns,
            labels: b.labels,
            weights: weighted.then(Vec::new),
        }
    }

    fn id(&mut self, f: usize, v: u32) {
        match &mut self.cols[f] {
            Column::Ids(x) => x.push(v),
            _ => unreachable!("field {f} is categorical"),
        }
    }

    fn ragged(&mut self, f: usize, vals: impl IntoIterator<Item = u32>) {
        match &mut self.cols[f] {
            Column::Ragged { values, offsets } => {
                values.extend(vals);
                offsets.push(values.len() as u32);
            }
            _ => unreachable!("field {f} is ragged"),
        }
    }

    fn dense(&mut self, f: usize, vals: &[f32]) {
        match &mut self.cols[f] {
            Column::Dense { values, .. } => values.extend_from_slice(vals),
            _ => unreachable!("field {f} is dense"),
        }
    }

    /// Closes a sample: one label per task (NaN except `task`), and its weight.
    fn labels(&mut self, task: Option<(usize, f32)>, weight: f32) {
        for (t, l) in self.labels.iter_mut().enumerate() {
            l.push(match task {
                Some((k, v)) if k == t => v,
                _ => f32::NAN,
            });
        }
        if let Some(w) = &mut self.weights {
            w.push(weight);
        }
    }

    fn finish(self) -> Batch {
        Batch {
            schema: self.schema,
            columns: self.cols,
            labels: self.labels,
            weights: self.weights,
            slices: Vec::new(),
        }
    }
}

/// A behaviour in a user's history.
#[derive(Clone, Copy)]
struct Behav {
    item: u32,
    /// 1 click, 2 fav, 3 cart, 4 purchase.
    kind: u8,
    channel: u8,
    ts: i64,
}

impl SynthLog {
    /// The behaviours of user number `j`, in time order.
    fn behaviours(&self, j: usize, clicks_only: bool) -> Vec<Behav> {
        let ev = &self.events;
        let mut out = Vec::new();
        for r in self.users.events_of(j) {
            let bits = ev.behaviour[r];
            for t in 0..4u8 {
                if bits >> t & 1 == 1 && (t == 0 || !clicks_only) {
                    out.push(Behav {
                        item: ev.item[r],
                        kind: t + 1,
                        channel: ev.channel[r],
                        ts: ev.ts[r],
                    });
                }
            }
        }
        out
    }

    fn vocab(&self) -> Vocab {
        let c = self.config();
        Vocab {
            users: c.users as usize + 1,
            items: self.items.len() + 1,
            categories: c.categories as usize + 1,
            brands: c.brands as usize + 1,
            shops: c.shops as usize + 1,
            tags: c.tags as usize + 1,
            terms: c.num_query_terms() as usize + 1,
            icons: c.icons as usize + 1,
            scenarios: c.num_scenarios(),
        }
    }

    /// The schema of [`ctr_split`](Self::ctr_split) for `opts`.
    ///
    /// Fields: `user_id`, `item_id`, `category`, `brand`, `shop`, `price` (1..=7), `tags`
    /// (multi-hot), `country` (the scenario field), `channel` (1 search, 2 recommend, 3 ads),
    /// `age`, `gender`, `hour`; with `history > 0` also the aligned sequences `hist_item_id`
    /// (sharing `item_id`) and `hist_category` (sharing `category`), group `hist`.
    pub fn ctr_schema(&self, opts: &CtrOptions) -> Schema {
        let v = self.vocab();
        let mut fields = vec![
            FieldSpec::categorical("user_id", v.users),
            FieldSpec::categorical("item_id", v.items),
            FieldSpec::categorical("category", v.categories),
            FieldSpec::categorical("brand", v.brands),
            FieldSpec::categorical("shop", v.shops),
            FieldSpec::categorical("price", PRICE_LEVELS + 1),
            FieldSpec::multi_hot("tags", v.tags),
            FieldSpec::categorical("country", v.scenarios),
            FieldSpec::categorical("channel", 4),
            FieldSpec::categorical("age", 7),
            FieldSpec::categorical("gender", 3),
            FieldSpec::categorical("hour", 7),
        ];
        if opts.history > 0 {
            fields.push(FieldSpec::sequence("hist_item_id", v.items, "hist").sharing("item_id"));
            fields.push(
                FieldSpec::sequence("hist_category", v.categories, "hist").sharing("category"),
            );
        }
        let tasks = match opts.target {
            CtrTarget::Click => vec![TaskSpec::new("click", TaskKind::Binary)],
            CtrTarget::Rating => vec![TaskSpec::new("rating", TaskKind::Regression)],
            CtrTarget::Both => vec![
                TaskSpec::new("click", TaskKind::Binary),
                TaskSpec::new("rating", TaskKind::Regression),
            ],
        };
        Schema {
            fields,
            tasks,
            user_field: Some("user_id".into()),
            item_field: Some("item_id".into()),
            scenario_field: Some("country".into()),
            num_scenarios: v.scenarios,
        }
    }

    /// Impression samples for CTR (CEL, SAML, the multi-scenario baselines) and the rating
    /// target (NMF identifiability study), split by day. Slices `cold_users` and `cold_items`
    /// mark users and items with few training impressions.
    pub fn ctr_split(&self, opts: &CtrOptions) -> Split {
        let schema = Arc::new(self.ctr_schema(opts));
        let ev = &self.events;
        let test_day = (self.days() - 1) as u16;
        let mut user_n = vec![0u32; self.users.len()];
        let mut item_n = vec![0u32; self.items.len()];
        for (j, n) in user_n.iter_mut().enumerate() {
            for r in self.users.events_of(j) {
                if ev.day[r] < test_day {
                    *n += 1;
                    item_n[ev.item[r] as usize] += 1;
                }
            }
        }
        let mut out = [Builder::new(&schema, false), Builder::new(&schema, false)];
        let mut cold = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        let (click_task, rating_task) = match opts.target {
            CtrTarget::Click => (Some(0), None),
            CtrTarget::Rating => (None, Some(0)),
            CtrTarget::Both => (Some(0), Some(1)),
        };
        let it = &self.items;
        for (j, &n_user) in user_n.iter().enumerate() {
            let hist = if opts.history > 0 {
                self.behaviours(j, true)
            } else {
                Vec::new()
            };
            let uid = self.users.user[j] + 1;
            for r in self.users.events_of(j) {
                let clicked = ev.has(r, behaviour::CLICK);
                if !clicked
                    && opts.negative_rate < 1.0
                    && keep_unit(opts.seed, ev, r) >= opts.negative_rate
                {
                    continue;
                }
                let split = usize::from(ev.day[r] >= test_day);
                let b = &mut out[split];
                let i = ev.item[r] as usize;
                b.id(0, uid);
                b.id(1, i as u32 + 1);
                b.id(2, it.category[i] + 1);
                b.id(3, it.brand[i] + 1);
                b.id(4, it.shop[i] + 1);
                b.id(5, it.price[i] as u32 + 1);
                b.ragged(6, it.tags.row(i).iter().map(|t| t + 1));
                b.id(7, ev.country[r] as u32);
                b.id(8, ev.channel[r] as u32 + 1);
                b.id(9, self.users.age[j] as u32 + 1);
                b.id(10, self.users.gender[j] as u32 + 1);
                b.id(11, hour_band(ev.ts[r]));
                if opts.history > 0 {
                    let start = ev.ts[session_start(ev, self.users.events_of(j).start, r)];
                    let k = hist.partition_point(|h| h.ts < start);
                    let h = &hist[k.saturating_sub(opts.history)..k];
                    b.ragged(12, h.iter().map(|x| x.item + 1));
                    b.ragged(13, h.iter().map(|x| it.category[x.item as usize] + 1));
                }
                for (t, l) in b.labels.iter_mut().enumerate() {
                    l.push(if Some(t) == click_task {
                        f32::from(u8::from(clicked))
                    } else if Some(t) == rating_task {
                        ev.rating[r]
                    } else {
                        f32::NAN
                    });
                }
                cold[split].0.push(n_user <= opts.cold_user_max);
                cold[split].1.push(item_n[i] <= opts.cold_item_max);
            }
        }
        let [train, test] = out;
        let [c_train, c_test] = cold;
        let attach = |b: Builder, c: (Vec<bool>, Vec<bool>)| {
            let mut batch = b.finish();
            batch.slices = vec![
                crate::batch::Slice {
                    name: "cold_users".into(),
                    mask: c.0,
                },
                crate::batch::Slice {
                    name: "cold_items".into(),
                    mask: c.1,
                },
            ];
            batch
        };
        Split {
            train: attach(train, c_train),
            test: attach(test, c_test),
        }
    }

    /// The schema of [`dupn_split`](Self::dupn_split).
    ///
    /// Request: `user_id`, `country` (scenario field), `age`, `gender`, `query` (multi-hot
    /// terms), `channel` (0 when the sample is no page request), `hour`, `weekend`.
    /// Target item (0 when the task has none): `item_id`, `category`, `brand`, `shop` (also the
    /// SPP target shop), `price`, `tags`. Icon (FIFP, else 0): `icon_id`, `icon_category`,
    /// `icon_price`. History, aligned group `hist`: `hist_item_id`, `hist_brand`, `hist_shop`,
    /// `hist_category`, `hist_tag` (the item's primary tag: one tag per behaviour),
    /// `hist_behaviour` (1 click, 2 fav, 3 cart, 4 purchase), `hist_channel` (1 search,
    /// 2 recommend, 3 ads), `hist_gap` (1 + [`time_gap_bucket`]), `hist_weekend`, `hist_hour`.
    /// Dense `rank_features` (4): log-sales share, rating, price match with the history, share
    /// of the history in the item's shop. Tasks: `ctr`, `l2r`, `ppp` (7 classes), `fifp`, `spp`.
    pub fn dupn_schema(&self) -> Schema {
        let v = self.vocab();
        let seq = |name: &str, vocab: usize, share: Option<&str>| {
            let f = FieldSpec::sequence(name, vocab, "hist");
            match share {
                Some(s) => f.sharing(s),
                None => f,
            }
        };
        Schema {
            fields: vec![
                FieldSpec::categorical("user_id", v.users),
                FieldSpec::categorical("country", v.scenarios),
                FieldSpec::categorical("age", 7),
                FieldSpec::categorical("gender", 3),
                FieldSpec::multi_hot("query", v.terms),
                FieldSpec::categorical("channel", 4),
                FieldSpec::categorical("hour", 7),
                FieldSpec::categorical("weekend", 3),
                FieldSpec::categorical("item_id", v.items),
                FieldSpec::categorical("category", v.categories),
                FieldSpec::categorical("brand", v.brands),
                FieldSpec::categorical("shop", v.shops),
                FieldSpec::categorical("price", PRICE_LEVELS + 1),
                FieldSpec::multi_hot("tags", v.tags),
                FieldSpec::categorical("icon_id", v.icons),
                FieldSpec::categorical("icon_category", v.categories).sharing("category"),
                FieldSpec::categorical("icon_price", PRICE_LEVELS + 1).sharing("price"),
                seq("hist_item_id", v.items, Some("item_id")),
                seq("hist_brand", v.brands, Some("brand")),
                seq("hist_shop", v.shops, Some("shop")),
                seq("hist_category", v.categories, Some("category")),
                seq("hist_tag", v.tags, Some("tags")),
                seq("hist_behaviour", 5, None),
                seq("hist_channel", 4, None),
                seq("hist_gap", 10, None),
                seq("hist_weekend", 3, None),
                seq("hist_hour", 7, None),
                FieldSpec::dense("rank_features", 4),
            ],
            tasks: vec![
                TaskSpec::new("ctr", TaskKind::Binary),
                TaskSpec::new("l2r", TaskKind::Binary),
                TaskSpec::new(
                    "ppp",
                    TaskKind::Multiclass {
                        classes: PRICE_LEVELS,
                    },
                ),
                TaskSpec::new("fifp", TaskKind::Binary),
                TaskSpec::new("spp", TaskKind::Binary),
            ],
            user_field: Some("user_id".into()),
            item_field: Some("item_id".into()),
            scenario_field: Some("country".into()),
            num_scenarios: v.scenarios,
        }
    }

    /// Samples of the five DUPN tasks (P-ECOM), split by day; see [`DupnTasks`] for what each
    /// stream holds and [`dupn_schema`](Self::dupn_schema) for the fields.
    pub fn dupn_split(&self, opts: &DupnOptions) -> DupnSplit {
        let schema = Arc::new(self.dupn_schema());
        let mut train = TaskBuilders::new(&schema);
        let mut test = TaskBuilders::new(&schema);
        // Samples of days before `train_from_day`: built (so that every draw stays in step)
        // and dropped.
        let mut skipped = TaskBuilders::new(&schema);
        let ev = &self.events;
        let cfg = self.config();
        let test_day = (cfg.days - 1) as u16;
        let max_sales = self.items.sales.iter().copied().max().unwrap_or(0);
        let ctx = DupnCtx {
            log: self,
            opts,
            log_max_sales: (1.0 + max_sales as f32).ln().max(1e-6),
        };
        for j in 0..self.users.len() {
            let behs = self.behaviours(j, false);
            let mut r_neg = rng(opts.seed, mix_seed(0x4455_504E, self.users.user[j] as u64));
            let rows = self.users.events_of(j);
            let mut a = rows.start;
            let mut last_day: Option<u16> = None;
            while a < rows.end {
                let mut b = a + 1;
                while b < rows.end && ev.session[b] == ev.session[a] {
                    b += 1;
                }
                let t0 = ev.ts[a];
                let day = ev.day[a];
                let out = if day >= test_day {
                    &mut test
                } else if day < opts.train_from_day {
                    &mut skipped
                } else {
                    &mut train
                };
                let k = behs.partition_point(|h| h.ts < t0);
                let hist = &behs[k.saturating_sub(opts.max_history)..k];
                let hbuf = ctx.hist_columns(hist, t0);
                let req = Request {
                    user: j,
                    query: ev.query.row(a),
                    channel: ev.channel[a] as u32 + 1,
                    ts: t0,
                };
                for r in a..b {
                    let bits = ev.behaviour[r];
                    let clicked = bits & behaviour::CLICK != 0;
                    let i = ev.item[r];
                    if clicked
                        || opts.ctr_negative_rate >= 1.0
                        || keep_unit(opts.seed, ev, r) < opts.ctr_negative_rate
                    {
                        ctx.push(&mut out.ctr, &req, &hbuf, hist, Target::Item(i));
                        out.ctr.labels(Some((0, f32::from(u8::from(clicked)))), 1.0);
                    }
                    if ev.channel[r] == channel::SEARCH {
                        let strongest = (0..4)
                            .rev()
                            .find(|t| bits >> t & 1 == 1)
                            .map_or(0, |t| t + 1);
                        ctx.push(&mut out.l2r, &req, &hbuf, hist, Target::Item(i));
                        out.l2r.labels(
                            Some((1, f32::from(u8::from(clicked)))),
                            opts.l2r_weights[strongest],
                        );
                    }
                }
                if let Some(r) = (a..b).find(|&r| ev.has(r, behaviour::PURCHASE)) {
                    let price = self.items.price[ev.item[r] as usize];
                    let rq = Request {
                        query: &[],
                        channel: 0,
                        ..req
                    };
                    ctx.push(&mut out.ppp, &rq, &hbuf, hist, Target::None);
                    out.ppp.labels(Some((2, price as f32)), 1.0);
                }
                if last_day != Some(day) {
                    last_day = Some(day);
                    let favs = self.users.favourite_shops.row(j);
                    if !favs.is_empty() {
                        let rq = Request {
                            query: &[],
                            channel: 0,
                            ..req
                        };
                        let pos = favs[r_neg.random_range(0..favs.len())];
                        ctx.push(&mut out.spp, &rq, &hbuf, hist, Target::Shop(pos));
                        out.spp.labels(Some((4, 1.0)), 1.0);
                        for neg in draw_excluding(&mut r_neg, cfg.shops, favs, opts.spp_negatives) {
                            ctx.push(&mut out.spp, &rq, &hbuf, hist, Target::Shop(neg));
                            out.spp.labels(Some((4, 0.0)), 1.0);
                        }
                    }
                }
                a = b;
            }
            let followed = self.users.follow_icon.row(j);
            for (n, &icon) in followed.iter().enumerate() {
                let t = self.users.follow_ts.row(j)[n];
                let day = (t - cfg.start_ts)
                    .div_euclid(86_400)
                    .clamp(0, test_day as i64) as u16;
                let out = if day >= test_day {
                    &mut test
                } else if day < opts.train_from_day {
                    &mut skipped
                } else {
                    &mut train
                };
                let k = behs.partition_point(|h| h.ts < t);
                let hist = &behs[k.saturating_sub(opts.max_history)..k];
                let hbuf = ctx.hist_columns(hist, t);
                let req = Request {
                    user: j,
                    query: &[],
                    channel: 0,
                    ts: t,
                };
                ctx.push(&mut out.fifp, &req, &hbuf, hist, Target::Icon(icon));
                out.fifp.labels(Some((3, 1.0)), 1.0);
                for neg in draw_excluding(&mut r_neg, cfg.icons, followed, opts.fifp_negatives) {
                    ctx.push(&mut out.fifp, &req, &hbuf, hist, Target::Icon(neg));
                    out.fifp.labels(Some((3, 0.0)), 1.0);
                }
            }
        }
        DupnSplit {
            schema,
            train: train.finish(),
            test: test.finish(),
        }
    }
}

/// Draws up to `n` distinct values of `0..range` not in `exclude`.
fn draw_excluding(
    r: &mut rand_chacha::ChaCha8Rng,
    range: u32,
    exclude: &[u32],
    n: usize,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n * 20 {
        if out.len() >= n {
            break;
        }
        let x = r.random_range(0..range);
        if !exclude.contains(&x) && !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// First row of the session that row `r` belongs to (rows of a user start at `first`).
fn session_start(ev: &super::table::Events, first: usize, r: usize) -> usize {
    let mut a = r;
    while a > first && ev.session[a - 1] == ev.session[r] {
        a -= 1;
    }
    a
}

struct Vocab {
    users: usize,
    items: usize,
    categories: usize,
    brands: usize,
    shops: usize,
    tags: usize,
    terms: usize,
    icons: usize,
    scenarios: usize,
}

struct TaskBuilders {
    ctr: Builder,
    l2r: Builder,
    ppp: Builder,
    fifp: Builder,
    spp: Builder,
}

impl TaskBuilders {
    fn new(schema: &Arc<Schema>) -> Self {
        Self {
            ctr: Builder::new(schema, false),
            l2r: Builder::new(schema, true),
            ppp: Builder::new(schema, false),
            fifp: Builder::new(schema, false),
            spp: Builder::new(schema, false),
        }
    }

    fn finish(self) -> DupnTasks {
        DupnTasks {
            ctr: self.ctr.finish(),
            l2r: self.l2r.finish(),
            ppp: self.ppp.finish(),
            fifp: self.fifp.finish(),
            spp: self.spp.finish(),
        }
    }
}

#[derive(Clone, Copy)]
struct Request<'a> {
    user: usize,
    query: &'a [u32],
    channel: u32,
    ts: i64,
}

enum Target {
    None,
    Item(u32),
    Shop(u32),
    Icon(u32),
}

struct DupnCtx<'a> {
    log: &'a SynthLog,
    opts: &'a DupnOptions,
    log_max_sales: f32,
}

/// The ten history columns of one request, computed once per session.
type HistColumns = [Vec<u32>; 10];

impl DupnCtx<'_> {
    fn hist_columns(&self, hist: &[Behav], now: i64) -> HistColumns {
        let it = &self.log.items;
        let mut c: HistColumns = Default::default();
        for h in hist {
            let i = h.item as usize;
            c[0].push(h.item + 1);
            c[1].push(it.brand[i] + 1);
            c[2].push(it.shop[i] + 1);
            c[3].push(it.category[i] + 1);
            c[4].push(it.tags.row(i)[0] + 1);
            c[5].push(h.kind as u32);
            c[6].push(h.channel as u32 + 1);
            c[7].push(time_gap_bucket(now - h.ts) + 1);
            c[8].push(weekend(h.ts));
            c[9].push(hour_band(h.ts));
        }
        let _ = self.opts;
        c
    }

    fn push(
        &self,
        b: &mut Builder,
        req: &Request,
        hcols: &HistColumns,
        hist: &[Behav],
        target: Target,
    ) {
        let log = self.log;
        let u = &log.users;
        let it = &log.items;
        b.id(0, u.user[req.user] + 1);
        b.id(1, u.country[req.user] as u32);
        b.id(2, u.age[req.user] as u32 + 1);
        b.id(3, u.gender[req.user] as u32 + 1);
        b.ragged(4, req.query.iter().map(|t| t + 1));
        b.id(5, req.channel);
        b.id(6, hour_band(req.ts));
        b.id(7, weekend(req.ts));
        let (item, shop, icon) = match target {
            Target::None => (None, None, None),
            Target::Item(i) => (Some(i as usize), Some(it.shop[i as usize]), None),
            Target::Shop(s) => (None, Some(s), None),
            Target::Icon(j) => (None, None, Some(j as usize)),
        };
        match item {
            Some(i) => {
                b.id(8, i as u32 + 1);
                b.id(9, it.category[i] + 1);
                b.id(10, it.brand[i] + 1);
            }
            None => {
                b.id(8, 0);
                b.id(9, 0);
                b.id(10, 0);
            }
        }
        b.id(11, shop.map_or(0, |s| s + 1));
        match item {
            Some(i) => {
                b.id(12, it.price[i] as u32 + 1);
                b.ragged(13, it.tags.row(i).iter().map(|t| t + 1));
            }
            None => {
                b.id(12, 0);
                b.ragged(13, std::iter::empty());
            }
        }
        match icon {
            Some(j) => {
                let ic = &log.truth.icons[j];
                b.id(14, j as u32 + 1);
                b.id(15, ic.category + 1);
                b.id(16, ic.price_level as u32 + 1);
            }
            None => {
                b.id(14, 0);
                b.id(15, 0);
                b.id(16, 0);
            }
        }
        for (f, col) in hcols.iter().enumerate() {
            b.ragged(17 + f, col.iter().copied());
        }
        let feats = match item {
            Some(i) => {
                let sales = (1.0 + it.sales[i] as f32).ln() / self.log_max_sales;
                let rating = (it.rating[i] - 1.0) / 4.0;
                let (price_match, shop_share) = if hist.is_empty() {
                    (0.5, 0.0)
                } else {
                    let mean = hist
                        .iter()
                        .map(|h| it.price[h.item as usize] as f32)
                        .sum::<f32>()
                        / hist.len() as f32;
                    let same = hist
                        .iter()
                        .filter(|h| it.shop[h.item as usize] == it.shop[i])
                        .count();
                    (
                        1.0 - (it.price[i] as f32 - mean).abs() / (PRICE_LEVELS - 1) as f32,
                        same as f32 / hist.len() as f32,
                    )
                };
                [sales, rating, price_match, shop_share]
            }
            None => [0.0; 4],
        };
        b.dense(27, &feats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_features() {
        assert_eq!(time_gap_bucket(0), 0);
        assert_eq!(time_gap_bucket(59), 0);
        assert_eq!(time_gap_bucket(60), 1);
        assert_eq!(time_gap_bucket(86_399), 4);
        assert_eq!(time_gap_bucket(86_400), 5);
        assert_eq!(time_gap_bucket(10_000_000), 8);
        // 2024-01-01 was a Monday; 2024-01-06 a Saturday.
        assert_eq!(weekend(1_704_067_200), 1);
        assert_eq!(weekend(1_704_067_200 + 5 * 86_400), 2);
        assert_eq!(weekend(1_704_067_200 + 6 * 86_400 + 86_399), 2);
        assert_eq!(weekend(1_704_067_200 + 7 * 86_400), 1);
        assert_eq!(hour_band(1_704_067_200), 1);
        assert_eq!(hour_band(1_704_067_200 + 23 * 3_600), 6);
    }

    proptest::proptest! {
        #[test]
        fn gap_buckets_are_monotone(a in 0i64..2_000_000, b in 0i64..2_000_000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            proptest::prop_assert!(time_gap_bucket(lo) <= time_gap_bucket(hi));
            proptest::prop_assert!(time_gap_bucket(hi) < 9);
        }
    }
}
