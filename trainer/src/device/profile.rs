//! Where a GPU step's time goes, for the device run: with
//! `T5MIX_GPU_PROFILE=1` each operation of the step (a product, a kernel, an
//! upload, the optimizer's update) is bracketed by two timing events on the
//! stream, and [`Profile::report`] adds up the GPU's time per operation,
//! with the time the GPU waited for the host between them. The events cost
//! a little, so a profiled step is not a benchmark's step: the bench times
//! the step without them.

use super::gpu_error;
use crate::Result;
use cudarc::driver::{sys::CUevent_flags, CudaEvent, CudaStream};
use std::cell::RefCell;
use std::sync::Arc;

/// The environment variable that turns profiling on (any value but `0`).
pub const PROFILE_ENV: &str = "T5MIX_GPU_PROFILE";

/// Timing events per operation, when on.
pub struct Profile {
    stream: Arc<CudaStream>,
    on: bool,
    events: RefCell<Vec<(&'static str, CudaEvent, CudaEvent)>>,
}

impl Profile {
    /// Profiling on `stream` as `T5MIX_GPU_PROFILE` says.
    pub fn from_env(stream: Arc<CudaStream>) -> Self {
        let on = std::env::var(PROFILE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        Self::new(stream, on)
    }

    /// Profiling on `stream`, on or off.
    pub fn new(stream: Arc<CudaStream>, on: bool) -> Self {
        Profile {
            stream,
            on,
            events: RefCell::new(Vec::new()),
        }
    }

    /// How many operations named `name` were timed since the last report.
    pub fn calls(&self, name: &str) -> usize {
        self.events.borrow().iter().filter(|e| e.0 == name).count()
    }

    fn event(&self) -> Result<CudaEvent> {
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| gpu_error("profile", "event", e))
    }

    /// `f`, its work on the stream timed under `name` when on.
    pub fn time<T>(&self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.on {
            return f();
        }
        let start = self.event()?;
        let out = f()?;
        let end = self.event()?;
        self.events.borrow_mut().push((name, start, end));
        Ok(out)
    }

    /// The GPU's time per operation since the last report, over `steps`
    /// steps (None when off); the events are cleared.
    pub fn report(&self, steps: usize) -> Result<Option<String>> {
        if !self.on {
            return Ok(None);
        }
        let events = std::mem::take(&mut *self.events.borrow_mut());
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(Some("no GPU operations recorded".into()));
        };
        let ms = |a: &CudaEvent, b: &CudaEvent| {
            a.elapsed_ms(b)
                .map(f64::from)
                .map_err(|e| gpu_error("profile", "elapsed", e))
        };
        let wall = ms(&first.1, &last.2)?;
        // (name, calls, ms), in order of first appearance
        let mut by_name: Vec<(&'static str, usize, f64)> = Vec::new();
        for (name, a, b) in &events {
            let t = ms(a, b)?;
            match by_name.iter_mut().find(|e| e.0 == *name) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += t;
                }
                None => by_name.push((name, 1, t)),
            }
        }
        let busy: f64 = by_name.iter().map(|e| e.2).sum();
        by_name.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(Some(format_report(&by_name, wall, busy, steps.max(1))))
    }
}

/// The report's table: per operation its calls and milliseconds per step
/// and its share of the GPU's busy time; then the idle time.
fn format_report(rows: &[(&str, usize, f64)], wall: f64, busy: f64, steps: usize) -> String {
    let per = |x: f64| x / steps as f64;
    let mut s = format!(
        "GPU profile over {steps} step(s): {:.2} ms/step from the first operation to the last, \
         {:.2} ms/step busy\n{:<28} {:>8} {:>10} {:>7}\n",
        per(wall),
        per(busy),
        "operation",
        "calls",
        "ms/step",
        "share"
    );
    for &(name, calls, t) in rows {
        s += &format!(
            "{:<28} {:>8} {:>10.3} {:>6.1}%\n",
            name,
            calls / steps,
            per(t),
            100.0 * t / busy.max(f64::MIN_POSITIVE)
        );
    }
    s += &format!(
        "{:<28} {:>8} {:>10.3}  (the GPU waiting for the host)\n",
        "idle",
        "",
        per((wall - busy).max(0.0))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_gives_each_operation_per_step_and_the_idle_time() {
        let rows = [("gemm", 20, 6.0), ("softmax", 4, 2.0)];
        let r = format_report(&rows, 10.0, 8.0, 2);
        assert!(r.contains("5.00 ms/step from the first"), "{r}");
        assert!(r.contains("4.00 ms/step busy"), "{r}");
        let gemm = r.lines().find(|l| l.starts_with("gemm")).unwrap();
        let fields: Vec<&str> = gemm.split_whitespace().collect();
        assert_eq!(fields, ["gemm", "10", "3.000", "75.0%"]);
        let idle = r.lines().find(|l| l.starts_with("idle")).unwrap();
        assert!(idle.contains("1.000"), "{idle}");
    }
}
