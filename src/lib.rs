//! # t5mix
//!
//! The `t5mix` command line as a library: a program that registers its own
//! tasks and mixtures gets every subcommand (`build`, `tasks`, `inspect`,
//! `train --eval-task`, `eval`, `clean`, `vocab`) for them:
//!
//! ```no_run
//! let mut registry = t5mix_tasks::Registry::builtin();
//! // registry.add_task(my_task)?; registry.add_mixture(my_mixture)?;
//! t5mix::cli::main(registry)
//! ```

pub mod cli;

// Large zero-filled buffers (the trainer's gradients) are cleared on all
// cores; every binary linking this crate gets it.
#[global_allocator]
static ALLOC: t5mix_trainer::ParallelZeroing = t5mix_trainer::ParallelZeroing;
