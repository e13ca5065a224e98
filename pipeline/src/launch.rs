//! Launch files for batch schedulers: a job runs as stages of array tasks,
//! each stage after the one before, then one last command. Written for
//! Slurm (`slurm.sh`: `sbatch --array`, chained with `--dependency=afterok`)
//! and Kubernetes (`k8s.yaml`: one Indexed Job per stage, the task index in
//! `JOB_COMPLETION_INDEX`; `k8s.sh` applies them one after another). Used by
//! the staged `t5mix clean` and by `t5mix build --num-workers`.

use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{PipelineError, Result};

/// The placeholder for the task index in a [`LaunchStage`]'s command.
pub const INDEX: &str = "{index}";

/// One stage: `tasks` array tasks, each running `t5mix <command>` with
/// [`INDEX`] replaced by its index.
#[derive(Debug, Clone)]
pub struct LaunchStage {
    /// Stage name (job names: `t5mix-<job>-<name>`).
    pub name: String,
    /// Number of tasks.
    pub tasks: usize,
    /// The arguments of `t5mix`, with [`INDEX`] where the task index goes.
    pub command: String,
}

/// Writes `slurm.sh`, `k8s.yaml` and `k8s.sh` into `dir` for `stages` then
/// `last` (a single task), and returns a summary of the commands and files.
/// `T5MIX` in the environment names the binary for Slurm (default `t5mix`),
/// `SBATCH_ARGS` adds `sbatch` options; the Kubernetes image is
/// `T5MIX_IMAGE` in `k8s.yaml`, to replace.
pub fn write_launchers(
    dir: &Path,
    job: &str,
    stages: &[LaunchStage],
    last: &str,
) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
    let at = |c: &str, index: &str| c.replace(INDEX, index);
    let mut summary = String::new();
    let mut slurm = format!(
        "#!/usr/bin/env bash\n# Submits t5mix {job} as Slurm job arrays, each stage after the last.\n\
         set -euo pipefail\nT5MIX=${{T5MIX:-t5mix}}\nSBATCH_ARGS=${{SBATCH_ARGS:-}}\ndep=\"\"\n"
    );
    let mut yaml = String::new();
    let mut k8s = format!(
        "#!/usr/bin/env bash\n# Runs t5mix {job} as Kubernetes Indexed Jobs, each stage after the last.\n\
         set -euo pipefail\nKUBECTL=${{KUBECTL:-kubectl}}\n"
    );
    for s in stages {
        summary += &format!(
            "  {:<9} {:>7} tasks: t5mix {}\n",
            s.name,
            s.tasks,
            at(&s.command, "INDEX")
        );
        slurm += &format!(
            "id=$(sbatch --parsable $SBATCH_ARGS ${{dep:+--dependency=afterok:$dep --kill-on-invalid-dep=yes}} \
             --job-name=t5mix-{job}-{name} --array=0-{last_task} --wrap \"$T5MIX {c}\")\necho \"$id\"\ndep=$id\n",
            name = s.name,
            last_task = s.tasks.max(1) - 1,
            // expanded when the array element runs, not at submission
            c = at(&s.command, "\\$SLURM_ARRAY_TASK_ID")
        );
        let manifest = format!(
            "---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: t5mix-{job}-{name}\nspec:\n  \
             completionMode: Indexed\n  completions: {n}\n  parallelism: {n}\n  backoffLimitPerIndex: 3\n  \
             template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: t5mix\n        \
             image: T5MIX_IMAGE\n        command: [\"sh\", \"-c\", \"t5mix {c}\"]\n",
            name = s.name,
            n = s.tasks,
            c = at(&s.command, "$JOB_COMPLETION_INDEX")
        );
        k8s += &format!(
            "$KUBECTL apply -f - <<'EOF'\n{manifest}EOF\n\
             $KUBECTL wait --for=condition=complete --timeout=-1s job/t5mix-{job}-{}\n",
            s.name
        );
        yaml += &manifest;
    }
    summary += &format!("  then:                  t5mix {last}\n");
    slurm += &format!(
        "sbatch --parsable $SBATCH_ARGS ${{dep:+--dependency=afterok:$dep --kill-on-invalid-dep=yes}} \
         --job-name=t5mix-{job}-last --wrap \"$T5MIX {last}\"\n"
    );
    k8s += &format!("echo \"then: t5mix {last}\"\n");
    for (name, text) in [("slurm.sh", &slurm), ("k8s.yaml", &yaml), ("k8s.sh", &k8s)] {
        write_atomic(&dir.join(name), text.as_bytes())?;
        summary += &format!("{name}: {}\n", dir.join(name).display());
    }
    Ok(summary)
}

/// Launch files for a command already split over workers (`t5mix build
/// --num-workers N`): the same command per worker with `--worker-index`
/// set, then with `--finalize`. `args` is the command's arguments; those
/// naming the launch folder (`flag`) or a worker index are left out.
pub fn worker_launchers(dir: &Path, args: &[String], flag: &str, workers: usize) -> Result<String> {
    let mut kept = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag || a == "--worker-index" {
            it.next();
        } else if !a.starts_with(&format!("{flag}=")) && !a.starts_with("--worker-index=") {
            kept.push(format!("'{}'", a.replace('\'', "'\\''")));
        }
    }
    let args = kept.join(" ");
    let stage = LaunchStage {
        name: "build".into(),
        tasks: workers,
        command: format!("{args} --worker-index {INDEX}"),
    };
    Ok(format!(
        "{workers} workers (run from this folder), then --finalize:\n{}",
        write_launchers(dir, "build", &[stage], &format!("{args} --finalize"))?
    ))
}
