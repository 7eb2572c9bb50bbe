"""rule="adaptive": exact at its own nodes, within tol of a high-order reference, diagnostics cached."""

import math

import numpy as np
import pytest
import torch

import kqlib
from kqlib.attribution import (AttributionConfig, attribute, attribute_reference, attribute_with_diagnostics,
                               panel_nodes)
from kqlib.attribution.quadrature import kronrod
from kqlib.errors import ParameterError
from kqlib.runs.cache import AttributionCache
from tiny import FAMILY_MODEL_TYPES, tiny_lm

PROMPT, ANSWER = "the capital of france is", "paris"


def _rel_error(scores, reference):
    """The error measure of the adaptive rule's tol: max abs error / max |score| of the reference."""
    return float((scores.double() - reference.double()).abs().max() / reference.double().abs().max())


@pytest.mark.parametrize("n", [2, 3, 7])
def test_kronrod_pair_is_exact_to_its_degree_and_nests_gauss(n):
    x, wk, wg = kronrod(n)
    top = 3 * n + 1 + (n % 2)
    for d in range(top + 1):
        assert abs(float(np.sum(wk * x ** d)) - 1 / (d + 1)) < 1e-13
    for d in range(2 * n):
        assert abs(float(np.sum(wg * x ** d)) - 1 / (d + 1)) < 1e-13
    assert np.count_nonzero(wg) == n


@pytest.mark.parametrize("model_type", FAMILY_MODEL_TYPES)
@pytest.mark.parametrize("method", ["ig", "sig", "amig"])
def test_engine_at_the_adaptive_nodes_equals_the_reference_float64(model_type, method):
    lm = tiny_lm(model_type, dtype=torch.float64)
    r = attribute_with_diagnostics(lm, PROMPT, ANSWER, method=method, rule="adaptive", tol=1e-4)
    d = r.diagnostics
    assert len(d.panels) == lm.n_layers and all(d.panels)
    nodes = [panel_nodes(p) for p in d.panels]
    assert [len(a) for a, _ in nodes] <= d.points  # final nodes are a subset of what was evaluated
    ref = attribute_reference(lm, PROMPT, ANSWER, method=method, nodes=nodes)
    # Gemma2/3's RMSNorm computes in float32 even in a float64 model; their log(alpha) nodes reach alpha ~ 1e-10,
    # where the integrand is largest: there the same computation agrees to float32 rounding
    bound = 1e-6 * float(ref.abs().max()) if lm.normalized_outputs and method != "amig" else 1e-9
    assert float((ref - r.scores).abs().max()) <= bound


def test_adaptive_refines_only_where_needed_and_reaches_tol_against_gauss_128():
    lm = tiny_lm("llama", dtype=torch.float64, seed=3)
    ref = attribute(lm, PROMPT, ANSWER, rule="gauss", steps=128)
    for tol in (1e-2, 1e-5):
        d = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="adaptive", tol=tol)
        assert d.diagnostics.converged and d.diagnostics.error_estimate <= tol
        assert _rel_error(d.scores, ref) <= tol
    loose = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="adaptive", tol=1e-2).diagnostics
    tight = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="adaptive", tol=1e-8).diagnostics
    assert tight.total_points > loose.total_points  # a tighter tol buys more points
    # completeness: the layer sums equal p_l(1) - p_l(0) up to the quadrature error (float32 base probability)
    assert max(tight.completeness_gap) < 1e-6


def test_fixed_rules_carry_diagnostics_too_and_the_gap_shows_a_coarse_rule():
    lm = tiny_lm("llama", dtype=torch.float64, seed=3)
    coarse = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="riemann", steps=2).diagnostics
    fine = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="gauss", steps=32).diagnostics
    assert coarse.points == [2] * lm.n_layers and coarse.error_estimate is None
    assert max(coarse.completeness_gap) > 100 * max(fine.completeness_gap)


def test_bad_adaptive_arguments_are_refused_with_a_message():
    lm = tiny_lm("llama")
    for kw, words in [(dict(rule="adaptive", steps=20), "leave steps unset"),
                      (dict(rule="adaptive", tol=0), "tol must be"), (dict(rule="adaptive", tol=-1e-3), "tol must be"),
                      (dict(rule="adaptive", tol=math.nan), "tol must be"), (dict(rule="adaptive", tol=math.inf), "tol"),
                      (dict(rule="adaptive", tol="0.01"), "tol must be"), (dict(rule="riemann", tol=1e-2), "applies to rule=.adaptive. only"),
                      (dict(rule="gauss", steps=8, tol=1e-2), "applies to rule=.adaptive. only")]:
        with pytest.raises(ParameterError, match=words):
            attribute(lm, PROMPT, ANSWER, **kw)
        with pytest.raises(ParameterError, match=words):
            kqlib.attribute_many(lm, [(PROMPT, ANSWER)], progress=False, use_cache=False, **kw)


