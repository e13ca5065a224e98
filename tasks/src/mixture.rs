//! Mixtures of tasks and their rates (`seqio.Mixture`, `seqio.mixing_rate_num_examples`).
//!
//! A mixture lists tasks (each with a [`Rate`]) and sub-mixtures (each with a
//! fixed rate). As seqio's `Mixture.get_rate`, a task's rate is its own rate
//! plus, for every sub-mixture holding it, `submix_rate · rate_in_submix /
//! submix_total`. Sampling normalizes the rates to probabilities.
//!
//! ```
//! use std::collections::BTreeMap;
//! use t5mix_tasks::{Mixture, MixtureRegistry, Rate};
//! let counts = BTreeMap::from([("glue_cola_v002".to_string(), 8551), ("glue_rte_v002".to_string(), 2490)]);
//! let mut reg = MixtureRegistry::default();
//! reg.add(Mixture::new("glue_small")
//!     .task("glue_cola_v002", Rate::examples())
//!     .task("glue_rte_v002", Rate::examples())).unwrap();
//! let rates = reg.task_rates("glue_small", &|t: &str| counts.get(t).copied()).unwrap();
//! assert_eq!(rates["glue_cola_v002"], 8551.0);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Errors of mixtures and their rates.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixtureError {
    /// A name that seqio would refuse.
    #[error("invalid name {0:?}: task and mixture names must match ^[\\w\\d.:_#]+$")]
    InvalidName(String),
    /// A second registration under the same name.
    #[error("{0:?} is already registered")]
    Duplicate(String),
    /// A reference to a mixture that is not registered.
    #[error("unknown mixture {0:?}")]
    UnknownMixture(String),
    /// No example count for a task whose rate needs one.
    #[error("no example count for task {task:?} (build its cache first, or give a fixed rate)")]
    NoCount {
        /// The task.
        task: String,
    },
    /// A mixture that contains itself.
    #[error("mixture {0:?} contains itself")]
    Cycle(String),
    /// A rate parameter out of range.
    #[error("invalid rate: {0}")]
    InvalidRate(String),
}

/// seqio's name rule: `^[\w\d.:_#]+$`.
pub fn validate_name(name: &str) -> Result<(), MixtureError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '#'));
    if ok {
        Ok(())
    } else {
        Err(MixtureError::InvalidName(name.to_string()))
    }
}

/// How a task's rate is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Rate {
    /// A fixed number (T5's `rate_unsupervised` is `Fixed(1e6)`; equal mixing is `Fixed(1.0)`).
    Fixed {
        /// The rate.
        value: f64,
    },
    /// Examples-proportional (`seqio.mixing_rate_num_examples`): the task's
    /// example count, times `scale`, capped at `maximum`, to the power
    /// `1/temperature`.
    NumExamples {
        /// The cap K.
        #[serde(default)]
        maximum: Option<f64>,
        /// Temperature T.
        #[serde(default = "one")]
        temperature: f64,
        /// Scale applied before the cap.
        #[serde(default = "one")]
        scale: f64,
    },
}

impl Rate {
    /// A fixed rate.
    pub fn fixed(value: f64) -> Self {
        Rate::Fixed { value }
    }
    /// Examples-proportional without cap or temperature.
    pub fn examples() -> Self {
        Rate::NumExamples {
            maximum: None,
            temperature: 1.0,
            scale: 1.0,
        }
    }
    /// Examples-proportional with a cap and a temperature.
    pub fn examples_with(maximum: Option<f64>, temperature: f64, scale: f64) -> Self {
        Rate::NumExamples {
            maximum,
            temperature,
            scale,
        }
    }

    fn value(&self, task: &str, count: &dyn Fn(&str) -> Option<u64>) -> Result<f64, MixtureError> {
        match *self {
            Rate::Fixed { value } => {
                if value.is_finite() && value >= 0.0 {
                    Ok(value)
                } else {
                    Err(MixtureError::InvalidRate(format!(
                        "fixed rate {value} for {task}"
                    )))
                }
            }
            Rate::NumExamples {
                maximum,
                temperature,
                scale,
            } => {
                if temperature.is_nan() || temperature <= 0.0 {
                    return Err(MixtureError::InvalidRate(format!(
                        "temperature {temperature}"
                    )));
                }
                let n = count(task).ok_or_else(|| MixtureError::NoCount {
                    task: task.to_string(),
                })?;
                Ok(rate_num_examples(n, maximum, temperature, scale))
            }
        }
    }
}

fn one() -> f64 {
    1.0
}

/// `seqio.mixing_rate_num_examples`: `n·scale`, capped at `maximum`, then
/// to the power `1/temperature` (only when the temperature is not 1).
pub fn rate_num_examples(n: u64, maximum: Option<f64>, temperature: f64, scale: f64) -> f64 {
    let mut r = n as f64 * scale;
    if let Some(m) = maximum {
        r = r.min(m);
    }
    if temperature != 1.0 {
        r = r.powf(1.0 / temperature);
    }
    r
}

