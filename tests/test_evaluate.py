"""Retrieval and University-1652 metrics: hand-computed cases and parity with a plain full-matrix implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossview.evaluate import evaluate_retrieval, evaluate_university, positive_ranks, recall_curve, top_k


def _from_similarity(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors whose dot products are exactly ``sim`` (Q × R): queries = identity, references = simᵀ."""
    return np.eye(sim.shape[0]), np.ascontiguousarray(sim.T)


# ---------------------------------------------------------------- reference implementation (full matrix)
def full_matrix_retrieval(q, r, pos, semis=None, ks=(1, 5, 10)):
    sim = np.asarray(q, np.float64) @ np.asarray(r, np.float64).T
    n_q, n_r = sim.shape
    hits = {k: 0 for k in ks}
    top1pct = hit_rate = 0
    for i in range(n_q):
        gt = sim[i, pos[i]]
        higher = sim[i] > gt
        rank = int(higher.sum())
        for k in ks:
            hits[k] += rank < k
        top1pct += rank < n_r // 100
        if semis is not None:
            higher[list(semis[i])] = False
            hit_rate += not higher.any()
    out = {f"R@{k}": 100.0 * hits[k] / n_q for k in ks}
    out["R@1%"] = 100.0 * top1pct / n_q
    if semis is not None:
        out["hit_rate"] = 100.0 * hit_rate / n_q
    return out


def full_matrix_university(q, ql, g, gl, protocol, ks=(1, 5, 10)):
    sim = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    junk = gl == -1
    if protocol == "sample4geo":
        junk = junk | ~np.isin(gl, np.unique(ql))
    cmc = np.zeros(len(gl))
    ap_sum = 0.0
    for i in range(len(ql)):
        order = np.argsort(-sim[i], kind="stable")
        order = order[~junk[order]]
        good_rows = np.flatnonzero(gl[order] == ql[i])
        if good_rows.size == 0:
            continue
        cmc[good_rows[0]:] += 1
        n = good_rows.size
        for j, row in enumerate(good_rows):
            old = j / row if row else 1.0
            ap_sum += ((j + 1) / (row + 1) + old) / 2 / n
    out = {f"R@{k}": 100.0 * cmc[k - 1] / len(ql) for k in ks}
    out["R@1%"] = 100.0 * cmc[round(len(gl) * 0.01)] / len(ql)
    out["AP"] = 100.0 * ap_sum / len(ql)
    return out


# ---------------------------------------------------------------- hand-computed cases
def test_ties_count_only_strictly_greater():
    # query 0: positive 0 (0.5) ties with ref 1, ref 2 is higher -> rank 1
    # query 1: positive 3 (0.2) ties with nothing, all three others higher -> rank 3
    # query 2: positive 1 (0.7) ties with every other reference -> rank 0
    sim = np.array([[0.5, 0.5, 0.9, 0.2], [0.4, 0.6, 0.3, 0.2], [0.7, 0.7, 0.7, 0.7]])
    q, r = _from_similarity(sim)
    ranks, _ = positive_ranks(q, r, [0, 3, 1])
    assert ranks.tolist() == [1, 3, 0]
    m = evaluate_retrieval(q, r, [0, 3, 1], ks=(1, 2, 4))
    assert m["R@1"] == pytest.approx(100 / 3) and m["R@2"] == pytest.approx(200 / 3) and m["R@4"] == 100.0
    assert m["queries"] == 3 and m["references"] == 4 and m["chance_R@1"] == 25.0


def test_semi_positives_give_hit_rate():
    sim = np.array([
        [0.5, 0.9, 0.8, 0.1, 0.0],  # pos 0; above it: 1 (semi), 2 (semi) -> hit, rank 2
        [0.5, 0.9, 0.8, 0.1, 0.0],  # pos 0; above: 1 (semi), 2 (not semi) -> miss
        [0.1, 0.2, 0.3, 0.4, 0.9],  # pos 4 at the top -> hit, rank 0
        [0.3, 0.3, 0.1, 0.3, 0.2],  # pos 4; 0, 1, 3 above, semis 0, 1, 3 and a duplicate, and the positive -> hit
    ])
    q, r = _from_similarity(sim)
    semis = [[1, 2], [1, 3], [0], [0, 1, 3, 3, 4]]
    m = evaluate_retrieval(torch.tensor(q), torch.tensor(r), [0, 0, 4, 4], semi_positives=semis)
    assert m["hit_rate"] == 75.0
    assert m["R@1"] == 25.0 and m["R@5"] == 100.0
    ranks, above = positive_ranks(q, r, [0, 0, 4, 4], semis)
    assert ranks.tolist() == [2, 2, 0, 3] and above.tolist() == [2, 1, 0, 3]
    padded = np.array([[1, 2, -1, -1, -1], [1, 3, -1, -1, -1], [0, -1, -1, -1, -1], [0, 1, 3, 3, 4]])
    assert evaluate_retrieval(q, r, [0, 0, 4, 4], semi_positives=padded) == m  # (Q, M) array, -1 = padding


