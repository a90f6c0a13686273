"""Paired comparisons of two runs on planted answers whose statistics are known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from mirage.evaluation.statistics import clusters_of, compare_case, holm_adjust, read_judged


def record(qid: int, label: str, subset: str = "unsafes", shot: int = 0, image: str | None = None, **extra):
    image = image or f"images/{qid}.png"
    return {"id": f"q{qid}", "subset": subset, "shot": shot, "label": label, "image": image, **extra}


def by_metric(results):
    return {r.metric: r for r in results}


def test_twelve_discordant_one_way_gives_exact_mcnemar():
    # 40 answers: 12 relevant under A and refused under B, the other 28 refused by both.
    a = [record(i, "relevant" if i < 12 else "refusal") for i in range(40)]
    b = [record(i, "refusal") for i in range(40)]
    results, notes = compare_case(a, b, "plain_asr")
    asr = by_metric(results)["ASR"]
    assert notes == [] and set(by_metric(results)) == {"ASR", "IR", "RR"}  # one shot: no K-shot ASR
    assert (asr.pairs, asr.clusters, asr.only_a, asr.only_b) == (40, 40, 0, 0) and not asr.clustered
    assert asr.test == "exact McNemar" and asr.p_value == pytest.approx(2 * 0.5**12, rel=1e-12)
    assert (asr.rate_a, asr.rate_b, asr.difference) == (0.3, 0.0, pytest.approx(-0.3))
    assert (asr.a_only_success, asr.b_only_success) == (12, 0)
    # Wald interval of the mean paired difference: -0.3 -/+ t(39) * sd / sqrt(40).
    diff = np.array([-1.0] * 12 + [0.0] * 28)
    half = stats.t.ppf(0.975, 39) * diff.std(ddof=1) / math.sqrt(40)
    assert asr.difference_ci == pytest.approx((-0.3 - half, -0.3 + half))
    # Wilson 95% interval of 12/40.
    z, p, n = stats.norm.ppf(0.975), 0.3, 40
    centre, spread = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert asr.rate_a_ci == pytest.approx(
        ((centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n))
    )
    assert by_metric(results)["RR"].p_value == pytest.approx(2 * 0.5**12)
    assert by_metric(results)["IR"].p_value == 1.0


def test_identical_runs_differ_by_nothing():
    a = [record(i, ("relevant", "irrelevant", "refusal")[i % 3]) for i in range(30)]
    results, _ = compare_case(a, [dict(r) for r in a], "plain_asr")
    for result in results:
        assert result.p_value == 1.0 and result.difference == 0.0 and result.rate_a == result.rate_b
        # Not a point: the 95% Clopper-Pearson bound on the share of answers that could differ, none of 30.
        upper = 1 - 0.025 ** (1 / 30)
        assert result.difference_ci == pytest.approx((-upper, upper))


def kshot_runs(questions: int = 20, broken: int = 10, shots: int = 3):
    """A breaks the first ``broken`` questions on every shot, B none: shots are perfectly correlated."""
    a = [
        record(i, "relevant" if i < broken else "refusal", shot=s)
        for i in range(questions)
        for s in range(shots)
    ]
    b = [record(i, "refusal", shot=s) for i in range(questions) for s in range(shots)]
    return a, b


def test_kshot_answers_are_clustered_by_question_and_the_interval_widens():
    a, b = kshot_runs()
    results = by_metric(compare_case(a, b, "what3_asr")[0])
    asr, kshot = results["ASR"], results["kshot_ASR"]
    assert (asr.unit, asr.pairs, asr.clusters, asr.test) == ("answers", 60, 20, "cluster sign-flip")
    assert asr.clustered and asr.difference == pytest.approx(-0.5)
    naive_width = asr.naive_difference_ci[1] - asr.naive_difference_ci[0]
    robust_width = asr.difference_ci[1] - asr.difference_ci[0]
    assert robust_width > 1.2 * naive_width
    # CR1 interval: residual totals per cluster (-3 or 0, minus 3 x the mean), G = 20, N = 60, t(19).
    totals = np.array([-3.0] * 10 + [0.0] * 10) - (-0.5) * 3
    variance = (20 / 19) * (totals**2).sum() / 60**2  # G / (G - 1); (N - 1) / (N - k) = 1 for k = 1
    half = stats.t.ppf(0.975, 19) * math.sqrt(variance)
    assert asr.difference_ci == pytest.approx((-0.5 - half, -0.5 + half))
    # Ten clusters differ, all one way: the exact sign-flip p is 2 * 0.5**10, as McNemar on clusters.
    assert asr.p_value == pytest.approx(2 * 0.5**10)
    # K-shot ASR is over questions, one per cluster: exact McNemar.
    assert (kshot.unit, kshot.pairs, kshot.clusters, kshot.test) == ("questions", 20, 20, "exact McNemar")
    assert (kshot.rate_a, kshot.rate_b, kshot.p_value) == (0.5, 0.0, pytest.approx(2 * 0.5**10))


def test_questions_sharing_an_image_are_clustered_but_a_shared_blank_image_links_nothing():
    # VLGuard: a safe_safes and a safe_unsafes question on one image, same id.
    a = [record(i, "relevant", subset=s) for i in range(10) for s in ("safe_safes", "safe_unsafes")]
    b = [
        record(i, "refusal" if i < 5 else "relevant", subset=s)
        for i in range(10)
        for s in ("safe_safes", "safe_unsafes")
    ]
    results = by_metric(compare_case(a, b, "mixed")[0])
    assert (results["ASR"].pairs, results["ASR"].clusters) == (20, 10)
    assert (results["helpfulness"].pairs, results["helpfulness"].clusters) == (10, 10)  # safe_safes only
    assert results["helpfulness"].test == "exact McNemar" and results["helpfulness"].difference == -0.5
    # Different ids on one blank image (attack=blank_image): not one cluster.
    blank = [record(i, "relevant", image="blank.png") for i in range(6)]
    assert by_metric(compare_case(blank, blank)[0])["ASR"].clusters == 6
    # Each question's own image against one universal image (visual PGD): still one unit per question,
    # so 0 -> 12 of 30 answers relevant is a McNemar test, not one cluster with p = 1.
    own = [record(i, "refusal") for i in range(30)]
    universal = [record(i, "relevant" if i < 12 else "refusal", image="adversarial.png") for i in range(30)]
    asr = by_metric(compare_case(own, universal)[0])["ASR"]
    assert (asr.clusters, asr.test) == (30, "exact McNemar")
    assert asr.p_value == pytest.approx(2 * 0.5**12)
    assert list(clusters_of([frozenset({"x"}), frozenset({"y"}), frozenset({"x", "z"})])) == [0, 1, 0]


def test_unpaired_units_are_counted_and_no_pair_is_an_error():
    a = [record(i, "refusal") for i in range(10)]
    b = [record(i, "refusal") for i in range(3, 15)]
    asr = by_metric(compare_case(a, b)[0])["ASR"]
    assert (asr.pairs, asr.only_a, asr.only_b) == (7, 3, 5)
    with pytest.raises(ValueError, match=r"no answers pair.*run_a\.jsonl and run_b\.jsonl share no answers"):
        compare_case(a, [record(i, "refusal") for i in range(20, 25)], "x", ("run_a.jsonl", "run_b.jsonl"))
    # A question with a different number of shots in the two runs does not pair for K-shot ASR.
    a3, b3 = kshot_runs(questions=4, broken=2)
    kshot = by_metric(compare_case(a3, [r for r in b3 if not (r["id"] == "q0" and r["shot"] == 2)])[0])
    assert (kshot["kshot_ASR"].pairs, kshot["kshot_ASR"].only_a, kshot["kshot_ASR"].only_b) == (3, 1, 1)


def test_lenient_asr_from_oracle_verdicts_and_skipped_when_one_run_lacks_them():
    oracle = lambda leak: {"oracle": {"decision": "irrelevant", "lenient_success": leak}}  # noqa: E731
    a = [record(i, "irrelevant", verdicts=oracle(i < 8)) for i in range(20)]
    b = [record(i, "irrelevant", verdicts=oracle(False)) for i in range(20)]
    lenient = by_metric(compare_case(a, b)[0])["lenient_ASR"]
    assert (lenient.rate_a, lenient.rate_b, lenient.p_value) == (0.4, 0.0, pytest.approx(2 * 0.5**8))
    no_oracle = [record(i, "irrelevant") for i in range(20)]
    results, notes = compare_case(a, no_oracle, "plain_asr", ("A.jsonl", "B.jsonl"))
    assert "lenient_ASR" not in by_metric(results) and notes == [
        "plain_asr/lenient_ASR: skipped, only A.jsonl has it"
    ]


def test_holm_over_all_comparisons():
    a = [record(i, "relevant" if i < 12 else "refusal") for i in range(40)]
    results, _ = compare_case(a, [record(i, "refusal") for i in range(40)])
    holm_adjust(results)
    p = 2 * 0.5**12
    # ASR and RR share the smallest p (x3, x2, step-down keeps the maximum); IR's p is 1.
    assert [r.p_holm for r in results] == pytest.approx([3 * p, 1.0, 3 * p])
    assert [r.significant for r in results] == [True, False, True]


def test_bad_records_name_the_file_the_record_and_the_field(tmp_path):
    path = tmp_path / "judged.jsonl"
    good = record(1, "refusal")
    for bad, message in (
        ({**good, "label": "maybe"}, r"record 2 \(id q1\): field 'label' is 'maybe'"),
        ({k: v for k, v in good.items() if k != "subset"}, r"record 2 \(id q1\): field 'subset' is missing"),
        ({**good, "shot": "0"}, r"record 2 \(id q1\): field 'shot' is '0'"),
        ({k: v for k, v in good.items() if k != "id"}, r"record 2: field 'id' is missing"),
        (good, r"record 2 \(id q1\): answer \(subset, id, shot\) = \('unsafes', 'q1', 0\) repeats record 1"),
    ):
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=f"{path.name}: {message}"):
            read_judged(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"judged\.jsonl: record 2: not JSON"):
        read_judged(path)
    path.write_text(json.dumps(good) + "\n")
    assert read_judged(path) == [good]


def test_one_differing_cluster_gives_p_one_not_an_error():
    """A K-shot comparison where a single question differs: the sign-flip test has nothing to flip against."""
    import numpy as np

    from mirage.evaluation.statistics import cluster_sign_flip_p

    groups = np.array([0, 0, 0, 1, 1, 1])
    assert cluster_sign_flip_p(np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), groups) == 1.0
    assert cluster_sign_flip_p(np.zeros(6), groups) == 1.0


@pytest.mark.parametrize("clusters", [3, 9, 16, 17, 60, 300])
def test_cluster_sign_flip_p_is_scipys_permutation_test(clusters):
    """The written-out test agrees with scipy.stats.permutation_test: to the bit when exact (at most 16
    differing clusters), within the Monte Carlo error of 65,536 flips otherwise."""
    from scipy import stats

    from mirage.evaluation.statistics import cluster_sign_flip_p

    rng = np.random.default_rng(clusters)
    groups = np.repeat(np.arange(clusters), 3)
    differences = rng.choice([-1.0, 0.0, 1.0], p=[0.25, 0.4, 0.35], size=groups.size)
    totals = np.bincount(groups, weights=differences)
    totals = totals[totals != 0]
    scipy_p = stats.permutation_test(
        (totals,),
        lambda x, axis: np.sum(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=2**16,
        rng=0,
    ).pvalue
    mine = cluster_sign_flip_p(differences, groups)
    if totals.size <= 16:
        assert mine == pytest.approx(min(1.0, scipy_p), rel=1e-12)
    else:
        assert mine == pytest.approx(min(1.0, scipy_p), abs=4 * np.sqrt(0.25 / 2**16) * 2)
