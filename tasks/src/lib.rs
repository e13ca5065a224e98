//! t5mix tasks: `Task`, `Mixture`, their registries and the built-in catalog.
//!
//! This crate will hold seqio's vocabulary of the field (tasks with sources,
//! preprocessors, output features and metrics; mixtures with rates). It is
//! deliberately empty until the tasks-and-mixtures issue lands: the data
//! pipeline itself lives in `t5mix-pipeline` and knows nothing of tasks.
