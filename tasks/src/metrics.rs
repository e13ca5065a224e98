//! Postprocessors and metrics of T5's tasks (`t5/data/postprocessors.py`,
//! `t5/evaluation/metrics.py`, `qa_utils.py`), scaled ×100 as T5 reports them.
//!
//! ```
//! use t5mix_tasks::metrics::{accuracy, string_label_to_class_id};
//! let labels = ["negative", "positive"];
//! let p: Vec<i64> = ["positive", "Positive"].iter().map(|s| string_label_to_class_id(s, &labels)).collect();
//! assert_eq!(p, vec![1, -1]);
//! assert_eq!(accuracy(&[1, 1], &p), 50.0);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use regex::Regex;

/// `string_label_to_class_id`: the index of the exact label string, else −1.
pub fn string_label_to_class_id(s: &str, label_classes: &[&str]) -> i64 {
    label_classes
        .iter()
        .position(|l| *l == s)
        .map_or(-1, |i| i as i64)
}

/// `string_to_float`: Python's `float(s)` (surrounding whitespace allowed),
/// else `default`.
pub fn string_to_float(s: &str, default: f64) -> f64 {
    s.trim().parse().unwrap_or(default)
}

/// Accuracy ×100.
pub fn accuracy(targets: &[i64], predictions: &[i64]) -> f64 {
    if targets.is_empty() {
        return f64::NAN;
    }
    let right = targets
        .iter()
        .zip(predictions)
        .filter(|(t, p)| t == p)
        .count();
    100.0 * right as f64 / targets.len() as f64
}

/// sklearn's `matthews_corrcoef` ×100 (multiclass form; −1 is a class of its
/// own); 0 when undefined.
pub fn matthews_corrcoef(targets: &[i64], predictions: &[i64]) -> f64 {
    let mut t: BTreeMap<i64, f64> = BTreeMap::new();
    let mut p: BTreeMap<i64, f64> = BTreeMap::new();
    let mut correct = 0.0;
    for (&a, &b) in targets.iter().zip(predictions) {
        *t.entry(a).or_default() += 1.0;
        *p.entry(b).or_default() += 1.0;
        if a == b {
            correct += 1.0;
        }
    }
    let s = targets.len() as f64;
    let pt: f64 = p
        .iter()
        .map(|(k, v)| v * t.get(k).copied().unwrap_or(0.0))
        .sum();
    let pp: f64 = p.values().map(|v| v * v).sum();
    let tt: f64 = t.values().map(|v| v * v).sum();
    let den = ((s * s - pp) * (s * s - tt)).sqrt();
    if den == 0.0 {
        0.0
    } else {
        100.0 * (correct * s - pt) / den
    }
}

/// `f1_score_with_invalid` ×100: binary F1 of class 1, where a prediction that
/// is neither 0 nor 1 counts as the opposite of its target.
pub fn f1_score_with_invalid(targets: &[i64], predictions: &[i64]) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
    for (&t, &p) in targets.iter().zip(predictions) {
        let p = if p == 0 || p == 1 { p } else { 1 - t };
        match (t == 1, p == 1) {
            (true, true) => tp += 1.0,
            (false, true) => fp += 1.0,
            (true, false) => fn_ += 1.0,
            _ => {}
        }
    }
    if tp == 0.0 {
        0.0
    } else {
        100.0 * 2.0 * tp / (2.0 * tp + fp + fn_)
    }
}

/// Pearson correlation ×100 (NaN when either side is constant).
pub fn pearson_corrcoef(targets: &[f64], predictions: &[f64]) -> f64 {
    let n = targets.len() as f64;
    let mt = targets.iter().sum::<f64>() / n;
    let mp = predictions.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&t, &p) in targets.iter().zip(predictions) {
        let (a, b) = (t - mt, p - mp);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    100.0 * (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// Ranks with ties averaged (scipy `rankdata`).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation ×100 (NaN when either side is constant).
pub fn spearman_corrcoef(targets: &[f64], predictions: &[f64]) -> f64 {
    pearson_corrcoef(&ranks(targets), &ranks(predictions))
}

fn articles() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"\b(a|an|the)\b").unwrap())
}

