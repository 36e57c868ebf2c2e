//! Dense layers built only from differentiable candle ops.
//!
//! Candle's fused fast paths (`candle_nn::LayerNorm` on contiguous input, `ops::layer_norm`,
//! `ops::softmax_last_dim`, ...) have no backward pass and silently stop learning; nothing here
//! uses them. Every layer has a finite-difference gradient test and a test that each of its
//! parameters receives a non-zero gradient (see [`crate::gradcheck`]).
//!
//! Layers are plain structs holding their tensors, created from a [`crate::init::VarStore`]
//! under a name prefix (`{prefix}.weight`, ...), with a `forward` method.

mod attention;
mod fm;
mod linear;
mod lstm;
mod mlp;
mod norm;
pub mod ops;
mod reduce;

pub use attention::{AttentionOutput, TargetAttention};
pub use fm::{fm_interaction, fm_interaction_vector};
pub use linear::Linear;
pub use lstm::{Lstm, LstmOutput};
pub use mlp::{Activation, Mlp, MlpConfig, Norm};
pub use norm::{BatchNorm, LayerNorm};
pub use ops::{dropout, masked_softmax, softmax, split_steps};
pub use reduce::sum_middle;

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{DType, Device, Result};

    use crate::gradcheck::{GradCheck, check_all_params_get_gradient, check_gradients, random_var};
    use crate::init::VarStore;

    /// An `f64` store for gradient checks.
    pub fn store() -> VarStore {
        VarStore::with_dtype(11, &Device::Cpu, DType::F64)
    }

    /// A seeded f64 input variable.
    pub fn input(shape: &[usize], seed: u64) -> Result<candle_core::Var> {
        random_var(shape, DType::F64, 1.0, seed)
    }

    /// Runs both checks for the parameters of `vs` plus `inputs`.
    pub fn check_layer(
        vs: &VarStore,
        inputs: &[(&str, &candle_core::Var)],
        mut f: impl FnMut() -> Result<candle_core::Tensor>,
    ) -> Result<()> {
        let mut params = vs.vars();
        params.extend(inputs.iter().map(|(n, v)| (n.to_string(), (*v).clone())));
        check_gradients(&params, &mut f, &GradCheck::default())?;
        let loss = f()?;
        check_all_params_get_gradient(&params, &loss)
    }
}
