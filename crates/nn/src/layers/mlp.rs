//! Multi-layer perceptron with optional normalization and seeded dropout.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::linear::Linear;
use super::norm::{BatchNorm, LayerNorm};
use super::ops::dropout;
use crate::init::{Init, VarStore, join};
use crate::model::Ctx;

/// Non-linearity between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// No non-linearity.
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Identity => Ok(x.clone()),
        }
    }

    fn init(&self) -> Init {
        match self {
            Activation::Relu => Init::HeUniform,
            _ => Init::XavierUniform,
        }
    }
}

/// Normalization after each hidden linear layer (before the activation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// None.
    #[default]
    None,
    /// [`BatchNorm`] (running statistics in evaluation).
    Batch,
    /// [`LayerNorm`].
    Layer,
}

fn default_hidden() -> Vec<usize> {
    vec![128, 64]
}

/// Shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Widths of the hidden layers (default `[128, 64]`).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Activation of the hidden layers (default `relu`).
    #[serde(default)]
    pub activation: Activation,
    /// Dropout probability after each hidden layer (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Normalization of the hidden layers (default `none`).
    #[serde(default)]
    pub norm: Norm,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: default_hidden(),
            activation: Activation::default(),
            dropout: 0.0,
            norm: Norm::default(),
        }
    }
}

impl MlpConfig {
    /// Hidden widths with the other settings at their defaults.
    pub fn new(hidden: &[usize]) -> Self {
        Self {
            hidden: hidden.to_vec(),
            ..Self::default()
        }
    }
}

enum NormLayer {
    Batch(BatchNorm),
    Layer(LayerNorm),
}

/// Hidden layers `linear → norm → activation → dropout`, then an optional linear output
/// layer without activation. Variables: `{prefix}.{i}.weight`, `{prefix}.{i}.norm.*`,
/// `{prefix}.out.weight`.
pub struct Mlp {
    hidden: Vec<(Linear, Option<NormLayer>)>,
    out: Option<Linear>,
    activation: Activation,
    dropout: f64,
    out_dim: usize,
}

impl Mlp {
    /// An MLP from `in_dim` through `cfg.hidden`, then to `out_dim` if given.
    pub fn new(
        vs: &mut VarStore,
        prefix: &str,
        in_dim: usize,
        cfg: &MlpConfig,
        out_dim: Option<usize>,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.dropout) {
            candle_core::bail!("MLP dropout must be in [0, 1), got {}", cfg.dropout);
        }
        let mut hidden = Vec::new();
        let mut width = in_dim;
        for (i, &h) in cfg.hidden.iter().enumerate() {
            let p = join(prefix, &i.to_string());
            let lin = Linear::with_init(vs, &p, width, h, true, cfg.activation.init())?;
            let norm = match cfg.norm {
                Norm::None => None,
                Norm::Batch => Some(NormLayer::Batch(BatchNorm::new(vs, &join(&p, "norm"), h)?)),
                Norm::Layer => Some(NormLayer::Layer(LayerNorm::new(vs, &join(&p, "norm"), h)?)),
            };
            hidden.push((lin, norm));
            width = h;
        }
        let out = match out_dim {
            Some(o) => {
                let l = Linear::with_init(
                    vs,
                    &join(prefix, "out"),
                    width,
                    o,
                    true,
                    Init::XavierUniform,
                )?;
                width = o;
                Some(l)
            }
            None => None,
        };
        Ok(Self {
            hidden,
            out,
            activation: cfg.activation,
            dropout: cfg.dropout,
            out_dim: width,
        })
    }

    /// Width of the output.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Applies the MLP to `x: [..., in]` (dropout and batch statistics follow `ctx.train`).
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut h = x.clone();
        for (lin, norm) in &self.hidden {
            h = lin.forward(&h)?;
            h = match norm {
                None => h,
                Some(NormLayer::Batch(b)) => b.forward(&h, ctx.train)?,
                Some(NormLayer::Layer(l)) => l.forward(&h)?,
            };
            h = self.activation.apply(&h)?;
            h = dropout(&h, self.dropout, ctx)?;
        }
        match &self.out {
            Some(o) => o.forward(&h),
            None => Ok(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::weighted_sum;
    use crate::layers::test_util::{check_layer, input, store};
    use rand::SeedableRng;

    #[test]
    fn gradients_with_each_norm_and_activation() -> Result<()> {
        for (norm, act) in [
            (Norm::None, Activation::Relu),
            (Norm::Batch, Activation::Tanh),
            (Norm::Layer, Activation::Sigmoid),
        ] {
            let mut vs = store();
            let cfg = MlpConfig {
                hidden: vec![6, 5],
                activation: act,
                dropout: 0.0,
                norm,
            };
            let mlp = Mlp::new(&mut vs, "mlp", 4, &cfg, Some(2))?;
            assert_eq!(mlp.out_dim(), 2);
            let x = input(&[7, 4], 3)?;
            check_layer(&vs, &[("x", &x)], || {
                let mut ctx = Ctx::new(true, 0, rand_chacha::ChaCha8Rng::seed_from_u64(0));
                weighted_sum(&mlp.forward(x.as_tensor(), &mut ctx)?, 5)
            })?;
        }
        Ok(())
    }

    #[test]
    fn dropout_follows_the_context_seed() -> Result<()> {
        let mut vs = store();
        let cfg = MlpConfig {
            hidden: vec![16],
            dropout: 0.5,
            ..Default::default()
        };
        let mlp = Mlp::new(&mut vs, "mlp", 4, &cfg, Some(1))?;
        let x = input(&[8, 4], 1)?;
        let run = |seed: u64, train: bool| -> Result<Vec<f64>> {
            let mut ctx = Ctx::new(train, 0, rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            mlp.forward(x.as_tensor(), &mut ctx)?
                .flatten_all()?
                .to_vec1::<f64>()
        };
        assert_eq!(run(1, true)?, run(1, true)?);
        assert_ne!(run(1, true)?, run(2, true)?);
        assert_eq!(run(1, false)?, run(2, false)?);
        Ok(())
    }
}