/// `qa_utils.normalize_squad`: lower case, ASCII punctuation removed,
/// articles removed, whitespace collapsed.
pub fn normalize_squad(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_articles = articles().replace_all(&no_punct, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn token_f1(target: &str, prediction: &str) -> f64 {
    let p: Vec<&str> = prediction.split_whitespace().collect();
    let t: Vec<&str> = target.split_whitespace().collect();
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &t {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / t.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// SQuAD exact match and F1 ×100, each the best over an example's references.
pub fn squad(targets: &[Vec<String>], predictions: &[String]) -> (f64, f64) {
    let n = targets.len().max(1) as f64;
    let (mut em, mut f1) = (0.0, 0.0);
    for (refs, p) in targets.iter().zip(predictions) {
        let p = normalize_squad(p);
        let refs: Vec<String> = refs.iter().map(|r| normalize_squad(r)).collect();
        em += refs
            .iter()
            .map(|r| (*r == p) as u8 as f64)
            .fold(0.0, f64::max);
        f1 += refs.iter().map(|r| token_f1(r, &p)).fold(0.0, f64::max);
    }
    (100.0 * em / n, 100.0 * f1 / n)
}

fn intl_regexes() -> &'static [(Regex, &'static str); 3] {
    static R: OnceLock<[(Regex, &'static str); 3]> = OnceLock::new();
    R.get_or_init(|| {
        [
            (Regex::new(r"(\P{N})(\p{P})").unwrap(), "$1 $2 "),
            (Regex::new(r"(\p{P})(\P{N})").unwrap(), " $1 $2"),
            (Regex::new(r"(\p{S})").unwrap(), " $1 "),
        ]
    })
}

/// sacreBLEU's `intl` tokenizer (`TokenizerV14International`).
pub fn tokenize_intl(line: &str) -> Vec<String> {
    let mut s = line.to_string();
    for (re, rep) in intl_regexes() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    s.split_whitespace().map(str::to_string).collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_default() += 1;
        }
    }
    m
}

/// T5's `bleu`: sacreBLEU corpus BLEU (intl tokenizer, `exp` smoothing,
/// closest reference length, 4-grams, not lower-cased). `references` are
/// reference streams: `references[r][i]` is the r-th reference of example i.
pub fn bleu(references: &[Vec<String>], predictions: &[String]) -> f64 {
    let mut correct = [0usize; 4];
    let mut total = [0usize; 4];
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (i, pred) in predictions.iter().enumerate() {
        let hyp = tokenize_intl(pred.trim_end());
        let refs: Vec<Vec<String>> = references
            .iter()
            .map(|stream| tokenize_intl(stream[i].trim_end()))
            .collect();
        sys_len += hyp.len();
        // Closest reference length, ties to the shorter.
        let mut closest: Option<(usize, usize)> = None;
        for r in &refs {
            let diff = r.len().abs_diff(hyp.len());
            closest = match closest {
                None => Some((diff, r.len())),
                Some((d, l)) if diff < d || (diff == d && r.len() < l) => Some((diff, r.len())),
                c => c,
            };
        }
        ref_len += closest.map_or(0, |(_, l)| l);
        for n in 1..=4 {
            let h = ngrams(&hyp, n);
            let mut max_ref: HashMap<&[String], usize> = HashMap::new();
            for r in &refs {
                for (g, c) in ngrams(r, n) {
                    let e = max_ref.entry(g).or_default();
                    *e = (*e).max(c);
                }
            }
            for (g, c) in &h {
                correct[n - 1] += (*c).min(max_ref.get(g).copied().unwrap_or(0));
            }
            total[n - 1] += hyp.len().saturating_sub(n - 1);
        }
    }
    let mut precisions = [0.0f64; 4];
    let mut smooth = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        if correct[n] == 0 {
            smooth *= 2.0;
            precisions[n] = 100.0 / (smooth * total[n] as f64);
        } else {
            precisions[n] = 100.0 * correct[n] as f64 / total[n] as f64;
        }
    }
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
}

/// Precision, recall and F-measure of one ROUGE type.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScore {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F-measure.
    pub fmeasure: f64,
}