@pytest.mark.parametrize("n_refs, k", [(250, 2), (199, 1), (99, 0), (8884, 88)])
def test_r_at_one_percent_uses_integer_division(n_refs, k):
    # query i's positive (ref 0) has exactly i references above it
    n_q = 4
    sim = np.zeros((n_q, n_refs))
    sim[:, 0] = 0.5
    for i in range(n_q):
        sim[i, 1:1 + i] = 0.9
    q, r = _from_similarity(sim)
    m = evaluate_retrieval(q, r, [0] * n_q)
    assert m["R@1%_k"] == k
    assert m["R@1%"] == 100.0 * min(k, n_q) / n_q  # ranks 0..3; hit when rank < k


def test_ap_on_known_ranking_and_both_protocols():
    # gallery ranked by score: distractor class 9 (no query has it), good, junk (-1), other query class, good
    g_labels = np.array([9, 1, -1, 2, 1])
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    q, g = _from_similarity(sim)
    q_labels = np.array([1, 2])
    orig = evaluate_university(q[:1], q_labels[:1], g, g_labels, protocol="original")
    # original: ranking after junk removal = [bad, good, bad, good] -> goods at rows 1, 3
    # AP = 1/2 * (0 + 1/2) / 2 + 1/2 * (1/3 + 2/4) / 2 = 1/3
    assert orig["AP"] == pytest.approx(100 / 3)
    assert orig["R@1"] == 0.0 and orig["R@5"] == 100.0 and orig["protocol"] == "original" and orig["junk"] == 1
    # sample4geo with both queries (classes 1, 2): class 9 is junk too -> [good, junk, bad, good] -> rows 0, 2
    # AP = 1/2 * (1 + 1) / 2 + 1/2 * (1/2 + 2/3) / 2 = 19/24 for query 0; query 1's single good (label 2,
    # score 0.4) has ref 4 (0.5) above it: AP = (0 + 1/2) / 2 = 1/4
    s4g = evaluate_university(q, q_labels, g, g_labels, protocol="sample4geo")
    assert s4g["AP"] == pytest.approx(100 * (19 / 24 + 1 / 4) / 2)
    assert s4g["R@1"] == 50.0 and s4g["junk"] == 2 and s4g["protocol"] == "sample4geo"
    with pytest.raises(ValueError, match="protocol"):
        evaluate_university(q, q_labels, g, g_labels, protocol="bogus")


def test_university_recall_top1_index_is_round_of_one_percent():
    # 250 gallery items -> index round(2.5) = 2 (banker's rounding) -> hit when first good place <= 2
    n_g = 250
    labels = np.arange(n_g)
    places = [0, 2, 3]
    sim = np.zeros((3, n_g))
    for i, p in enumerate(places):
        sim[i, 0] = 0.5
        sim[i, 1:1 + p] = 0.9
    q, g = _from_similarity(sim)
    m = evaluate_university(q, [0, 0, 0], g, labels)
    assert m["R@1%_k"] == 3 and m["R@1%"] == pytest.approx(200 / 3)


# ---------------------------------------------------------------- parity with the full-matrix implementation
def _random_unit(rng, n, d, dtype=np.float32):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _noisy_copies(rng, x, sigma, dtype):
    """Unit vectors near the rows of ``x`` (queries that usually, not always, find their positive)."""
    y = np.asarray(x, np.float64) + sigma * rng.standard_normal(x.shape)
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streaming_equals_full_matrix_for_several_blocks(dtype):
    rng = np.random.default_rng(0)
    n_q, n_r, d = 300, 1234, 16  # low dimension: many references above each positive, every metric non-trivial
    r = _random_unit(rng, n_r, d, dtype)
    pos = rng.integers(0, n_r, n_q)
    q = _noisy_copies(rng, r[pos], 0.35, dtype)
    near = np.argsort(-(r[pos].astype(np.float64) @ r.T.astype(np.float64)), axis=1)[:, 1:3]  # like VIGOR
    semis = [[*near[i].tolist(), int(rng.integers(0, n_r))] for i in range(n_q)]
    want = full_matrix_retrieval(q, r, pos, semis, ks=(1, 5, 10, 50))
    assert 0 < want["R@1"] < want["R@50"] < 100 and 0 < want["R@1%"] < 100 and want["hit_rate"] > want["R@1"]
    for block, ref_block in [(1, None), (7, None), (64, 100), (300, 1234), (1000, 333), (50, 1)]:
        got = evaluate_retrieval(q, r, pos, semis, ks=(1, 5, 10, 50), block=block, ref_block=ref_block)
        for key, value in want.items():
            assert got[key] == value, (block, ref_block, key)


