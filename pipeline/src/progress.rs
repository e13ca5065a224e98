//! Progress on a terminal (indicatif) for long work: a spinner per stage of
//! the cleaner ([`Bars`], a [`crate::clean::Progress`]) and a counting bar
//! ([`counter`]); both hidden when quiet. For the `t5mix` binary and users'
//! own programs.

use crate::clean::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use std::time::Duration;

/// A spinner per stage showing bytes of text done and the rate.
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bars {
    /// Bars on stderr, or none when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Bars {
            bar: Mutex::new(None),
            quiet,
        }
    }

    /// Ends the last stage's bar.
    pub fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish();
        }
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, _total: u64) {
        if self.quiet {
            return;
        }
        let mut guard = self.bar.lock().unwrap();
        if let Some(b) = guard.take() {
            b.finish();
        }
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix:>12} {elapsed:>4} {decimal_bytes:>10} of text {decimal_bytes_per_sec:>12}",
            )
            .unwrap(),
        );
        b.set_prefix(name.to_string());
        b.enable_steady_tick(Duration::from_millis(200));
        *guard = Some(b);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap().as_ref() {
            b.inc(n);
        }
    }
}

/// A bar counting `what` (shards, steps), hidden with `--quiet`.
pub fn counter(quiet: bool, prefix: &str, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(0);
    let template = format!(
        "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {what} {{msg}} [{{elapsed_precise}}, ETA {{eta}}]"
    );
    b.set_style(ProgressStyle::with_template(&template).expect("template"));
    b.set_prefix(prefix.to_string());
    b
}
