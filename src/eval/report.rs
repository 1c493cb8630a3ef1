//! The evaluation as a Markdown report, laid out like the paper's tables.

use std::fmt::Write;

use super::results::{CohortReport, EvalReport, EvalSettings, ReaderReport};
use super::stats::Proportion;

fn pct(p: &Proportion) -> String {
    match (p.value, p.ci_low, p.ci_high) {
        (Some(v), Some(lo), Some(hi)) => format!(
            "{:.1}% ({}/{}; 95% CI {:.1}–{:.1})",
            100.0 * v,
            p.successes,
            p.total,
            100.0 * lo,
            100.0 * hi
        ),
        _ => format!("– ({}/{})", p.successes, p.total),
    }
}

fn p_value(p: f64) -> String {
    if p < 0.001 {
        "< .001".into()
    } else {
        format!("{p:.3}")
    }
}

/// The report: what was evaluated and how, then one section per cohort.
pub fn markdown(r: &EvalReport) -> String {
    let mut s = String::new();
    preamble(&mut s, r);
    for c in &r.cohorts {
        cohort_section(&mut s, c, &r.settings);
    }
    s
}

/// The title, the model (or the scores file), the methods in one paragraph, and the warnings.
fn preamble(s: &mut String, r: &EvalReport) {
    let _ = writeln!(s, "# Evaluation of {}\n", r.source.display());
    match &r.model {
        Some(m) => {
            let _ = writeln!(
                s,
                "Model: **{}** (content hash `{}`), {}.\n",
                m.name, m.content_hash, m.intended_use
            );
        }
        None => {
            let _ = writeln!(s, "Scores read from the file; no model was run.\n");
        }
    }
    let st = &r.settings;
    let _ = writeln!(
        s,
        "Positive class {} (score = P({})), called at score ≥ {}. AUC 95% CI: percentile \
         bootstrap, {} resamples, seed {}. Proportions: exact (Clopper–Pearson) 95% CI. \
         McNemar: two-sided, exact binomial below 25 discordant pairs, otherwise χ² with \
         continuity correction.\n",
        st.positive_class,
        st.positive_class,
        st.threshold,
        st.bootstrap_resamples,
        st.bootstrap_seed
    );
    for w in &r.warnings {
        let _ = writeln!(s, "> **Warning:** {w}\n");
    }
}

/// One cohort: the model's figures, then the readers' table when there are readers.
fn cohort_section(s: &mut String, c: &CohortReport, st: &EvalSettings) {
    let _ = writeln!(
        s,
        "## {} ({} cases: {} {}, {} {})\n",
        c.name, c.cases, c.positives, st.positive_class, c.negatives, st.negative_class
    );
    let auc = match (c.auc, &c.auc_ci) {
        (Some(a), Some(ci)) => format!("{a:.3} (95% CI {:.3}–{:.3})", ci.low, ci.high),
        (Some(a), None) => format!("{a:.3}"),
        _ => "–".into(),
    };
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| AUC | {auc} |");
    let _ = writeln!(
        s,
        "| Sensitivity at {} | {} |",
        st.threshold,
        pct(&c.sensitivity)
    );
    let _ = writeln!(
        s,
        "| Specificity at {} | {} |",
        st.threshold,
        pct(&c.specificity)
    );
    let cm = &c.confusion;
    let _ = writeln!(
        s,
        "| Confusion (TP, FN, TN, FP) | {}, {}, {}, {} |",
        cm.true_positive, cm.false_negative, cm.true_negative, cm.false_positive
    );
    if let Some(y) = &c.youden {
        let _ = writeln!(
            s,
            "| Youden-optimal threshold | {:.4} (J {:.3}; sensitivity {:.1}%, specificity {:.1}%) |",
            y.threshold,
            y.j,
            100.0 * y.sensitivity,
            100.0 * y.specificity
        );
    }
    let _ = writeln!(s);
    if !c.readers.is_empty() {
        readers_table(s, &c.readers);
    }
}

/// Each reader against the model: the reader's figures, McNemar, and the model's operating
/// points matched to the reader.
fn readers_table(s: &mut String, readers: &[ReaderReport]) {
    let _ = writeln!(
        s,
        "| Reader | Cases | Sensitivity | Specificity | Model right / reader right (discordant) | McNemar p | Model sensitivity at reader's specificity | Model specificity at reader's sensitivity |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for rd in readers {
        let m = &rd.mcnemar;
        let matched = |v: Option<(f64, f64)>| match v {
            Some((value, threshold)) => {
                format!("{:.1}% (threshold {threshold:.4})", 100.0 * value)
            }
            None => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} / {} | {}{} | {} | {} |",
            rd.name,
            rd.cases,
            pct(&rd.sensitivity),
            pct(&rd.specificity),
            m.model_only_correct,
            m.reader_only_correct,
            p_value(m.p_value),
            if m.exact { " (exact)" } else { "" },
            matched(rd.model_matched.sensitivity_at_reader_specificity),
            matched(rd.model_matched.specificity_at_reader_sensitivity),
        );
    }
    let _ = writeln!(s);
}