def test_float16_storage_is_widened_not_matmul_in_half():
    rng = np.random.default_rng(1)
    q, r = _random_unit(rng, 100, 32, np.float16), _random_unit(rng, 500, 32, np.float16)
    pos = rng.integers(0, 500, 100)
    got = evaluate_retrieval(q, r, pos, block=33)
    want = evaluate_retrieval(q.astype(np.float32), r.astype(np.float32), pos)
    assert got == want


@pytest.mark.parametrize("protocol", ["original", "sample4geo"])
def test_university_equals_full_matrix(protocol):
    rng = np.random.default_rng(2)
    n_cls, d = 40, 8
    gl = np.concatenate([rng.integers(0, n_cls, 400), [-1] * 20])  # drone-like gallery with junk
    ql = rng.integers(0, n_cls - 10, 120)  # 10 classes never queried: distractors
    centres = _random_unit(rng, n_cls + 1, d, np.float64)
    g = _noisy_copies(rng, centres[gl], 0.4, np.float64)
    q = _noisy_copies(rng, centres[ql], 0.4, np.float64)
    want = full_matrix_university(q, ql, g, gl, protocol)
    assert 0 < want["R@1"] < want["R@10"] < 100
    for block in (1, 17, 1000):
        got = evaluate_university(q, ql, g, gl, protocol, block=block)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (block, key)


def test_recall_curve_and_top_k():
    assert recall_curve(np.array([0, 0, 1, 5, 100]), 6).tolist() == [40.0, 60.0, 60.0, 60.0, 60.0, 80.0]
    rng = np.random.default_rng(3)
    q, r = _random_unit(rng, 20, 8), _random_unit(rng, 50, 8)
    scores, rows = top_k(q, r, 5, block=6)
    full = q @ r.T
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], rtol=1e-6)


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="dimension"):
        evaluate_retrieval(np.zeros((2, 3)), np.zeros((4, 5)), [0, 1])
    with pytest.raises(ValueError, match="positives"):
        evaluate_retrieval(np.zeros((2, 3)), np.zeros((4, 3)), [0])
    with pytest.raises(ValueError, match="reference rows"):
        evaluate_retrieval(np.zeros((2, 3)), np.zeros((4, 3)), [0, 4])


def test_report_university_split_gives_both_protocols_labelled():
    from pathlib import Path

    from crossview.data.records import Record, Reference, Split
    from crossview.evaluate.report import evaluate_descriptors, format_table

    rng = np.random.default_rng(4)
    gl = np.array([0, 0, 1, 1, 2, 3, 3, 9, 9])  # class 9: a distractor building
    ql = np.array([0, 1, 2, 3, 0, 1])
    refs = [Reference(i, Path(f"g{i}.png"), view="drone", label=int(c)) for i, c in enumerate(gl)]
    recs = [Record(f"q{i}", Path(f"q{i}.png"), "aerial", tuple(np.flatnonzero(gl == c).tolist()), label=int(c))
            for i, c in enumerate(ql)]
    split = Split("university1652", "test-s2d", recs, refs)
    q, g = torch.tensor(_random_unit(rng, 6, 4, np.float64)), torch.tensor(_random_unit(rng, 9, 4, np.float64))
    m, curve, _ = evaluate_descriptors(split, q, g, protocol="sample4geo")
    assert m["protocol"] == "sample4geo" and set(m["by_protocol"]) == {"original", "sample4geo"}
    for p in ("original", "sample4geo"):
        assert m["by_protocol"][p] == evaluate_university(q, ql, g, gl, p)
    assert m["AP"] == m["by_protocol"]["sample4geo"]["AP"] and curve[0] == m["R@1"]
    table = format_table([(f"u1652 [{p}]", v) for p, v in m["by_protocol"].items()])
    assert "[original]" in table and "[sample4geo]" in table and "AP" in table.splitlines()[0]
