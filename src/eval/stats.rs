//! The paper's statistics, written so that an independent implementation can check each one
//! (`tools/reference_eval.py`, scikit-learn and statsmodels):
//!
//! - AUC as the Mann–Whitney probability that a positive case outscores a negative one (ties
//!   count one half), which equals the trapezoidal area under the empirical ROC curve;
//! - its 95% CI by the percentile bootstrap: 2000 resamples of the cases with replacement,
//!   drawn by a seeded SplitMix64 so that the reference can draw the same indices;
//! - sensitivity and specificity with exact (Clopper–Pearson) 95% CIs;
//! - the Youden-optimal threshold;
//! - McNemar's test of paired calls, exact binomial when there are fewer than 25 discordant
//!   pairs, otherwise χ² with continuity correction (statsmodels' convention);
//! - the model's sensitivity at a reader's specificity and specificity at a reader's
//!   sensitivity (its operating point matched to the reader).

use serde::Serialize;
use statrs::distribution::{Beta, Binomial, ChiSquared, ContinuousCDF, DiscreteCDF};

use crate::rng::SplitMix64;

/// One case: its score and whether it is truly positive (PDAC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    pub score: f64,
    pub positive: bool,
}

/// Area under the ROC curve; `None` when either class is absent.
pub fn auc(cases: &[Case]) -> Option<f64> {
    let mut sorted: Vec<Case> = cases.to_vec();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    let positives = sorted.iter().filter(|c| c.positive).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // For each group of tied scores: positives in it beat every negative below it and tie
    // with the negatives in it.
    let mut negatives_below = 0usize;
    let mut wins = 0.0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].score == sorted[i].score {
            j += 1;
        }
        let pos = sorted[i..j].iter().filter(|c| c.positive).count();
        let neg = (j - i) - pos;
        wins += pos as f64 * (negatives_below as f64 + 0.5 * neg as f64);
        negatives_below += neg;
        i = j;
    }
    Some(wins / (positives as f64 * negatives as f64))
}

/// A percentile bootstrap interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BootstrapCi {
    pub low: f64,
    pub high: f64,
    pub resamples: usize,
    /// Resamples that held one class only (no AUC) and were drawn again.
    pub redrawn: usize,
    pub seed: u64,
}

/// Percentile of sorted values with linear interpolation between order statistics (numpy's
/// default), `q` in [0, 1].
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The bootstrap resamples' case indices: resample `r` is `n` draws from one SplitMix64
/// stream seeded with `seed`, in order. A resample with one class only is discarded and the
/// next one drawn from the same stream.
pub fn bootstrap_auc_ci(cases: &[Case], resamples: usize, seed: u64) -> Option<BootstrapCi> {
    auc(cases)?;
    let n = cases.len();
    let mut rng = SplitMix64(seed);
    let mut values = Vec::with_capacity(resamples);
    let mut redrawn = 0;
    let mut sample = Vec::with_capacity(n);
    while values.len() < resamples {
        sample.clear();
        sample.extend((0..n).map(|_| cases[rng.below(n)]));
        match auc(&sample) {
            Some(a) => values.push(a),
            None => {
                redrawn += 1;
                if redrawn > 100 * resamples {
                    return None;
                }
            }
        }
    }
    values.sort_by(f64::total_cmp);
    Some(BootstrapCi {
        low: percentile(&values, 0.025),
        high: percentile(&values, 0.975),
        resamples,
        redrawn,
        seed,
    })
}

/// A proportion with its exact 95% CI.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Proportion {
    pub successes: usize,
    pub total: usize,
    /// `None` when `total` is 0.
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// Clopper–Pearson: the 2.5% and 97.5% quantiles of Beta(k, n-k+1) and Beta(k+1, n-k).
pub fn proportion(successes: usize, total: usize) -> Proportion {
    if total == 0 {
        return Proportion {
            successes,
            total,
            value: None,
            ci_low: None,
            ci_high: None,
        };
    }
    let (k, n) = (successes as f64, total as f64);
    let low = if successes == 0 {
        0.0
    } else {
        Beta::new(k, n - k + 1.0)
            .map(|b| b.inverse_cdf(0.025))
            .unwrap_or(0.0)
    };
    let high = if successes == total {
        1.0
    } else {
        Beta::new(k + 1.0, n - k)
            .map(|b| b.inverse_cdf(0.975))
            .unwrap_or(1.0)
    };
    Proportion {
        successes,
        total,
        value: Some(k / n),
        ci_low: Some(low),
        ci_high: Some(high),
    }
}