fn rouge_tokens(text: &str) -> Vec<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let re = R.get_or_init(|| Regex::new(r"[^a-z0-9]+").unwrap());
    re.replace_all(&text.to_lowercase(), " ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn score_from(hits: usize, target_total: usize, pred_total: usize) -> RougeScore {
    let precision = if pred_total > 0 {
        hits as f64 / pred_total as f64
    } else {
        0.0
    };
    let recall = if target_total > 0 {
        hits as f64 / target_total as f64
    } else {
        0.0
    };
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    RougeScore {
        precision,
        recall,
        fmeasure,
    }
}

fn rouge_n(target: &[String], prediction: &[String], n: usize) -> RougeScore {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let hits: usize = t
        .iter()
        .map(|(g, c)| (*c).min(p.get(g).copied().unwrap_or(0)))
        .sum();
    score_from(hits, t.values().sum(), p.values().sum())
}

/// Indices into `r` of one longest common subsequence (rouge_score's backtrack).
fn lcs_indices(r: &[String], c: &[String]) -> Vec<usize> {
    let (m, n) = (r.len(), c.len());
    let mut t = vec![vec![0usize; n + 1]; m + 1];
    for i in 1..=m {
        for j in 1..=n {
            t[i][j] = if r[i - 1] == c[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    let (mut i, mut j) = (m, n);
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

fn rouge_lsum(target: &str, prediction: &str) -> RougeScore {
    let sents = |s: &str| -> Vec<Vec<String>> {
        s.split('\n')
            .filter(|x| !x.is_empty())
            .map(rouge_tokens)
            .collect()
    };
    let (r, c) = (sents(target), sents(prediction));
    let m: usize = r.iter().map(Vec::len).sum();
    let n: usize = c.iter().map(Vec::len).sum();
    if r.is_empty() || c.is_empty() || m == 0 || n == 0 {
        return RougeScore::default();
    }
    let mut cnt_r: HashMap<&str, i64> = HashMap::new();
    let mut cnt_c: HashMap<&str, i64> = HashMap::new();
    for s in &r {
        for t in s {
            *cnt_r.entry(t).or_default() += 1;
        }
    }
    for s in &c {
        for t in s {
            *cnt_c.entry(t).or_default() += 1;
        }
    }
    let mut hits = 0;
    for ref_sent in &r {
        let mut union: Vec<usize> = c.iter().flat_map(|cs| lcs_indices(ref_sent, cs)).collect();
        union.sort_unstable();
        union.dedup();
        for i in union {
            let tok = ref_sent[i].as_str();
            let (a, b) = (
                cnt_c.get(tok).copied().unwrap_or(0),
                cnt_r.get(tok).copied().unwrap_or(0),
            );
            if a > 0 && b > 0 {
                hits += 1;
                *cnt_c.get_mut(tok).unwrap() -= 1;
                *cnt_r.get_mut(tok).unwrap() -= 1;
            }
        }
    }
    score_from(hits, m, n)
}

/// rouge_score's `RougeScorer(["rouge1", "rouge2", "rougeLsum"]).score` of
/// one example, on T5's rewritten text (`" . "` → `" .\n"`).
pub fn rouge_example(target: &str, prediction: &str) -> [RougeScore; 3] {
    let (t, p) = (
        target.replace(" . ", " .\n"),
        prediction.replace(" . ", " .\n"),
    );
    let (tt, pt) = (rouge_tokens(&t), rouge_tokens(&p));
    [
        rouge_n(&tt, &pt, 1),
        rouge_n(&tt, &pt, 2),
        rouge_lsum(&t, &p),
    ]
}

/// T5's `rouge`: rouge1, rouge2, rougeLsum F ×100. T5 reports the median of
/// a bootstrap (numpy's global RNG) of the mean; this is the mean itself,
/// which equals it for one example or equal scores.
pub fn rouge(targets: &[String], predictions: &[String]) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for (t, p) in targets.iter().zip(predictions) {
        for (k, s) in rouge_example(t, p).iter().enumerate() {
            sum[k] += s.fmeasure;
        }
    }
    let n = targets.len().max(1) as f64;
    sum.map(|s| 100.0 * s / n)
}

/// numpy's legacy `RandomState` (MT19937), enough to replay
/// `np.random.seed(s); np.random.choice(n, size=n)` exactly.
struct NumpyRandomState {
    mt: [u32; 624],
    index: usize,
}

impl NumpyRandomState {
    fn seed(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState { mt, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `randint(0, n)` for small n: masked rejection sampling.
    fn below(&mut self, n: u32) -> u32 {
        let rng = n - 1;
        if rng == 0 {
            return 0;
        }
        let mut mask = rng;
        for s in [1, 2, 4, 8, 16] {
            mask |= mask >> s;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= rng {
                return v;
            }
        }
    }
}

/// `np.random.seed(seed); np.random.choice(n, size=count)` (numpy's legacy
/// generator), as rouge_score's bootstrap draws its resamples.
pub fn numpy_choice(seed: u32, n: u32, count: usize) -> Vec<u32> {
    let mut rs = NumpyRandomState::seed(seed);
    (0..count).map(|_| rs.below(n)).collect()
}

/// T5's `rouge` exactly: rouge_score's `BootstrapAggregator` (1000
/// resamples of the examples, median of the resampled means) after
/// `np.random.seed(seed)` — the reference values were made with seed 0.
pub fn rouge_bootstrap(targets: &[String], predictions: &[String], seed: u32) -> [f64; 3] {
    let scores: Vec<[RougeScore; 3]> = targets
        .iter()
        .zip(predictions)
        .map(|(t, p)| rouge_example(t, p))
        .collect();
    let n = scores.len();
    if n == 0 {
        return [f64::NAN; 3];
    }
    let mut rs = NumpyRandomState::seed(seed);
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut means: Vec<f64> = (0..1000)
            .map(|_| {
                let idx: Vec<usize> = (0..n).map(|_| rs.below(n as u32) as usize).collect();
                idx.iter().map(|&i| scores[i][k].fmeasure).sum::<f64>() / n as f64
            })
            .collect();
        means.sort_by(f64::total_cmp);
        *o = 100.0 * (means[499] + means[500]) / 2.0;
    }
    out
}

/// A postprocessed target or prediction (what seqio's `postprocess_fn`
/// returns and its `metric_fns` take).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text as decoded.
    Text(String),
    /// Several acceptable texts (SQuAD's answers).
    Texts(Vec<String>),
    /// A class id (−1: not a label).
    Label(i64),
    /// A number.
    Float(f64),
}

impl Value {
    fn texts(&self) -> Vec<String> {
        match self {
            Value::Text(t) => vec![t.clone()],
            Value::Texts(t) => t.clone(),
            Value::Label(l) => vec![l.to_string()],
            Value::Float(f) => vec![f.to_string()],
        }
    }

    fn text(&self) -> String {
        self.texts().into_iter().next().unwrap_or_default()
    }
}

/// A postprocessor written in Rust: `(decoded text, the example's row,
/// is_target) → value`; closures of that shape are postprocessors.
pub trait PostprocessFn: Send + Sync {
    /// The value of one target or prediction.
    fn postprocess(&self, text: &str, row: &crate::supervised::Row, is_target: bool) -> Value;
}

impl<F> PostprocessFn for F
where
    F: Fn(&str, &crate::supervised::Row, bool) -> Value + Send + Sync,
{
    fn postprocess(&self, text: &str, row: &crate::supervised::Row, is_target: bool) -> Value {
        self(text, row, is_target)
    }
}

/// A metric written in Rust: `(targets, predictions) → named scores`;
/// closures of that shape are metrics.
pub trait MetricFn: Send + Sync {
    /// Scores of one task.
    fn compute(
        &self,
        targets: &[Value],
        predictions: &[Value],
    ) -> Result<Vec<(String, f64)>, String>;
}

impl<F> MetricFn for F
where
    F: Fn(&[Value], &[Value]) -> Result<Vec<(String, f64)>, String> + Send + Sync,
{
    fn compute(
        &self,
        targets: &[Value],
        predictions: &[Value],
    ) -> Result<Vec<(String, f64)>, String> {
        self(targets, predictions)
    }
}

/// T5's postprocessors by name (`t5.data.postprocessors`), or the user's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Postprocessor {
    /// The text as decoded.
    Text {},
    /// `string_label_to_class_id` over these labels.
    StringLabel {
        /// Class names in id order.
        labels: Vec<String>,
    },
    /// `string_to_float`, `default` when the text is not a number.
    StringToFloat {
        /// Value of a non-number.
        default: f64,
    },
    /// `qa`: a target is the list of all the row's answers (column
    /// `answers`, one per line), a prediction its text.
    Qa {},
    /// The user's function.
    Custom(crate::task::Custom<dyn PostprocessFn>),
}

impl Default for Postprocessor {
    fn default() -> Self {
        Postprocessor::Text {}
    }
}

impl Postprocessor {
    /// The value of one decoded target or prediction of `row`.
    pub fn apply(&self, text: &str, row: &crate::supervised::Row, is_target: bool) -> Value {
        match self {
            Postprocessor::Text {} => Value::Text(text.to_string()),
            Postprocessor::StringLabel { labels } => {
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                Value::Label(string_label_to_class_id(text, &l))
            }
            Postprocessor::StringToFloat { default } => {
                Value::Float(string_to_float(text, *default))
            }
            Postprocessor::Qa {} if is_target => Value::Texts(match row.get("answers") {
                Some(a) => a.split('\n').map(str::to_string).collect(),
                None => vec![text.to_string()],
            }),
            Postprocessor::Qa {} => Value::Text(text.to_string()),
            Postprocessor::Custom(c) => c.f.postprocess(text, row, is_target),
        }
    }
}

/// T5's metrics by name (`t5.evaluation.metrics`), or the user's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `accuracy` over class ids (or exact text).
    Accuracy,
    /// `sklearn_metrics_wrapper("matthews_corrcoef")`.
    MatthewsCorrcoef,
    /// `f1_score_with_invalid` (reported as `f1`).
    F1WithInvalid,
    /// `pearson_corrcoef`.
    PearsonCorrcoef,
    /// `spearman_corrcoef`.
    SpearmanCorrcoef,
    /// `squad`: exact match and F1, max over each target's answers (`em`, `f1`).
    Squad,
    /// `bleu` (sacreBLEU, intl tokenizer).
    Bleu,
    /// `rouge`: `rouge1`, `rouge2`, `rougeLsum`.
    Rouge,
    /// Exact match of the trimmed text ×100 (`exact_match`).
    ExactMatch,
    /// The user's function.
    Custom(crate::task::Custom<dyn MetricFn>),
}

impl Metric {
    /// Named scores over postprocessed targets and predictions.
    pub fn compute(
        &self,
        targets: &[Value],
        predictions: &[Value],
    ) -> Result<Vec<(String, f64)>, String> {
        let labels = |v: &[Value]| -> Result<Vec<i64>, String> {
            v.iter()
                .map(|x| match x {
                    Value::Label(l) => Ok(*l),
                    other => Err(format!(
                        "{self:?} needs class ids (a string_label postprocessor), got {other:?}"
                    )),
                })
                .collect()
        };
        let floats = |v: &[Value]| -> Result<Vec<f64>, String> {
            v.iter()
                .map(|x| match x {
                    Value::Float(f) => Ok(*f),
                    Value::Label(l) => Ok(*l as f64),
                    other => Err(format!(
                        "{self:?} needs numbers (a string_to_float postprocessor), got {other:?}"
                    )),
                })
                .collect()
        };
        let texts = |v: &[Value]| -> Vec<String> { v.iter().map(Value::text).collect() };
        Ok(match self {
            Metric::Accuracy => match (labels(targets), labels(predictions)) {
                (Ok(t), Ok(p)) => vec![("accuracy".into(), accuracy(&t, &p))],
                _ => vec![(
                    "accuracy".into(),
                    percent_equal(targets, predictions, false),
                )],
            },
            Metric::MatthewsCorrcoef => vec![(
                "matthews_corrcoef".into(),
                matthews_corrcoef(&labels(targets)?, &labels(predictions)?),
            )],
            Metric::F1WithInvalid => vec![(
                "f1".into(),
                f1_score_with_invalid(&labels(targets)?, &labels(predictions)?),
            )],
            Metric::PearsonCorrcoef => vec![(
                "pearson_corrcoef".into(),
                pearson_corrcoef(&floats(targets)?, &floats(predictions)?),
            )],
            Metric::SpearmanCorrcoef => vec![(
                "spearman_corrcoef".into(),
                spearman_corrcoef(&floats(targets)?, &floats(predictions)?),
            )],
            Metric::Squad => {
                let t: Vec<Vec<String>> = targets.iter().map(Value::texts).collect();
                let (em, f1) = squad(&t, &texts(predictions));
                vec![("em".into(), em), ("f1".into(), f1)]
            }
            Metric::Bleu => vec![("bleu".into(), bleu(&[texts(targets)], &texts(predictions)))],
            Metric::Rouge => {
                let [r1, r2, rl] = rouge(&texts(targets), &texts(predictions));
                vec![
                    ("rouge1".into(), r1),
                    ("rouge2".into(), r2),
                    ("rougeLsum".into(), rl),
                ]
            }
            Metric::ExactMatch => vec![(
                "exact_match".into(),
                percent_equal(targets, predictions, true),
            )],
            Metric::Custom(c) => c.f.compute(targets, predictions)?,
        })
    }
}

/// Share of predictions whose text equals the target's (×100; NaN for
/// none), after trimming when `trim`.
fn percent_equal(targets: &[Value], predictions: &[Value], trim: bool) -> f64 {
    let norm = |v: &Value| {
        let t = v.text();
        if trim {
            t.trim().to_string()
        } else {
            t
        }
    };
    let right = targets
        .iter()
        .zip(predictions)
        .filter(|(t, p)| norm(t) == norm(p))
        .count();
    if targets.is_empty() {
        return f64::NAN;
    }
    100.0 * right as f64 / targets.len() as f64
}

impl crate::supervised::TextFormat {
    /// The postprocessor and metrics T5 gives a task of this format
    /// (`get_glue_metric`, `get_glue_postprocess_fn`, SQuAD's `qa`, ROUGE,
    /// BLEU); a template is scored by exact match.
    pub fn default_evaluation(&self) -> (Postprocessor, Vec<Metric>) {
        use crate::formats::GlueBenchmark;
        use crate::supervised::TextFormat;
        match self {
            TextFormat::Glue { config, .. } => {
                let b = GlueBenchmark::from_config(config).unwrap_or(GlueBenchmark::Mnli);
                let post = Postprocessor::StringLabel {
                    labels: b.label_names().iter().map(|s| s.to_string()).collect(),
                };
                let metrics = match b {
                    // T5 scores AX with nothing: it has a test set only
                    _ if config == "ax" => vec![],
                    GlueBenchmark::Cola => vec![Metric::MatthewsCorrcoef],
                    GlueBenchmark::Mrpc | GlueBenchmark::Qqp => {
                        vec![Metric::F1WithInvalid, Metric::Accuracy]
                    }
                    _ => vec![Metric::Accuracy],
                };
                (post, metrics)
            }
            TextFormat::Stsb { .. } => (
                Postprocessor::StringToFloat { default: -1.0 },
                vec![Metric::PearsonCorrcoef, Metric::SpearmanCorrcoef],
            ),
            TextFormat::Squad { .. } => (Postprocessor::Qa {}, vec![Metric::Squad]),
            TextFormat::Summarize { .. } => (Postprocessor::Text {}, vec![Metric::Rouge]),
            TextFormat::Translate { .. } => (Postprocessor::Text {}, vec![Metric::Bleu]),
            TextFormat::Template { .. } => (Postprocessor::Text {}, vec![Metric::ExactMatch]),
        }
    }
}
