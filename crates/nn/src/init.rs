//! Seeded initialisation and a small store of named variables.
//!
//! Candle's CPU random generator cannot be seeded, so `candle_nn::Init` and `VarBuilder` over a
//! `VarMap` cannot give reproducible weights. [`VarStore`] replaces them: every variable is
//! created under a unique name with values drawn from a ChaCha8 stream derived from
//! `(store seed, name)`. A variable's initial value therefore depends only on the seed and its
//! name, not on the order in which layers are built, and the store lists variables sorted by
//! name (a deterministic order for optimizers and checkpoints).
//!
//! ```
//! use candle_core::Device;
//! use rec_nn::init::{Init, VarStore};
//! let mut a = VarStore::new(7, &Device::Cpu);
//! let mut b = VarStore::new(7, &Device::Cpu);
//! let wa = a.var("w", (3, 2), Init::XavierUniform).unwrap();
//! b.var("other", 4, Init::Zeros).unwrap();
//! let wb = b.var("w", (3, 2), Init::XavierUniform).unwrap();
//! assert_eq!(wa.as_tensor().to_vec2::<f32>().unwrap(), wb.as_tensor().to_vec2::<f32>().unwrap());
//! ```

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

/// How to fill a new tensor. Fan-in/fan-out follow the `[out, in, ...]` layout of
/// [`crate::layers::Linear`]: for a 2-D shape `[out, in]`, `fan_in = in`, `fan_out = out`; a 1-D
/// shape uses its length for both.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "InitRepr"
)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every value equal to `value`.
    Const {
        /// The value.
        value: f64,
    },
    /// Uniform on `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Normal with mean `mean` and standard deviation `std`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Glorot/Xavier uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))`.
    XavierUniform,
    /// Glorot/Xavier normal: `N(0, 2 / (fan_in + fan_out))`.
    XavierNormal,
    /// He/Kaiming uniform for ReLU: `U(-a, a)`, `a = sqrt(6 / fan_in)`.
    HeUniform,
    /// He/Kaiming normal for ReLU: `N(0, 2 / fan_in)`.
    HeNormal,
}

/// What [`Init`] is read from: the same with the unit variants as empty struct variants, so
/// that a stray key next to `kind = "zeros"` is refused like any unknown key; serde lets unit
/// variants of an internally tagged enum ignore the other keys.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum InitRepr {
    Zeros {},
    Ones {},
    Const { value: f64 },
    Uniform { lo: f64, hi: f64 },
    Normal { mean: f64, std: f64 },
    XavierUniform {},
    XavierNormal {},
    HeUniform {},
    HeNormal {},
}

impl From<InitRepr> for Init {
    fn from(r: InitRepr) -> Self {
        match r {
            InitRepr::Zeros {} => Self::Zeros,
            InitRepr::Ones {} => Self::Ones,
            InitRepr::Const { value } => Self::Const { value },
            InitRepr::Uniform { lo, hi } => Self::Uniform { lo, hi },
            InitRepr::Normal { mean, std } => Self::Normal { mean, std },
            InitRepr::XavierUniform {} => Self::XavierUniform,
            InitRepr::XavierNormal {} => Self::XavierNormal,
            InitRepr::HeUniform {} => Self::HeUniform,
            InitRepr::HeNormal {} => Self::HeNormal,
        }
    }
}

impl Init {
    /// Draws `shape.elem_count()` values from `rng`.
    pub fn sample(&self, shape: &Shape, rng: &mut impl Rng) -> Result<Vec<f64>> {
        self.sample_map(shape, rng, |x| x)
    }

    /// Draws `shape.elem_count()` values from `rng` as `f32` (the same stream as
    /// [`sample`](Self::sample), rounded; no `f64` buffer, which matters for huge tables).
    pub fn sample_f32(&self, shape: &Shape, rng: &mut impl Rng) -> Result<Vec<f32>> {
        self.sample_map(shape, rng, |x| x as f32)
    }

    fn sample_map<T>(
        &self,
        shape: &Shape,
        rng: &mut impl Rng,
        f: impl Fn(f64) -> T,
    ) -> Result<Vec<T>> {
        let (fan_in, fan_out) = match shape.dims() {
            [] => (1, 1),
            [d] => (*d, *d),
            [out, rest @ ..] => (rest.iter().product::<usize>(), *out),
        };
        let s = self.sampler(fan_in, fan_out)?;
        Ok((0..shape.elem_count()).map(|_| f(s.draw(rng))).collect())
    }