/// Counts at a threshold: a case is called positive when its score is at or above it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Confusion {
    pub true_positive: usize,
    pub false_negative: usize,
    pub true_negative: usize,
    pub false_positive: usize,
}

impl Confusion {
    pub fn from_calls(calls: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Confusion {
            true_positive: 0,
            false_negative: 0,
            true_negative: 0,
            false_positive: 0,
        };
        for (called_positive, positive) in calls {
            match (called_positive, positive) {
                (true, true) => c.true_positive += 1,
                (false, true) => c.false_negative += 1,
                (false, false) => c.true_negative += 1,
                (true, false) => c.false_positive += 1,
            }
        }
        c
    }

    pub fn at_threshold(cases: &[Case], threshold: f64) -> Self {
        Self::from_calls(cases.iter().map(|c| (c.score >= threshold, c.positive)))
    }

    pub fn sensitivity(&self) -> Proportion {
        proportion(self.true_positive, self.true_positive + self.false_negative)
    }

    pub fn specificity(&self) -> Proportion {
        proportion(self.true_negative, self.true_negative + self.false_positive)
    }
}

/// One point of the ROC curve: calling positive at `score >= threshold`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RocPoint {
    pub threshold: f64,
    pub false_positive_rate: f64,
    pub true_positive_rate: f64,
}

/// The ROC curve from (0, 0) to (1, 1), one point per distinct score from the highest down,
/// after a first point at +infinity (nothing called positive), as scikit-learn's `roc_curve`
/// with `drop_intermediate=False`.
pub fn roc_curve(cases: &[Case]) -> Vec<RocPoint> {
    let mut sorted = cases.to_vec();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let p = sorted.iter().filter(|c| c.positive).count().max(1) as f64;
    let n = sorted.iter().filter(|c| !c.positive).count().max(1) as f64;
    let mut points = vec![RocPoint {
        threshold: f64::INFINITY,
        false_positive_rate: 0.0,
        true_positive_rate: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        let score = sorted[i].score;
        while i < sorted.len() && sorted[i].score == score {
            if sorted[i].positive {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: score,
            false_positive_rate: fp as f64 / n,
            true_positive_rate: tp as f64 / p,
        });
    }
    points
}

/// The threshold that maximises Youden's J = sensitivity + specificity − 1; among equal J,
/// the highest threshold (scikit-learn's argmax order).
pub fn youden(cases: &[Case]) -> Option<(f64, f64)> {
    auc(cases)?;
    let mut best: Option<(f64, f64)> = None;
    for p in roc_curve(cases).into_iter().skip(1) {
        let j = p.true_positive_rate - p.false_positive_rate;
        if best.is_none_or(|(_, bj)| j > bj) {
            best = Some((p.threshold, j));
        }
    }
    best
}

/// McNemar's test of two paired sets of calls against the truth.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct McNemar {
    /// Cases the model got right and the reader wrong.
    pub model_only_correct: usize,
    /// Cases the reader got right and the model wrong.
    pub reader_only_correct: usize,
    pub exact: bool,
    /// χ² with continuity correction; `None` for the exact test.
    pub statistic: Option<f64>,
    pub p_value: f64,
}

/// Fewer discordant pairs than this: exact binomial test.
pub const MCNEMAR_EXACT_BELOW: usize = 25;