/// A member of a mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Member {
    /// A task with its rate.
    Task {
        /// Task name.
        name: String,
        /// Its rate.
        rate: Rate,
    },
    /// A registered mixture with a fixed rate.
    Mixture {
        /// Mixture name.
        name: String,
        /// Its rate.
        rate: f64,
    },
}

/// A named mixture of tasks and sub-mixtures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixture {
    /// Its name.
    pub name: String,
    /// Tasks and sub-mixtures, in order.
    pub members: Vec<Member>,
}

impl Mixture {
    /// An empty mixture.
    pub fn new(name: &str) -> Self {
        Mixture {
            name: name.to_string(),
            members: Vec::new(),
        }
    }

    /// Adds a task.
    pub fn task(mut self, name: &str, rate: Rate) -> Self {
        self.members.push(Member::Task {
            name: name.to_string(),
            rate,
        });
        self
    }

    /// Adds a registered mixture with a fixed rate.
    pub fn submixture(mut self, name: &str, rate: f64) -> Self {
        self.members.push(Member::Mixture {
            name: name.to_string(),
            rate,
        });
        self
    }

    /// Adds several tasks with one rate (seqio's `default_rate`).
    pub fn tasks<'a>(mut self, names: impl IntoIterator<Item = &'a str>, rate: Rate) -> Self {
        for n in names {
            self = self.task(n, rate);
        }
        self
    }
}

/// Mixtures by name.
#[derive(Debug, Clone, Default)]
pub struct MixtureRegistry {
    mixtures: BTreeMap<String, Mixture>,
}

impl MixtureRegistry {
    /// Registers a mixture (its sub-mixtures must be registered first).
    pub fn add(&mut self, m: Mixture) -> Result<(), MixtureError> {
        validate_name(&m.name)?;
        for member in &m.members {
            match member {
                Member::Task { name, .. } => validate_name(name)?,
                Member::Mixture { name, .. } => {
                    if name == &m.name {
                        return Err(MixtureError::Cycle(name.clone()));
                    }
                    if !self.mixtures.contains_key(name) {
                        return Err(MixtureError::UnknownMixture(name.clone()));
                    }
                }
            }
        }
        if self.mixtures.contains_key(&m.name) {
            return Err(MixtureError::Duplicate(m.name));
        }
        self.mixtures.insert(m.name.clone(), m);
        Ok(())
    }

    /// The mixture of that name.
    pub fn get(&self, name: &str) -> Option<&Mixture> {
        self.mixtures.get(name)
    }

    /// The built-in mixtures.
    pub fn builtin() -> Self {
        let mut r = MixtureRegistry::default();
        r.add(Mixture::new("glue_proportional").tasks(
            [
                "glue_mnli",
                "glue_qnli",
                "glue_qqp",
                "glue_rte",
                "glue_sst2",
                "glue_stsb_t5",
                "glue_wnli",
            ],
            Rate::examples(),
        ))
        .expect("built-in mixture");
        r
    }

    /// Names of all mixtures.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.mixtures.keys().map(String::as_str)
    }

    /// Every task of the mixture, sub-mixtures included, sorted.
    pub fn tasks(&self, name: &str) -> Result<BTreeSet<String>, MixtureError> {
        let m = self
            .get(name)
            .ok_or_else(|| MixtureError::UnknownMixture(name.to_string()))?;
        let mut out = BTreeSet::new();
        for member in &m.members {
            match member {
                Member::Task { name, .. } => {
                    out.insert(name.clone());
                }
                Member::Mixture { name, .. } => out.extend(self.tasks(name)?),
            }
        }
        Ok(out)
    }

    /// `Mixture.get_rate` for every task of the mixture (unnormalized).
    /// `count` gives a task's number of examples.
    pub fn task_rates(
        &self,
        name: &str,
        count: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<BTreeMap<String, f64>, MixtureError> {
        let m = self
            .get(name)
            .ok_or_else(|| MixtureError::UnknownMixture(name.to_string()))?;
        let mut rates: BTreeMap<String, f64> =
            self.tasks(name)?.into_iter().map(|t| (t, 0.0)).collect();
        for member in &m.members {
            match member {
                Member::Task { name, rate } => {
                    *rates.get_mut(name).unwrap() += rate.value(name, count)?;
                }
                Member::Mixture { name, rate } => {
                    let sub = self.task_rates(name, count)?;
                    let total: f64 = sub.values().sum();
                    for (t, r) in sub {
                        *rates.get_mut(&t).unwrap() += rate * r / total;
                    }
                }
            }
        }
        Ok(rates)
    }

    /// Task probabilities (rates normalized to sum 1).
    pub fn task_probabilities(
        &self,
        name: &str,
        count: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<BTreeMap<String, f64>, MixtureError> {
        let rates = self.task_rates(name, count)?;
        let total: f64 = rates.values().sum();
        Ok(rates
            .into_iter()
            .map(|(t, r)| (t, if total > 0.0 { r / total } else { 0.0 }))
            .collect())
    }
}
