"""Paired comparisons of two evaluation runs of one case: is a difference in ASR, RR, ... real?

* **Units.** ASR, IR, RR, helpfulness (``safe_safes`` only) and lenient ASR (oracle verdicts) are rates
  over answers, an answer being (subset, id, shot); K-shot ASR (cases with K > 1) is a rate over
  questions, a question being (subset, id) with its set of shots, broken if any shot is ``relevant``.
  Units in one run only are counted (``only_a``, ``only_b``) and left out; a metric none of whose units
  pair is an error; one that only one run has (lenient ASR without an oracle) is skipped with a note.
* **Clusters.** Answers sharing a question (its K shots) or an image (VLGuard puts a ``safe_safes`` and
  a ``safe_unsafes`` question on one image, under one id) are not independent: units are clustered by
  id and by image path (connected components; an image every unit shares, a blank or a universal
  adversarial one, links nothing). A metric is *clustered* when a cluster holds two paired units.
* **Unclustered.** Rates: Wilson 95% intervals. Difference (B - A): Wald 95% interval (OLS of the
  per-unit differences on a constant). p: exact McNemar test on the discordant units (statsmodels).
* **Clustered.** Rates and difference: OLS on a constant with ``cov_type="cluster"`` (CR1, t with
  G - 1 degrees of freedom). p: the paired cluster sign-flip (randomisation) test of the summed
  difference (exact when at most 16 clusters differ, else 65,536 flips from a fixed seed, so reports
  are reproducible; ``scipy.stats.permutation_test``'s test, at a fraction of its time); with one
  unit per cluster it is exact McNemar.
  ``naive_difference_ci`` keeps the unclustered interval, to show what clustering changes.
* **Zero variance** (e.g. both models refuse every answer): a Wald interval would be a point, so the
  interval is the 95% Clopper-Pearson bound on the share of the G clusters that could differ though
  none was seen to (exact for equal cluster sizes); a clustered rate of 0 or 1 gets Wilson over G.
* **Multiple comparisons.** :func:`holm_adjust`: Holm's step-down correction (statsmodels
  ``multipletests``) over every comparison of a report; "significant" = Holm-adjusted p < 0.05.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

LABELS = ("refusal", "irrelevant", "relevant")
Unit = tuple[bool, frozenset]  # a unit's outcome, and the ids and images that tie it to others


class NoPairsError(ValueError):
    """Two runs of a case share no unit to compare."""


@dataclass
class PairedComparison:
    """One metric of one case: run A (the baseline) against run B on their paired units."""

    case: str
    metric: str
    unit: str  # "answers" or "questions"
    pairs: int
    clusters: int  # equal to pairs when no two paired units share a cluster
    only_a: int  # units in run A only (not paired, left out)
    only_b: int
    rate_a: float
    rate_a_ci: tuple[float, float]
    rate_b: float
    rate_b_ci: tuple[float, float]
    difference: float  # rate_b - rate_a over the paired units
    difference_ci: tuple[float, float]
    naive_difference_ci: tuple[float, float]  # as if every unit were independent
    a_only_success: int  # discordant units: outcome true in A, false in B
    b_only_success: int
    test: str  # "exact McNemar" or "cluster sign-flip"
    p_value: float
    p_holm: float = math.nan
    significant: bool | None = None

    @property
    def clustered(self) -> bool:
        return self.clusters < self.pairs


def read_judged(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``judged.jsonl`` (record n on line n), checked (:func:`check_records`)."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: record {number}: not JSON ({err})") from None
    check_records(records, str(path))
    return records


def check_records(records: Sequence[dict[str, Any]], source: str) -> None:
    """Raise a ValueError naming the source, the record (1-based) and the field of the first bad record."""
    seen: dict[tuple, int] = {}
    for number, record in enumerate(records, start=1):
        where = f"{source}: record {number}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: not a JSON object")
        if record.get("id") is None:
            raise ValueError(f"{where}: field 'id' is missing")
        where += f" (id {record['id']})"
        if "subset" not in record:
            raise ValueError(f"{where}: field 'subset' is missing")
        if record.get("label") not in LABELS:
            raise ValueError(f"{where}: field 'label' is {record.get('label')!r}, not one of {LABELS}")
        shot = record.get("shot", 0)
        if not isinstance(shot, int) or isinstance(shot, bool) or shot < 0:
            raise ValueError(f"{where}: field 'shot' is {shot!r}, not an integer >= 0")
        if not isinstance(record.get("verdicts") or {}, dict):
            raise ValueError(f"{where}: field 'verdicts' is not an object")
        key = (record["subset"], str(record["id"]), shot)
        if key in seen:
            raise ValueError(f"{where}: answer (subset, id, shot) = {key} repeats record {seen[key]}")
        seen[key] = number


def _links(record: dict[str, Any]) -> frozenset:
    image = record.get("image")
    return frozenset({("id", str(record["id"])), *([("image", str(image))] if image else [])})


def _answers(records: Sequence[dict], outcome: Callable[[dict], bool]) -> dict[Hashable, Unit]:
    return {(r["subset"], str(r["id"]), r.get("shot", 0)): (outcome(r), _links(r)) for r in records}


def asr_units(records: Sequence[dict]) -> dict[Hashable, Unit]:
    return _answers(records, lambda r: r["label"] == "relevant")


def ir_units(records: Sequence[dict]) -> dict[Hashable, Unit]:
    return _answers(records, lambda r: r["label"] == "irrelevant")


def rr_units(records: Sequence[dict]) -> dict[Hashable, Unit]:
    return _answers(records, lambda r: r["label"] == "refusal")


def helpfulness_units(records: Sequence[dict]) -> dict[Hashable, Unit]:
    return asr_units([r for r in records if r["subset"] == "safe_safes"])


def lenient_asr_units(records: Sequence[dict]) -> dict[Hashable, Unit]:
    """Harmful facts anywhere in the answer (oracle verdicts); empty for a run no oracle judged."""
    judged = any("lenient_success" in v for r in records for v in (r.get("verdicts") or {}).values())
    return _answers(records, _leaked) if judged else {}


def _leaked(record: dict[str, Any]) -> bool:
    return any(v.get("lenient_success") for v in (record.get("verdicts") or {}).values())


def kshot_asr_units(records: Sequence[dict]) -> dict[Hashable, Unit]:
    """Questions, broken if any shot is relevant; keyed with their shots, so that questions asked a
    different number of times in the two runs do not pair."""
    shots: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        shots[(r["subset"], str(r["id"]))].append(r)
    return {
        (*question, frozenset(r.get("shot", 0) for r in group)): (
            any(r["label"] == "relevant" for r in group),
            frozenset().union(*(_links(r) for r in group)),
        )
        for question, group in shots.items()
    }


METRICS: dict[str, tuple[str, Callable[[Sequence[dict]], dict[Hashable, Unit]]]] = {
    "ASR": ("answers", asr_units),
    "IR": ("answers", ir_units),
    "RR": ("answers", rr_units),
    "kshot_ASR": ("questions", kshot_asr_units),
    "helpfulness": ("answers", helpfulness_units),
    "lenient_ASR": ("answers", lenient_asr_units),
}


# The statistics.


def clusters_of(links: Sequence[frozenset], ignore: frozenset = frozenset()) -> np.ndarray:
    """A cluster index per unit: connected components of units sharing any link not in ``ignore``."""
    index: dict[Hashable, int] = {}
    rows, cols = [], []
    for unit, unit_links in enumerate(links):
        for link in unit_links - ignore:
            rows.append(unit)
            cols.append(index.setdefault(link, len(index)))
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(links), len(index) or 1))
    unit_graph = (graph @ graph.T).tocsr()  # units sharing a link are adjacent
    return connected_components(unit_graph, directed=False)[1]


def _zero_variance_ci(mean: float, spread: float, groups: int) -> tuple[float, float]:
    upper_share = proportion_confint(0, groups, method="beta")[1]  # Clopper-Pearson, 0 of G differing
    return max(-1.0, mean - spread * upper_share), min(1.0, mean + spread * upper_share)


def mean_ci(values: np.ndarray, groups: np.ndarray | None) -> tuple[float, float]:
    """95% interval of a mean: OLS on a constant, cluster-robust when ``groups`` is given."""
    n_groups = len(np.unique(groups)) if groups is not None else len(values)
    if n_groups < 2 or np.ptp(values) == 0:
        return _zero_variance_ci(float(values.mean()), 1 + float(np.abs(values).max()), n_groups)
    robust = (
        {"cov_type": "cluster", "cov_kwds": {"groups": groups}, "use_t": True} if groups is not None else {}
    )
    fit = sm.OLS(values, np.ones(len(values))).fit(**robust)
    if not fit.bse[0] > 0:  # every cluster sits at the mean
        return _zero_variance_ci(float(values.mean()), 1 + float(np.abs(values).max()), n_groups)
    low, high = fit.conf_int(alpha=0.05)[0]
    return float(low), float(high)


def rate_ci(outcomes: np.ndarray, groups: np.ndarray, clustered: bool) -> tuple[float, float]:
    """Wilson for independent units; cluster-robust for clustered ones (Wilson over clusters if all equal)."""
    if not clustered:
        low, high = proportion_confint(int(outcomes.sum()), len(outcomes), alpha=0.05, method="wilson")
        return float(low), float(high)
    if np.ptp(outcomes) == 0:
        n_groups = len(np.unique(groups))
        low, high = proportion_confint(int(outcomes[0]) * n_groups, n_groups, method="wilson")
        return float(low), float(high)
    low, high = mean_ci(outcomes.astype(float), groups)
    return max(0.0, low), min(1.0, high)


def cluster_sign_flip_p(differences: np.ndarray, groups: np.ndarray, seed: int = 0) -> float:
    """Two-sided p of the paired cluster randomisation test: under H0 each cluster's summed difference
    is as likely negated (the two models swapped within the cluster). The same test and p-value as
    ``scipy.stats.permutation_test`` (tested), written out because scipy's spends ~3 s on one
    what-3-shot comparison and an audit makes dozens."""
    totals = np.bincount(groups, weights=differences)
    totals = totals[totals != 0]  # a cluster with no difference is the same flipped: leave it out
    if totals.size < 2:  # one differing cluster: both of its signs are as extreme as the one seen
        return 1.0
    k = totals.size
    if k <= 16:  # every one of the 2**k sign patterns: exact
        patterns, adjustment = (np.arange(2**k)[:, None] >> np.arange(k)) & 1, 0
    else:  # 65,536 random patterns from a fixed seed (reports are reproducible); the observed one counts
        patterns, adjustment = np.random.default_rng(seed).integers(0, 2, size=(2**16, k), dtype=np.int8), 1
    flipped = np.concatenate(
        [(1 - 2 * chunk.astype(float)) @ totals for chunk in np.array_split(patterns, 8)]
    )
    observed = totals.sum()
    tolerance = abs(observed) * 1e-12
    greater = ((flipped >= observed - tolerance).sum() + adjustment) / (len(flipped) + adjustment)
    less = ((flipped <= observed + tolerance).sum() + adjustment) / (len(flipped) + adjustment)
    return float(min(1.0, 2 * min(greater, less)))


def compare_units(
    units_a: dict[Hashable, Unit], units_b: dict[Hashable, Unit], case: str, metric: str, unit: str
) -> PairedComparison:
    keys = [k for k in units_a if k in units_b]
    if not keys:
        raise NoPairsError(f"{case}/{metric}: no {unit} pair ({len(units_a)} in A, {len(units_b)} in B)")
    a = np.array([units_a[k][0] for k in keys], dtype=float)
    b = np.array([units_b[k][0] for k in keys], dtype=float)
    links = [units_a[k][1] | units_b[k][1] for k in keys]
    images = {link for unit_links in links for link in unit_links if link[0] == "image"}
    shared = images if len(images) == 1 else {i for i in images if all(i in u for u in links)}  # see Clusters
    groups = clusters_of(links, ignore=frozenset(shared))
    n_clusters = int(groups.max()) + 1
    clustered = n_clusters < len(keys)
    diff = b - a
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    naive = mean_ci(diff, None)
    if clustered:
        ci, test, p = mean_ci(diff, groups), "cluster sign-flip", cluster_sign_flip_p(diff, groups)
    else:
        table = [[int(((a == 1) & (b == 1)).sum()), a_only], [b_only, int(((a == 0) & (b == 0)).sum())]]
        ci, test, p = naive, "exact McNemar", float(mcnemar(table, exact=True).pvalue)
    rates = (float(a.mean()), rate_ci(a, groups, clustered), float(b.mean()), rate_ci(b, groups, clustered))
    return PairedComparison(
        *(case, metric, unit, len(keys), n_clusters, len(units_a) - len(keys), len(units_b) - len(keys)),
        *(*rates, float(diff.mean()), ci, naive, a_only, b_only, test, p),
    )


def compare_case(
    records_a: Sequence[dict],
    records_b: Sequence[dict],
    case: str = "",
    sources: tuple[str, str] = ("A", "B"),
) -> tuple[list[PairedComparison], list[str]]:
    """Every metric the two runs of ``case`` share, compared on paired units; and notes on skipped metrics."""
    check_records(records_a, sources[0])
    check_records(records_b, sources[1])
    multi_shot = any(r.get("shot", 0) > 0 for r in [*records_a, *records_b])
    results, notes = [], []
    for metric, (unit, units_of) in METRICS.items():
        if metric == "kshot_ASR" and not multi_shot:
            continue  # one shot per question: the same as ASR
        units_a, units_b = units_of(records_a), units_of(records_b)
        if not units_a and not units_b:
            continue
        if not units_a or not units_b:
            notes.append(f"{case}/{metric}: skipped, only {sources[0] if units_a else sources[1]} has it")
            continue
        try:
            results.append(compare_units(units_a, units_b, case, metric, unit))
        except NoPairsError as err:
            raise NoPairsError(f"{err}: {sources[0]} and {sources[1]} share no {unit}") from None
    return results, notes


def holm_adjust(comparisons: Sequence[PairedComparison], alpha: float = 0.05) -> None:
    """Holm-adjusted p-values and significance at ``alpha``, over all ``comparisons`` together (in place)."""
    reject, adjusted, _, _ = multipletests([c.p_value for c in comparisons], alpha=alpha, method="holm")
    for comparison, significant, p in zip(comparisons, reject, adjusted, strict=True):
        comparison.p_holm, comparison.significant = float(p), bool(significant)