pub fn mcnemar(model_only_correct: usize, reader_only_correct: usize) -> McNemar {
    let (b, c) = (model_only_correct, reader_only_correct);
    let n = b + c;
    if n < MCNEMAR_EXACT_BELOW {
        let p_value = if n == 0 {
            1.0
        } else {
            let tail = Binomial::new(0.5, n as u64)
                .map(|d| d.cdf(b.min(c) as u64))
                .unwrap_or(1.0);
            (2.0 * tail).min(1.0)
        };
        McNemar {
            model_only_correct: b,
            reader_only_correct: c,
            exact: true,
            statistic: None,
            p_value,
        }
    } else {
        let diff = (b as f64 - c as f64).abs() - 1.0;
        let statistic = diff * diff / n as f64;
        let p_value = ChiSquared::new(1.0)
            .map(|d| 1.0 - d.cdf(statistic))
            .unwrap_or(1.0);
        McNemar {
            model_only_correct: b,
            reader_only_correct: c,
            exact: false,
            statistic: Some(statistic),
            p_value,
        }
    }
}

/// The model's operating points matched to a reader's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatchedOperatingPoint {
    /// The model's best sensitivity among thresholds whose specificity is at least the
    /// reader's (of equal sensitivities, the most specific), and that threshold.
    pub sensitivity_at_reader_specificity: Option<(f64, f64)>,
    /// The model's best specificity among thresholds whose sensitivity is at least the
    /// reader's (of equal specificities, the most sensitive), and that threshold.
    pub specificity_at_reader_sensitivity: Option<(f64, f64)>,
}

pub fn matched_operating_point(
    cases: &[Case],
    reader_sensitivity: f64,
    reader_specificity: f64,
) -> MatchedOperatingPoint {
    const EPS: f64 = 1e-12;
    let roc = roc_curve(cases);
    let finite = |p: &&RocPoint| p.threshold.is_finite();
    let sensitivity_at_reader_specificity = roc
        .iter()
        .filter(finite)
        .filter(|p| 1.0 - p.false_positive_rate >= reader_specificity - EPS)
        .max_by(|a, b| {
            a.true_positive_rate
                .total_cmp(&b.true_positive_rate)
                .then(b.false_positive_rate.total_cmp(&a.false_positive_rate))
        })
        .map(|p| (p.true_positive_rate, p.threshold));
    let specificity_at_reader_sensitivity = roc
        .iter()
        .filter(finite)
        .filter(|p| p.true_positive_rate >= reader_sensitivity - EPS)
        .max_by(|a, b| {
            b.false_positive_rate
                .total_cmp(&a.false_positive_rate)
                .then(a.true_positive_rate.total_cmp(&b.true_positive_rate))
        })
        .map(|p| (1.0 - p.false_positive_rate, p.threshold));
    MatchedOperatingPoint {
        sensitivity_at_reader_specificity,
        specificity_at_reader_sensitivity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(scores: &[(f64, bool)]) -> Vec<Case> {
        scores
            .iter()
            .map(|&(score, positive)| Case { score, positive })
            .collect()
    }

    #[test]
    fn auc_counts_ties_as_half() {
        let c = cases(&[(0.1, false), (0.4, true), (0.4, false), (0.8, true)]);
        // Pairs (pos, neg): (0.4,0.1)=1, (0.4,0.4)=0.5, (0.8,0.1)=1, (0.8,0.4)=1.
        assert_eq!(auc(&c), Some(3.5 / 4.0));
        assert_eq!(auc(&cases(&[(0.1, true), (0.2, true)])), None);
    }

    #[test]
    fn exact_intervals_at_the_edges() {
        let all = proportion(10, 10);
        assert_eq!(all.ci_high, Some(1.0));
        // 0.025^(1/10): the lower bound when every trial succeeds.
        assert!((all.ci_low.unwrap() - 0.025f64.powf(0.1)).abs() < 1e-9);
        assert_eq!(proportion(0, 0).value, None);
    }

    #[test]
    fn mcnemar_switches_to_chi_square_at_25_discordant_pairs() {
        let exact = mcnemar(3, 9);
        assert!(exact.exact);
        // 2 * P(X <= 3), X ~ Bin(12, 1/2) = 2 * 299/4096.
        assert!((exact.p_value - 2.0 * 299.0 / 4096.0).abs() < 1e-12);
        let chi = mcnemar(5, 20);
        assert!(!chi.exact);
        assert!((chi.statistic.unwrap() - 14.0 * 14.0 / 25.0).abs() < 1e-12);
        assert_eq!(mcnemar(0, 0).p_value, 1.0);
    }
}