    /// The distribution of this initialiser for a tensor with the given fan-in and fan-out,
    /// to draw values one by one (e.g. straight into a larger buffer).
    pub fn sampler(&self, fan_in: usize, fan_out: usize) -> Result<Sampler> {
        let (fan_in, fan_out) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let uniform = |lo: f64, hi: f64| -> Result<Sampler> {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                candle_core::bail!("uniform init needs finite lo <= hi, got lo {lo}, hi {hi}");
            }
            if lo == hi {
                return Ok(Sampler::Const(lo));
            }
            Uniform::new(lo, hi)
                .map(Sampler::Uniform)
                .map_err(|e| candle_core::Error::Msg(format!("uniform({lo}, {hi}): {e}")))
        };
        let normal = |mean: f64, std: f64| -> Result<Sampler> {
            if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
                candle_core::bail!(
                    "normal init needs a finite mean and a finite std >= 0, got mean {mean}, std {std}"
                );
            }
            Normal::new(mean, std)
                .map(Sampler::Normal)
                .map_err(|e| candle_core::Error::Msg(format!("normal({mean}, {std}): {e}")))
        };
        match *self {
            Init::Zeros => Ok(Sampler::Const(0.0)),
            Init::Ones => Ok(Sampler::Const(1.0)),
            Init::Const { value } if !value.is_finite() => {
                candle_core::bail!("const init needs a finite value, got {value}")
            }
            Init::Const { value } => Ok(Sampler::Const(value)),
            Init::Uniform { lo, hi } => uniform(lo, hi),
            Init::Normal { mean, std } => normal(mean, std),
            Init::XavierUniform => {
                let a = (6.0 / (fan_in + fan_out)).sqrt();
                uniform(-a, a)
            }
            Init::XavierNormal => normal(0.0, (2.0 / (fan_in + fan_out)).sqrt()),
            Init::HeUniform => {
                let a = (6.0 / fan_in).sqrt();
                uniform(-a, a)
            }
            Init::HeNormal => normal(0.0, (2.0 / fan_in).sqrt()),
        }
    }

    /// A tensor of `shape` filled from `rng`.
    pub fn tensor(
        &self,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.sample(&shape, rng)?;
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

/// A distribution to draw initial values from (see [`Init::sampler`]).
#[derive(Debug, Clone, Copy)]
pub enum Sampler {
    /// Always the same value (draws nothing from the generator).
    Const(f64),
    /// Uniform.
    Uniform(Uniform<f64>),
    /// Normal.
    Normal(Normal<f64>),
}

impl Sampler {
    /// One value.
    pub fn draw(&self, rng: &mut (impl Rng + ?Sized)) -> f64 {
        match self {
            Sampler::Const(v) => *v,
            Sampler::Uniform(u) => u.sample(rng),
            Sampler::Normal(n) => n.sample(rng),
        }
    }
}

/// A 64-bit hash of a name (FNV-1a), stable across runs and platforms.
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Mixes two 64-bit values into a well-spread seed (SplitMix64 finaliser).
pub fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ChaCha8 stream for `name` under `seed`.
pub fn named_rng(seed: u64, name: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix64(seed, name_hash(name)))
}

/// Named trainable variables and non-trainable buffers (e.g. BatchNorm running statistics),
/// created deterministically from a seed and kept sorted by name.
#[derive(Clone)]
pub struct VarStore {
    vars: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
    device: Device,
    dtype: DType,
    seed: u64,
}

