#!/usr/bin/env python3
"""Independent reference for `ceusd eval`'s statistics (src/eval/stats.rs).

Generates a two-cohort scores file with ties, two readers (one with missing calls) and a
cohort small enough for McNemar's exact test, then computes every statistic with
scikit-learn, statsmodels and scipy:

- AUC: sklearn.metrics.roc_auc_score
- ROC curve and Youden threshold: sklearn.metrics.roc_curve(drop_intermediate=False)
- bootstrap 95% CI of the AUC: percentile (numpy.percentile, linear), 2000 resamples whose
  case indices come from the same SplitMix64 stream as the Rust code draws (re-implemented
  here), so the two must agree to rounding
- sensitivity and specificity CIs: statsmodels proportion_confint(method="beta")
  (Clopper-Pearson)
- McNemar: statsmodels.stats.contingency_tables.mcnemar, exact below 25 discordant pairs,
  otherwise chi-square with continuity correction

Writes tests/data/eval/scores.csv and tests/data/eval/reference.json.

    pip install -r tools/requirements.txt
    python3 tools/reference_eval.py [OUT_DIR]
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
THRESHOLD = 0.5
RESAMPLES = 2000
SEED = 20221


class SplitMix64:
    def __init__(self, state):
        self.state = state & MASK

    def next_u64(self):
        self.state = (self.state + GOLDEN) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def generate():
    rng = np.random.default_rng(2022)
    rows = []
    # (cohort, positives, negatives, separation): internal- and external-like cohorts, and a
    # small one for McNemar's exact test.
    cohorts = [("internal", 73, 36, 2.2), ("external", 50, 48, 1.4), ("small", 12, 9, 1.0)]
    for cohort, n_pos, n_neg, sep in cohorts:
        for positive in [True] * n_pos + [False] * n_neg:
            z = rng.normal(sep / 2 if positive else -sep / 2, 1.0)
            # Rounded to 2 decimals: ties between and within classes.
            score = round(float(1 / (1 + np.exp(-z))), 2)
            r1_right = rng.random() < (0.75 if positive else 0.9)
            r2_right = rng.random() < (0.9 if positive else 0.7)
            r1 = positive if r1_right else not positive
            r2 = positive if r2_right else not positive
            # Reader 2 did not read every case.
            r2_call = None if rng.random() < 0.1 else r2
            rows.append(dict(case=f"{cohort}-{len(rows)}", cohort=cohort, positive=positive,
                             score=score, reader1=r1, reader2=r2_call))
    return rows


def bootstrap_ci(labels, scores, seed):
    rng = SplitMix64(seed)
    n = len(labels)
    values = []
    redrawn = 0
    while len(values) < RESAMPLES:
        idx = [rng.below(n) for _ in range(n)]
        y = labels[idx]
        if y.min() == y.max():
            redrawn += 1
            continue
        values.append(roc_auc_score(y, scores[idx]))
    values = np.sort(np.array(values))
    return dict(low=float(np.percentile(values, 2.5)), high=float(np.percentile(values, 97.5)),
                redrawn=redrawn)


def proportion(k, n):
    if n == 0:
        return dict(successes=k, total=n, value=None, ci_low=None, ci_high=None)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
    return dict(successes=k, total=n, value=k / n, ci_low=float(lo), ci_high=float(hi))


def confusion(calls, labels):
    tp = int(np.sum(calls & labels))
    fn = int(np.sum(~calls & labels))
    tn = int(np.sum(~calls & ~labels))
    fp = int(np.sum(calls & ~labels))
    return dict(true_positive=tp, false_negative=fn, true_negative=tn, false_positive=fp)


def matched(labels, scores, reader_sens, reader_spec):
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    finite = np.isfinite(thr)
    ok = finite & (1 - fpr >= reader_spec - 1e-12)
    sens = None
    if ok.any():
        # Best sensitivity; of equal ones, the most specific.
        i = max(np.flatnonzero(ok), key=lambda k: (tpr[k], -fpr[k]))
        sens = [float(tpr[i]), float(thr[i])]
    ok = finite & (tpr >= reader_sens - 1e-12)
    spec = None
    if ok.any():
        # Best specificity; of equal ones, the most sensitive.
        i = max(np.flatnonzero(ok), key=lambda k: (1 - fpr[k], tpr[k]))
        spec = [float(1 - fpr[i]), float(thr[i])]
    return dict(sensitivity_at_reader_specificity=sens, specificity_at_reader_sensitivity=spec)


def cohort_stats(name, rows):
    labels = np.array([r["positive"] for r in rows])
    scores = np.array([r["score"] for r in rows])
    calls = scores >= THRESHOLD
    cm = confusion(calls, labels)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1
    readers = []
    for reader in ["reader1", "reader2"]:
        read = [r for r in rows if r[reader] is not None]
        rl = np.array([r["positive"] for r in read])
        rc = np.array([r[reader] for r in read])
        rs = np.array([r["score"] for r in read])
        rcm = confusion(rc, rl)
        model_right = (rs >= THRESHOLD) == rl
        reader_right = rc == rl
        b = int(np.sum(model_right & ~reader_right))
        c = int(np.sum(~model_right & reader_right))
        exact = b + c < 25
        test = mcnemar([[0, b], [c, 0]], exact=exact, correction=True)
        sens = proportion(rcm["true_positive"], rcm["true_positive"] + rcm["false_negative"])
        spec = proportion(rcm["true_negative"], rcm["true_negative"] + rcm["false_positive"])
        readers.append(dict(
            name=reader, cases=len(read), confusion=rcm, sensitivity=sens, specificity=spec,
            mcnemar=dict(model_only_correct=b, reader_only_correct=c, exact=exact,
                         statistic=None if exact else float(test.statistic),
                         p_value=float(test.pvalue)),
            model_matched=matched(rl, rs, sens["value"], spec["value"]),
        ))
    return dict(
        name=name, cases=len(rows), positives=int(labels.sum()), negatives=int((~labels).sum()),
        auc=float(roc_auc_score(labels, scores)),
        auc_ci=bootstrap_ci(labels, scores, SEED),
        confusion=cm,
        sensitivity=proportion(cm["true_positive"], cm["true_positive"] + cm["false_negative"]),
        specificity=proportion(cm["true_negative"], cm["true_negative"] + cm["false_positive"]),
        youden=dict(threshold=float(thr[best]), j=float(j[best])),
        roc=[dict(threshold=float(t) if np.isfinite(t) else None, false_positive_rate=float(f), true_positive_rate=float(p))
             for t, f, p in zip(thr, fpr, tpr)],
        readers=readers,
    )


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/data/eval"
    out.mkdir(parents=True, exist_ok=True)
    rows = generate()
    name = lambda p: "PDAC" if p else "CP"
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "cohort", "label", "score", "reader1", "reader2"])
        for r in rows:
            w.writerow([r["case"], r["cohort"], name(r["positive"]), f'{r["score"]:.2f}',
                        name(r["reader1"]), "" if r["reader2"] is None else name(r["reader2"])])
    cohorts = [cohort_stats(c, [r for r in rows if r["cohort"] == c]) for c in ["internal", "external", "small"]]
    cohorts.append(cohort_stats("all cohorts", rows))
    reference = dict(threshold=THRESHOLD, resamples=RESAMPLES, seed=SEED, cohorts=cohorts)
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {out / 'scores.csv'} and {out / 'reference.json'}")


if __name__ == "__main__":
    main()
