//! `t5mix`: the command line over the built-in tasks and mixtures.

fn main() {
    t5mix::cli::main(t5mix_tasks::Registry::builtin())
}