impl VarStore {
    /// An empty `f32` store on `device`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self::with_dtype(seed, device, DType::F32)
    }

    /// An empty store whose variables have `dtype` (`F64` is handy for gradient checks).
    pub fn with_dtype(seed: u64, device: &Device, dtype: DType) -> Self {
        Self {
            vars: BTreeMap::new(),
            buffers: BTreeMap::new(),
            device: device.clone(),
            dtype,
            seed,
        }
    }

    /// Device of the variables.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Dtype of the variables.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The seeded random stream reserved for `name` (e.g. for a table built next to the
    /// variables). Independent of every variable's stream as long as the names differ.
    pub fn rng(&self, name: &str) -> ChaCha8Rng {
        named_rng(self.seed, name)
    }

    /// Creates the trainable variable `name`. A name can be created only once.
    pub fn var(&mut self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        let v = self.make(name, shape.into(), init)?;
        self.vars.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// Creates the non-trainable buffer `name` (saved with the model, never optimized).
    pub fn buffer(&mut self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        let v = self.make(name, shape.into(), init)?;
        self.buffers.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn make(&mut self, name: &str, shape: Shape, init: Init) -> Result<Var> {
        if name.is_empty() {
            candle_core::bail!("variable names cannot be empty");
        }
        if self.vars.contains_key(name) || self.buffers.contains_key(name) {
            candle_core::bail!("variable `{name}` created twice");
        }
        if shape.dims().contains(&0) {
            // candle multiplies by an empty dimension without complaint (a matmul over k = 0 is
            // all zeros), so a width of 0 would train a model that ignores its input.
            candle_core::bail!(
                "variable `{name}` would have shape {:?}, with a dimension of 0: \
                 is a width or `dim` in the configuration 0?",
                shape.dims()
            );
        }
        let mut rng = self.rng(name);
        let t = init.tensor(shape, self.dtype, &self.device, &mut rng)?;
        Var::from_tensor(&t)
    }

    /// Trainable variables, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// Buffers, sorted by name.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// The trainable variable `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Number of trainable floats.
    pub fn num_params(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

#[cfg(test)]
mod tests {
    /// Parameters that describe no distribution are refused by name, not drawn from.
    #[test]
    fn init_parameters_outside_their_range_are_refused() {
        for (init, what) in [
            (
                Init::Normal {
                    mean: 0.0,
                    std: -1.0,
                },
                "std -1",
            ),
            (
                Init::Normal {
                    mean: f64::NAN,
                    std: 1.0,
                },
                "mean NaN",
            ),
            (Init::Const { value: f64::NAN }, "got NaN"),
            (Init::Uniform { lo: 1.0, hi: -1.0 }, "lo 1, hi -1"),
            (
                Init::Uniform {
                    lo: 0.0,
                    hi: f64::INFINITY,
                },
                "hi inf",
            ),
        ] {
            let Err(e) = init.sampler(4, 4) else {
                panic!("{init:?} was accepted")
            };
            let e = e.to_string();
            assert!(e.contains(what), "{init:?}: {e}");
        }
        assert!(
            Init::Normal {
                mean: 0.0,
                std: 0.0
            }
            .sampler(4, 4)
            .is_ok()
        );
        assert!(Init::Uniform { lo: 0.5, hi: 0.5 }.sampler(4, 4).is_ok());
    }

    /// Every kind reads back what it writes, and a stray key is refused, also next to a kind
    /// without parameters (serde's unit variants would ignore it).
    #[test]
    fn init_and_table_kinds_refuse_stray_keys() {
        use crate::embedding::TableConfig;
        use serde_json::json;
        for init in [
            Init::Zeros,
            Init::Ones,
            Init::Const { value: 0.5 },
            Init::Uniform { lo: -1.0, hi: 1.0 },
            Init::Normal {
                mean: 0.0,
                std: 0.1,
            },
            Init::XavierUniform,
            Init::XavierNormal,
            Init::HeUniform,
            Init::HeNormal,
        ] {
            let v = serde_json::to_value(init).unwrap();
            assert_eq!(serde_json::from_value::<Init>(v.clone()).unwrap(), init);
            let mut stray = v.as_object().unwrap().clone();
            stray.insert("foo".into(), json!(1));
            let e = serde_json::from_value::<Init>(stray.into()).unwrap_err();
            assert!(
                e.to_string().contains("unknown field `foo`"),
                "{init:?}: {e}"
            );
        }
        for table in [
            TableConfig::Full,
            TableConfig::Hashed { rows: 7 },
            TableConfig::Qr { collisions: 3 },
            TableConfig::Frequency { top_k: 2, rows: 5 },
        ] {
            let v = serde_json::to_value(table).unwrap();
            assert_eq!(serde_json::from_value::<TableConfig>(v).unwrap(), table);
        }
        let e =
            serde_json::from_value::<TableConfig>(json!({"kind": "full", "rows": 10})).unwrap_err();
        assert!(e.to_string().contains("unknown field `rows`"), "{e}");
    }

    use super::*;

    #[test]
    fn same_seed_same_numbers_and_order_independent() -> Result<()> {
        let d = Device::Cpu;
        let mut a = VarStore::new(1, &d);
        let x = a.var("x", (4, 3), Init::HeNormal)?;
        let y = a.var("y", 5, Init::Uniform { lo: -1.0, hi: 1.0 })?;
        let mut b = VarStore::new(1, &d);
        let y2 = b.var("y", 5, Init::Uniform { lo: -1.0, hi: 1.0 })?;
        let x2 = b.var("x", (4, 3), Init::HeNormal)?;
        assert_eq!(
            x.as_tensor().to_vec2::<f32>()?,
            x2.as_tensor().to_vec2::<f32>()?
        );
        assert_eq!(
            y.as_tensor().to_vec1::<f32>()?,
            y2.as_tensor().to_vec1::<f32>()?
        );
        let mut c = VarStore::new(2, &d);
        let x3 = c.var("x", (4, 3), Init::HeNormal)?;
        assert_ne!(
            x.as_tensor().to_vec2::<f32>()?,
            x3.as_tensor().to_vec2::<f32>()?
        );
        assert!(a.var("x", 1, Init::Zeros).is_err());
        // A zero width is refused, for variables and buffers, naming the variable.
        for e in [
            a.var("w", (4, 0), Init::HeNormal).unwrap_err(),
            a.buffer("b", 0, Init::Zeros).unwrap_err(),
        ] {
            assert!(e.to_string().contains("dimension of 0"), "{e}");
        }
        assert!(a.get("w").is_none());
        let names: Vec<String> = a.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["x", "y"]);
        Ok(())
    }

    #[test]
    fn scales_match_their_formulas() -> Result<()> {
        let mut rng = named_rng(3, "t");
        let shape = Shape::from((200, 300));
        let v = Init::XavierUniform.sample(&shape, &mut rng)?;
        let a = (6.0f64 / 500.0).sqrt();
        assert!(v.iter().all(|x| x.abs() <= a));
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((var - a * a / 3.0).abs() < 0.05 * a * a / 3.0);
        let v = Init::HeNormal.sample(&shape, &mut rng)?;
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((var - 2.0 / 300.0).abs() < 0.05 * 2.0 / 300.0);
        Ok(())
    }
}