def test_tol_is_in_the_key_and_fixed_rule_keys_are_unchanged():
    k = lambda **kw: AttributionConfig(**kw).key("fp", PROMPT, 5)  # noqa: E731
    assert k(rule="adaptive") == k(rule="adaptive", tol=1e-2)
    assert k(rule="adaptive", tol=1e-2) != k(rule="adaptive", tol=1e-3)
    assert k(rule="adaptive") != k(rule="gauss", steps=20)
    assert k() == k(steps=20) == k(rule="riemann", steps=20)
    import hashlib
    import json

    from kqlib.attribution.config import CACHE_VERSION
    v2 = {"method": "ig", "steps": 20, "rule": "riemann", "site": "post", "model": "fp", "prompt": PROMPT,
          "target": 5, "baseline": None, "cache_version": CACHE_VERSION}  # the fields before tol existed
    assert k() == hashlib.sha256(json.dumps(v2, sort_keys=True).encode()).hexdigest()
    from kqlib.attribution import config as C

    before = k(rule="adaptive")
    C.ADAPTIVE_VERSION += 1  # a new adaptive algorithm: its entries are not reused; fixed rules keep theirs
    try:
        assert k(rule="adaptive") != before and k() == hashlib.sha256(json.dumps(v2, sort_keys=True).encode()).hexdigest()
    finally:
        C.ADAPTIVE_VERSION -= 1


def test_diagnostics_are_cached_with_the_scores_and_read_back(tmp_path):
    lm = tiny_lm("llama", dtype=torch.float64)
    queries = [(PROMPT, ANSWER), ("the capital of germany is", "berlin")]
    scores, diags = kqlib.attribute_many(lm, queries, rule="adaptive", tol=1e-3, cache=tmp_path, progress=False,
                                         diagnostics=True)
    assert all(d is not None and d.converged and d.tol == 1e-3 for d in diags)
    again, back = kqlib.attribute_many(lm, queries, rule="adaptive", tol=1e-3, cache=tmp_path, progress=False,
                                       diagnostics=True)
    assert torch.equal(scores, again) and back == diags
    store = AttributionCache(tmp_path)
    assert len(store) == 2
    # a tampered diagnostics record is refused (and recomputed), like tampered scores
    key = store.keys()[0]
    entry = torch.load(store.path(key), weights_only=True)
    entry["diagnostics"] = entry["diagnostics"].replace('"converged": true', '"converged": false')
    torch.save(entry, store.path(key))
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.get_entry(key) is None
    # fixed rules carry points and gaps; entries written before diagnostics existed read as None
    _, fixed = kqlib.attribute_many(lm, queries[:1], steps=3, cache=tmp_path, progress=False, diagnostics=True)
    assert fixed[0].points == [3] * lm.n_layers and fixed[0].error_estimate is None
    key3 = AttributionConfig(steps=5).key(lm.fingerprint, PROMPT, lm.answer_token_ids(PROMPT, ANSWER)[0])
    store.put(key3, scores[0])
    assert store.get_entry(key3)[1] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_adaptive_is_within_tol_of_gauss_128_on_real_queries(name):
    lm = kqlib.load(name)
    for prompt, answer in [("The capital of France is", " Paris"), ("Toyota Corolla is produced by", " Toyota")]:
        ref = attribute(lm, prompt, answer, rule=kqlib.attribution.reference_rule(lm), steps=128)
        r = attribute_with_diagnostics(lm, prompt, answer, rule="adaptive", tol=1e-2)
        assert r.diagnostics.converged
        assert _rel_error(r.scores, ref) <= 1e-2, (prompt, _rel_error(r.scores, ref))


def test_refinement_ends_on_a_noisy_bf16_model_and_says_so():
    from kqlib.attribution import adaptive

    lm = tiny_lm("llama", dtype=torch.bfloat16, seed=3)
    d = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="adaptive", tol=1e-6).diagnostics
    assert max(d.points) <= adaptive.MAX_POINTS_PER_LAYER
    assert d.converged is False and d.error_estimate > 1e-6


def test_pieces_split_more_when_the_error_is_far_above_its_share():
    from kqlib.attribution.adaptive import SPLIT_MAX, _pieces

    assert _pieces(1.5, 1.0) == 2
    assert _pieces(1e6, 1.0) == SPLIT_MAX
    assert _pieces(1e6, 2 ** -9) == 2  # never narrower than the narrowest panel (MIN_MEASURE = 2^-10)


