//! Serving by network disassembly: encode the user once per request, then score many
//! candidates with the shallow heads.
//!
//! [`Dupn::encode_user`] runs the embedding, the gated LSTM and the attention net for one
//! request and also returns the rep-only task outputs (PPP); [`Dupn::score`] then scores any
//! number of candidate items with the item head (CTR), reusing the representation's block of the
//! head's first layer, so a candidate costs one small matrix row instead of a pass over the
//! history.
//!
//! The rep-only outputs are computed from the representation of the request as given, query
//! included. A head is only as good on it as its training data were alike: in the synthetic
//! DUPN data the PPP and SPP samples carry no query (their attention saw an empty one), so a
//! caller that wants PPP scores as trained encodes the user a second time with an empty query
//! (`encode_user(history, &[], profile)`) and reads PPP from that encoding.
//!
//! ```no_run
//! # fn demo(model: &mut user_dupn::Dupn, candidates: &user_dupn::serving::Candidates)
//! # -> candle_core::Result<()> {
//! let history: Vec<(&str, &[u32])> = vec![
//!     ("hist_item_id", &[12, 7, 7]),
//!     ("hist_behaviour", &[1, 1, 4]),
//!     // ... every field of the history group
//! ];
//! // every profile field of the model (0 = unknown)
//! let profile = [("user_id", 42), ("age", 2), ("gender", 1), ("country", 3)];
//! let user = model.encode_user(&history, &[3, 9], &profile)?;
//! let scores = model.score(&user, candidates)?; // one logit per candidate
//! # let _ = scores; Ok(()) }
//! ```

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use rec_data::{Batch, Column, FieldKind, TaskKind};
use rec_nn::embedding::Pooling;
use rec_nn::embedding::pooling::pooled_lookup;
use rec_nn::{Ctx, Model};

use crate::model::{Dupn, HeadKind};

/// The encoding of one or more users for serving, by the model that made it.
///
/// It belongs to that model instance: [`Dupn::score`] refuses an encoding of another model
/// (an encoding of the same width would otherwise score silently wrong). It is a snapshot of
/// the model's weights: after the model trains further or loads a checkpoint, encode again.
#[derive(Debug, Clone)]
pub struct UserEncoding {
    rep: Tensor,
    rep_outputs: Vec<(String, Vec<f32>)>,
    /// The [`Dupn::serving_id`] of the model that made it.
    model: u64,
}

impl UserEncoding {
    /// The representation `[rep_s; u]`, `[n, rep_width]`.
    pub fn rep(&self) -> &Tensor {
        &self.rep
    }

    /// The outputs of the rep-only heads (e.g. PPP), per task: probabilities, `n * classes`
    /// values (softmax rows) for a multi-class task, `n` values (sigmoid) for a binary one.
    /// Computed from this encoding's query (see the [module docs](self) on the query a head
    /// was trained with).
    pub fn rep_outputs(&self) -> &[(String, Vec<f32>)] {
        &self.rep_outputs
    }

    /// How many users (requests) this encoding holds.
    pub fn len(&self) -> usize {
        self.rep.dims().first().copied().unwrap_or(0)
    }

    /// True when it holds no user.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The users `start..start + len` of this encoding (rows of `rep`, and their rep-only
    /// outputs), e.g. to score the candidates of each request of
    /// [`Dupn::encode_requests`] in turn. A range past the end is an error.
    pub fn rows(&self, start: usize, len: usize) -> Result<UserEncoding> {
        let n = self.len();
        if start.checked_add(len).is_none_or(|end| end > n) {
            candle_core::bail!(
                "user encoding: rows {start}..{} of {n}",
                start.saturating_add(len)
            );
        }
        let rep_outputs = self
            .rep_outputs
            .iter()
            .map(|(task, v)| {
                // `n * classes` values, row-major; a rep-only output of 0 users has none.
                let per = v.len().checked_div(n).unwrap_or(0);
                (task.clone(), v[start * per..(start + len) * per].to_vec())
            })
            .collect();
        Ok(UserEncoding {
            rep: self.rep.narrow(0, start, len)?,
            rep_outputs,
            model: self.model,
        })
    }
}

/// Candidate items: one column per target-side item field (e.g. `item_id`, `brand`, `shop`,
/// `category`, `tags`), all of the same length.
#[derive(Debug, Clone)]
pub struct Candidates {
    columns: Vec<(String, Column)>,
    len: usize,
}

