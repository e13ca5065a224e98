//! t5mix tasks: the vocabulary of seqio — `Task`, `Mixture`, their
//! registries and mixing rates.
//!
//! This first part holds mixtures and their rates (SPEC b9), exactly as
//! `seqio.Mixture` computes them; tasks with sources and preprocessors, the
//! built-in catalog and declarative task files follow.

pub mod formats;
pub mod metrics;
pub mod mixture;
pub mod supervised;
pub mod task;

pub use mixture::{
    rate_num_examples, validate_name, Member, Mixture, MixtureError, MixtureRegistry, Rate,
};
pub use task::{CustomPreprocessor, Preprocessing, Preprocessor, Source, Task, TaskRegistry};