@pytest.mark.parametrize("model_type", ["gemma3_text", "mistral", "gpt_neo", "gpt2", "llama"])
def test_chunked_prefix_pass_is_the_same_computation(model_type):
    from kqlib.attribution.engine import NeuronPath, base_pass, integrate
    from kqlib.attribution.quadrature import path_nodes

    lm = tiny_lm(model_type, dtype=torch.float64)
    prompt = "the capital of france is paris and the capital of germany is berlin and the capital of italy is"
    ids = lm.encode(prompt)
    t = lm.answer_token_ids(prompt, "rome")[0]
    out = []
    for chunk in (2, 3, 1000):  # past the sliding window (4) and not
        path = NeuronPath(lm, "post")
        with path.recording():
            base = base_pass(lm, ids, t, prefill_chunk=chunk)
        out.append((base.prob, integrate(lm, base, path, *path_nodes(3, "gauss"), t)))
    ref = out[-1][1]
    for prob, g in out[:-1]:  # rotary tables are float32 in transformers: ~1e-7 relative, not float64's 1e-15
        assert abs(prob - out[-1][0]) < 1e-6 and float((g - ref).abs().max() / ref.abs().max()) < 1e-5


def test_only_sandwich_normed_families_are_scale_invariant():
    flags = {mt: tiny_lm(mt).normalized_outputs for mt in ("gemma", "gemma2", "gemma3_text", "llama", "gpt2")}
    assert flags == {"gemma": False, "gemma2": True, "gemma3_text": True, "llama": False, "gpt2": False}
    lm = tiny_lm("gemma3_text")
    assert kqlib.attribution.reference_rule(lm) == "gauss-log"
    assert kqlib.attribution.reference_rule(lm, "amig") == "gauss"  # a path from a baseline: no 1/alpha tail
    assert kqlib.attribution.reference_rule(tiny_lm("llama")) == "gauss"


def test_gauss_log_integrates_one_over_alpha_exactly():
    from kqlib.attribution.quadrature import LOG_START, path_nodes

    alphas, weights = path_nodes(8, "gauss-log")
    assert float(alphas.min()) > LOG_START and float(alphas.max()) < 1
    assert float(weights.sum()) == pytest.approx(1 - LOG_START, abs=1e-3)  # a constant: exp(s) in s, near
    assert float(path_nodes(64, "gauss-log")[1].sum()) == pytest.approx(1 - LOG_START, abs=1e-9)  # and converging
    assert float((weights / alphas).sum()) == pytest.approx(math.log(1 / LOG_START), rel=1e-12)  # 1/alpha: exact


@pytest.mark.parametrize("model_type", ["gemma3_text", "gemma2"])
def test_scale_invariant_paths_converge_in_log_alpha_where_rules_in_alpha_do_not(model_type):
    """Sandwich norms make each neuron's integrand ~c/alpha down to a tiny alpha: the paper's rule is off by
    tens of times the largest score, Gauss-64 in alpha by more than tol; the adaptive rule's log panels reach
    tol against a Gauss-256 reference in log(alpha) (itself stable to 1e-6 against Gauss-128 there)."""
    lm = tiny_lm(model_type, dtype=torch.float64, seed=3)
    ref = attribute(lm, PROMPT, ANSWER, rule="gauss-log", steps=256)
    assert _rel_error(attribute(lm, PROMPT, ANSWER, rule="gauss-log", steps=128), ref) < 1e-6
    assert _rel_error(attribute(lm, PROMPT, ANSWER, rule="riemann", steps=20), ref) > 1.0
    assert _rel_error(attribute(lm, PROMPT, ANSWER, rule="gauss", steps=64), ref) > 1e-2
    for tol in (1e-2, 1e-4):
        r = attribute_with_diagnostics(lm, PROMPT, ANSWER, rule="adaptive", tol=tol)
        assert r.diagnostics.converged and _rel_error(r.scores, ref) <= tol
        assert all(len(p) == 3 and p[2] == "log" for layer in r.diagnostics.panels for p in layer)
    # the engine at those log nodes is the plain reference at the same nodes
    nodes = [panel_nodes(p) for p in r.diagnostics.panels]
    plain = attribute_reference(lm, PROMPT, ANSWER, nodes=nodes)
    assert float((plain - r.scores).abs().max()) <= 1e-6 * float(plain.abs().max())  # float32 RMSNorm (see above)


def test_knowledge_synapses_of_a_scale_invariant_model_converge_too():
    lm = tiny_lm("gemma3_text", dtype=torch.float64, seed=3)
    ref = kqlib.attribution.attribute_attention(lm, PROMPT, ANSWER, rule="gauss-log", steps=256)
    got = kqlib.attribution.attribute_attention(lm, PROMPT, ANSWER, rule="adaptive", tol=1e-3)
    assert _rel_error(got, ref) <= 1e-3