impl Candidates {
    /// Candidates from named columns (categorical `Column::Ids`, or ragged bags for multi-hot
    /// fields). Columns of different lengths, or a name given twice, are an error.
    pub fn new(columns: Vec<(String, Column)>) -> Result<Self> {
        for (k, (n, _)) in columns.iter().enumerate() {
            if columns[..k].iter().any(|(m, _)| m == n) {
                candle_core::bail!("candidate column `{n}` is given twice");
            }
        }
        let len = columns.first().map_or(0, |(_, c)| c.len());
        if let Some((n, c)) = columns.iter().find(|(_, c)| c.len() != len) {
            candle_core::bail!(
                "candidate column `{n}` has {} rows, the first has {len}",
                c.len()
            );
        }
        Ok(Self { columns, len })
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn column(&self, name: &str) -> Result<&Column> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| candle_core::Error::Msg(format!("candidates lack field `{name}`")))
    }
}

impl Dupn {
    /// A one-row batch holding a request: the history (every field of the history group,
    /// aligned, oldest first), the query terms and the profile values; other fields are empty
    /// or 0 and labels are NaN. Unknown, missing (every profile field is needed) or
    /// misaligned fields and out-of-vocabulary IDs are errors.
    pub fn request_batch(
        &self,
        history: &[(&str, &[u32])],
        query: &[u32],
        profile: &[(&str, u32)],
    ) -> Result<Batch> {
        let schema = Arc::new(self.schema().clone());
        let group = &self.config().history_group;
        for (name, _) in history {
            match schema.field(name) {
                Some(f) if f.group.as_deref() == Some(group.as_str()) => {}
                _ => candle_core::bail!("`{name}` is not a field of the history group `{group}`"),
            }
        }
        let wanted = &self.roles().profile;
        for (name, _) in profile {
            if !wanted.iter().any(|p| p == name) {
                candle_core::bail!(
                    "`{name}` is not a profile field of this model (its profile fields: {})",
                    wanted.join(", ")
                );
            }
        }
        // A field left out would be encoded as its row 0, which training never updates, with
        // nothing said: every one is asked for, 0 being the explicit "unknown".
        if let Some(missing) = wanted.iter().find(|p| !profile.iter().any(|(n, _)| n == p)) {
            candle_core::bail!(
                "the profile lacks field `{missing}` (give every one of {}; 0 for an unknown \
                 value)",
                wanted.join(", ")
            );
        }
        // Query terms for a model that reads no query would be dropped with nothing said.
        if self.roles().query.is_none() && !query.is_empty() {
            candle_core::bail!(
                "this model reads no query (its data has no query field, or `query = \"\"` in \
                 its configuration); give an empty query"
            );
        }
        let mut len = None;
        let mut b = Batch::empty(schema.clone());
        for (f, col) in schema.fields.iter().zip(b.columns.iter_mut()) {
            *col = match f.kind {
                FieldKind::Categorical => Column::Ids(vec![
                    profile
                        .iter()
                        .find(|(n, _)| *n == f.name)
                        .map_or(0, |(_, v)| *v),
                ]),
                FieldKind::MultiHot => {
                    let values = if self.roles().query.as_deref() == Some(f.name.as_str()) {
                        query.to_vec()
                    } else {
                        Vec::new()
                    };
                    Column::Ragged {
                        offsets: vec![0, values.len() as u32],
                        values,
                    }
                }
                FieldKind::Sequence => {
                    let values = if f.group.as_deref() == Some(group.as_str()) {
                        let ids = history
                            .iter()
                            .find(|(n, _)| *n == f.name)
                            .map(|(_, v)| v.to_vec())
                            .ok_or_else(|| {
                                candle_core::Error::Msg(format!(
                                    "the history lacks field `{}`",
                                    f.name
                                ))
                            })?;
                        if *len.get_or_insert(ids.len()) != ids.len() {
                            candle_core::bail!(
                                "history field `{}` has {} behaviours, the others {}",
                                f.name,
                                ids.len(),
                                len.unwrap_or(0)
                            );
                        }
                        ids
                    } else {
                        Vec::new()
                    };
                    Column::Ragged {
                        offsets: vec![0, values.len() as u32],
                        values,
                    }
                }
                FieldKind::Dense { dim } => Column::Dense {
                    values: vec![0.0; dim],
                    dim,
                },
            };
        }
        b.labels = vec![vec![f32::NAN]; schema.tasks.len()];
        b.validate().map_err(candle_core::Error::Msg)?;
        Ok(b)
    }

    /// Encodes every request (row) of `batch`: the representation and the rep-only outputs.
    pub fn encode_requests(&mut self, batch: &Batch) -> Result<UserEncoding> {
        let rep = self.encode(batch, false)?.rep;
        let mut ctx = Ctx::eval();
        let mut rep_outputs = Vec::new();
        for h in &self.heads {
            if let HeadKind::Rep(m) = &h.kind {
                let y = m.forward_parts(&m.rep_part(&rep)?, None, &mut ctx)?;
                let p = match h.task_kind {
                    TaskKind::Multiclass { .. } => rec_nn::layers::softmax(&y, 1)?,
                    TaskKind::Binary => candle_nn::ops::sigmoid(&y)?,
                    TaskKind::Regression => y,
                };
                rep_outputs.push((
                    h.task.clone(),
                    p.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                ));
            }
        }
        Ok(UserEncoding {
            rep,
            rep_outputs,
            model: self.serving_id,
        })
    }

    /// Encodes one request: the history (every field of the history group, aligned, oldest
    /// first), the query terms and the profile. Call once per request, then
    /// [`score`](Self::score) the candidates.
    pub fn encode_user(
        &mut self,
        history: &[(&str, &[u32])],
        query: &[u32],
        profile: &[(&str, u32)],
    ) -> Result<UserEncoding> {
        let b = self.request_batch(history, query, profile)?;
        self.encode_requests(&b)
    }

    /// Scores `candidates` for the first user of `user` with the first item head of a binary
    /// task (CTR on P-ECOM): one logit per candidate.
    pub fn score(&mut self, user: &UserEncoding, candidates: &Candidates) -> Result<Vec<f32>> {
        let binary: Vec<String> = self
            .schema()
            .tasks
            .iter()
            .filter(|t| t.kind == TaskKind::Binary)
            .map(|t| t.name.clone())
            .collect();
        let task = self
            .heads
            .iter()
            .find(|h| matches!(h.kind, HeadKind::Item(_)) && binary.contains(&h.task))
            .map(|h| h.task.clone())
            .ok_or_else(|| {
                candle_core::Error::Msg("the model has no item head of a binary task".into())
            })?;
        self.score_task(&task, user, candidates)
    }

    /// Scores `candidates` for the first user of `user` with the item head of `task`.
    pub fn score_task(
        &mut self,
        task: &str,
        user: &UserEncoding,
        candidates: &Candidates,
    ) -> Result<Vec<f32>> {
        let k = self
            .heads
            .iter()
            .position(|h| h.task == task)
            .ok_or_else(|| candle_core::Error::Msg(format!("no task `{task}`")))?;
        if !matches!(self.heads[k].kind, HeadKind::Item(_)) {
            candle_core::bail!("task `{task}` has no item head");
        }
        let kind = self
            .schema()
            .tasks
            .iter()
            .find(|t| t.name == task)
            .map(|t| t.kind);
        if kind != Some(TaskKind::Binary) {
            candle_core::bail!(
                "task `{task}` is not a binary task ({kind:?}): scoring gives one logit per \
                 candidate, for binary tasks only"
            );
        }
        if user.model != self.serving_id {
            candle_core::bail!(
                "the user encoding was made by another model, or by this one before it trained \
                 further or loaded saved state; encode the user again with this model as it is"
            );
        }
        if user.rep.dim(0)? == 0 {
            candle_core::bail!("the user encoding holds no user (0 rows)");
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let dev = self.device().clone();
        let fields = self.roles().item_target.clone();
        // A column the head does not read (a misspelt field, a price) would be ignored, and
        // the candidates scored without what it was meant to say.
        if let Some((n, _)) = candidates.columns.iter().find(|(n, _)| !fields.contains(n)) {
            candle_core::bail!(
                "candidate column `{n}` is not an item field of this model's head (its item \
                 fields: {})",
                fields.join(", ")
            );
        }
        let mut parts = Vec::with_capacity(fields.len());
        for f in &fields {
            let col = candidates.column(f)?;
            // A table would serve an unknown ID some row (a full table row 0, a hashed one
            // any row) and score it as if it were that item.
            let vocab = self.schema().field(f).map_or(0, |s| s.vocab);
            let ids = match col {
                Column::Ids(v) => v.as_slice(),
                Column::Ragged { values, .. } => values.as_slice(),
                Column::Dense { .. } => candle_core::bail!("candidate column `{f}` is dense"),
            };
            if let Some(i) = ids.iter().position(|&x| x as usize >= vocab) {
                candle_core::bail!(
                    "candidate column `{f}`: ID {} is outside the field's vocabulary (0..{vocab})",
                    ids[i]
                );
            }
            let table = self.item_table_mut(f)?;
            parts.push(pooled_lookup(table, col, Pooling::Mean, false, &dev)?);
        }
        let e = Tensor::cat(&parts, 1)?;
        let HeadKind::Item(m) = &self.heads[k].kind else {
            unreachable!("checked above")
        };
        let rep = user.rep.narrow(0, 0, 1)?;
        let y = m.forward_parts(&m.rep_part(&rep)?, Some(&e), &mut Ctx::eval())?;
        y.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
    }
}
