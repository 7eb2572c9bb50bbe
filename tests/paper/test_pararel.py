"""ParaRel loading, query construction, fact selection and the downloader (no network, tiny models)."""

import functools
import http.server
import json
import pathlib
import shutil
import socket
import sys
import threading

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "helpers"))

from tiny import tiny_lm  # noqa: E402

from kqlib.paper import pararel, pararel_files  # noqa: E402
from kqlib.errors import DataError, OfflineError, ParameterError  # noqa: E402
from kqlib.paper.pararel import Fact, Pattern  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pararel"
needs_shared = pytest.mark.skipif(not (SHARED / "patterns").is_dir(), reason=f"ParaRel data not found at {SHARED}")

# spec §8: usable patterns per relation after the authors' filter (35 relations, 213 patterns)
SPEC_USABLE = dict(
    P17=3, P19=7, P20=8, P27=7, P30=4, P36=8, P39=6, P47=5, P101=10, P103=2, P106=7, P108=4, P127=2, P131=3,
    P136=2, P138=15, P159=7, P176=10, P178=12, P264=14, P276=2, P279=4, P361=2, P364=4, P407=4, P413=2, P449=6,
    P463=3, P495=17, P530=4, P740=14, P937=5, P1303=2, P1376=6, P1412=2,
)


# ---------------------------------------------------------------------------------------- fixtures


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def tiny_root(tmp_path):
    """A ParaRel-shaped directory whose words are all in tests/helpers/tiny.py's vocabulary."""
    root = tmp_path / "pararel"
    _write_jsonl(root / "patterns" / "P103.jsonl", [
        {"pattern": "the native language of [X] is [Y] ."},
        {"pattern": "the mother tongue of [X] is [Y]."},
        {"pattern": "[Y] is [X] ' s native language ."},
        {"pattern": "the native language of [X] is [Y]"},  # duplicate once the trailing " ." is stripped
    ])
    _write_jsonl(root / "tuples" / "P103.jsonl", [
        {"sub_label": s, "obj_label": o, "uuid": f"u-{s}"}
        for s, o in [("paris", "french"), ("berlin", "german"), ("rome", "italian"), ("london", "english"),
                     ("madrid", "spanish"), ("france", "french german")]
    ])
    _write_jsonl(root / "patterns" / "P1001.jsonl", [{"pattern": "[X] was born in [Y]."}])
    _write_jsonl(root / "tuples" / "P1001.jsonl", [{"sub_label": "paris", "obj_label": "france", "uuid": "b1"}])
    return root


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


def _controlled_logits(lm, rule):
    """Replace lm.next_token_logits: ``rule(prompt) -> (answer word, rank)``; the answer gets that rank."""
    tok = lm.tokenizer
    vocab = len(tok)

    def fake(prompt):
        word, rank = rule(prompt)
        logits = torch.zeros(vocab)
        logits[torch.arange(vocab)] = -torch.arange(vocab, dtype=torch.float32) * 0.01  # fixed distinct order
        target = tok.convert_tokens_to_ids(word)
        others = [i for i in range(vocab) if i != target][: rank - 1]
        logits[target] = 5.0
        for j, i in enumerate(others):
            logits[i] = 10.0 - j
        return logits

    return fake


# ---------------------------------------------------------------------------------------- parsing & patterns


@needs_shared
def test_parse_shared_relation():
    pats = pararel.load_patterns("P103", SHARED)
    assert len(pats) == 4 and pats[0] == Pattern("P103", "The native language of [X] is [Y].")
    facts = pararel.load_facts("P103", SHARED)
    assert len(facts) == 919
    assert facts[0] == Fact("P103", "Louis Jules Trochu", "French", "40b2ed1c-0961-482e-844e-32596b6117c8")
    assert facts[0].fact_id == facts[0].uuid
    assert pararel.available_relations(SHARED) == list(pararel.RELATIONS)


@pytest.mark.parametrize("template,stem", [
    ("The native language of [X] is [Y].", "The native language of [X] is"),
    ("[X] plays [Y] .", "[X] plays"),
    ("[X] holds the position of [Y],", "[X] holds the position of"),
    ("[X] was born in [Y]", "[X] was born in"),
    ("[Y] is [X]'s native language.", None),
    ("[X] is a [Y]-born person.", None),
    ("[X] is named after [Y], [X]", None),
])
def test_pattern_filter(template, stem):
    p = Pattern("P1", template)
    assert p.stem == stem
    assert p.usable == (stem is not None)
    if stem is None:
        with pytest.raises(DataError):
            p.fill("Foo")


def test_usable_patterns_dedupe_and_order():
    pats = [Pattern("P1", t) for t in ["[X] is in [Y].", "[Y] hosts [X].", "[X] is in [Y] .", "[X] lies in [Y]"]]
    assert [p.template for p in pararel.usable_patterns(pats)] == ["[X] is in [Y].", "[X] lies in [Y]"]


@needs_shared
@pytest.mark.parametrize("relation,expected", [("P39", 6), ("P103", 2), ("P138", 15), ("P495", 17), ("P1412", 2)])
def test_usable_counts_match_spec_examples(relation, expected):
    assert len(pararel.usable_patterns(pararel.load_patterns(relation, SHARED))) == expected


@needs_shared
def test_usable_counts_match_spec_all():
    ours = {r: len(pararel.usable_patterns(pararel.load_patterns(r, SHARED))) for r in pararel.relations(SHARED)}
    assert ours == SPEC_USABLE
    assert len(ours) == 35 and sum(ours.values()) == 213
    dropped = set(pararel.RELATIONS) - set(ours)
    assert dropped == {"P37", "P140", "P190", "P1001"}  # one usable pattern each


@needs_shared
@pytest.mark.parametrize("relation", ["P39", "P103", "P138", "P1412", "P264"])
def test_fill_leaves_clean_prompts(relation):
    patterns = pararel.usable_patterns(pararel.load_patterns(relation, SHARED))
    for fact in pararel.load_facts(relation, SHARED)[:50]:
        queries = pararel.fact_queries(fact, patterns)
        assert [q.pattern_index for q in queries] == list(range(len(patterns)))
        for q in queries:
            assert "[X]" not in q.prompt and "[Y]" not in q.prompt
            assert q.prompt == q.prompt.rstrip(" .,") and q.prompt.strip() == q.prompt
            assert fact.subject in q.prompt and q.fact_id == fact.uuid and q.obj == fact.obj


# ---------------------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic():
    facts = [Fact("P7", f"s{i}", f"o{i}", f"id{i:03d}") for i in range(200)]
    other = [Fact("P8", f"s{i}", f"o{i}", f"id{i:03d}") for i in range(200)]
    a = pararel.sample_facts(facts, 10, seed=3)
    pararel.sample_facts(other, 10, seed=3)  # another relation drawn in between changes nothing
    assert pararel.sample_facts(facts, 10, seed=3) == a
    assert pararel.sample_facts(list(reversed(facts)), 10, seed=3) == a  # input order does not matter
    assert pararel.sample_facts(facts, 10, seed=4) != a
    assert [f.subject for f in pararel.sample_facts(other, 10, seed=3)] != [f.subject for f in a]
    assert pararel.sample_facts(facts, 20, seed=3)[:10] == a  # a prefix of the same shuffle
    assert len(pararel.sample_facts(facts, None, seed=3)) == 200
    with pytest.raises(ParameterError):
        pararel.shuffled_facts(facts + other)


# ---------------------------------------------------------------------------------------- policies & filtering


def test_multi_token_policies(lm, tiny_root):
    first = pararel.build_dataset(lm, "P103", n_per_relation=None, min_correct=0, root=tiny_root, progress=False)
    assert len(first) == 6 and first.params["multi_token"] == "first"
    france = next(e for e in first if e.fact.subject == "france")
    ids = lm.tokenizer.convert_tokens_to_ids(["french", "german"])
    assert all(q.answer_ids == tuple(ids) and q.target_id == ids[0] and q.n_answer_tokens == 2
               for q in france.queries)
    frame = first.to_frame()
    assert set(frame.n_answer_tokens) == {1, 2} and len(frame) == 12

    skip = pararel.build_dataset(lm, "P103", n_per_relation=None, min_correct=0, root=tiny_root,
                                 multi_token="skip", progress=False)
    assert len(skip) == 5 and "france" not in {e.fact.subject for e in skip}
    assert skip.scan["P103"]["dropped_multi_token"] == 1 and skip.params["multi_token"] == "skip"
    with pytest.raises(ParameterError, match="multi_token"):
        pararel.build_dataset(lm, "P103", root=tiny_root, multi_token="all")


def test_filtering_by_correct_queries(lm, tiny_root, monkeypatch):
    answers = {"paris": "french", "berlin": "german", "rome": "italian", "london": "english",
               "madrid": "spanish", "france": "french"}

    def rule(prompt):
        subject = prompt.split(" of ")[1].split()[0]
        native = "native" in prompt
        rank = {"paris": 1 if native else 5, "berlin": 1 if native else 3, "rome": 1, "london": 2,
                "madrid": 9, "france": 1}[subject]
        return answers[subject], rank

    monkeypatch.setattr(lm, "next_token_logits", _controlled_logits(lm, rule))
    kw = dict(n_per_relation=None, root=tiny_root, batch_size=1, progress=False)

    def kept(**extra):
        return {e.fact.subject for e in pararel.build_dataset(lm, "P103", **{**kw, **extra})}

    assert kept() == {"paris", "berlin", "rome", "france"}
    assert kept(min_correct=2) == {"rome", "france"} == kept(min_correct="all")
    assert kept(top_k=2) == {"paris", "berlin", "rome", "london", "france"}
    assert kept(top_k=3, min_correct=2) == {"berlin", "rome", "london", "france"}
    assert kept(min_correct=0) == set(answers)
    assert kept(min_queries=3, min_correct=0) == set()  # P103 has only 2 usable patterns here

    ds = pararel.build_dataset(lm, "P103", **kw)
    paris = next(e for e in ds if e.fact.subject == "paris")
    native, mother = paris.queries
    assert (native.rank, native.correct, mother.rank, mother.correct) == (1, True, 5, False)
    assert native.prompt == "the native language of paris is" and native.top_id == native.target_id
    assert 0 < mother.prob < native.prob < 1 and paris.n_correct == 1
    frame = ds.to_frame()
    assert {"prompt", "target_id", "correct", "rank", "prob", "relation", "fact_id"} <= set(frame.columns)
    assert ds.scan["P103"]["dropped_not_answered"] == 2


def test_early_stop_follows_seeded_order(lm, tiny_root, monkeypatch):
    monkeypatch.setattr(lm, "next_token_logits", _controlled_logits(lm, lambda p: ("french", 1)))
    facts = pararel.load_facts("P103", tiny_root)
    for seed in (0, 1, 2):
        ds = pararel.build_dataset(lm, "P103", n_per_relation=2, seed=seed, root=tiny_root, batch_size=1,
                                   min_correct=0, progress=False)
        assert [e.fact for e in ds] == pararel.sample_facts(facts, 2, seed)
        assert ds.scan["P103"]["scanned"] == 2 and ds.params["seed"] == seed
    with pytest.warns(UserWarning, match="only 3 of 5"):
        short = pararel.build_dataset(lm, "P103", n_per_relation=5, max_scan=3, root=tiny_root, batch_size=1,
                                      min_correct=0, progress=False)
    assert len(short) == 3 and short.scan["P103"]["scanned"] == 3


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_batched_logits_match_unbatched(family):
    model = tiny_lm(family)
    prompts = ["the capital of france is", "paris", "the native language of a city in germany is",
               "birds live under the"]
    batched = model.next_token_logits_batch(prompts)
    single = torch.stack([model.next_token_logits(p) for p in prompts])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


def test_batched_dataset_equals_unbatched(lm, tiny_root):
    kw = dict(n_per_relation=2, root=tiny_root, top_k=20, progress=False)
    a = pararel.build_dataset(lm, "P103", batch_size=1, **kw)
    b = pararel.build_dataset(lm, "P103", batch_size=64, **kw)
    assert [e.fact for e in a] == [e.fact for e in b]
    assert [(q.rank, q.correct) for q in a.queries] == [(q.rank, q.correct) for q in b.queries]
    assert a.scan["P103"]["scanned"] == b.scan["P103"]["scanned"]
    assert a.scan["P103"]["kept"] == 2 and a.scan["P103"]["dropped_not_answered"] > 0  # both outcomes occur


def test_relation_selection_and_stats(lm, tiny_root):
    assert pararel.relations(tiny_root) == ["P103"]
    assert pararel.relations(tiny_root, min_patterns=1) == ["P103", "P1001"]
    ds = pararel.build_dataset(lm, None, n_per_relation=1, min_correct=0, root=tiny_root, progress=False)
    assert ds.relations() == ["P103"]
    with pytest.raises(DataError, match="fewer than min_patterns"):
        pararel.build_dataset(lm, ["P1001"], root=tiny_root, progress=False)
    stats = pararel.relation_stats(lm, root=tiny_root, sample=4, progress=False).set_index("relation")
    assert stats.loc["P103", "patterns"] == 4 and stats.loc["P103", "usable_patterns"] == 2
    assert stats.loc["P103", "facts"] == 6 and stats.loc["P103", "single_token_facts"] == 5
    assert stats.loc["P103", "sample"] == 4 and 0 <= stats.loc["P103", "answered"] <= 4
    assert not stats.loc["P1001", "kept"]


@needs_shared
def test_relation_stats_without_model():
    stats = pararel.relation_stats(root=SHARED, relations=["P103", "P39"], progress=False).set_index("relation")
    assert stats.loc["P103"].to_dict()["facts"] == 919 and stats.loc["P39", "usable_patterns"] == 6
    assert "answered" not in stats.columns


# ---------------------------------------------------------------------------------------- locating the data


def test_errors_for_bad_directories_and_relations(tmp_path, tiny_root, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"lacks patterns/ and tuples/"):
        pararel.load_patterns("P103", tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        pararel.pararel_root(tmp_path / "nowhere")
    monkeypatch.setenv("KQLIB_PARAREL", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"\$KQLIB_PARAREL"):
        pararel.pararel_root()
    monkeypatch.setenv("KQLIB_PARAREL", str(tiny_root))
    assert pararel.pararel_root() == tiny_root
    with pytest.raises(DataError) as err:
        pararel.load_facts("P9999")
    assert "'P9999' is unknown" in str(err.value) and "P103, P1001" in str(err.value)


@needs_shared
def test_relation_without_patterns_is_explained():
    with pytest.raises(DataError, match="no patterns upstream") as err:
        pararel.load_patterns("P31", SHARED)
    assert "P1412" in str(err.value)


def test_finds_shared_checkout_beside_working_directory(tmp_path, monkeypatch, tiny_root):
    monkeypatch.delenv("KQLIB_PARAREL", raising=False)
    repo = tmp_path / "clone" / "repo"
    repo.mkdir(parents=True)
    shutil.copytree(tiny_root, tmp_path / "clone" / "shared" / "data" / "pararel")
    monkeypatch.chdir(repo)
    assert pararel.pararel_root() == tmp_path / "clone" / "shared" / "data" / "pararel"
    if SHARED.is_dir():
        assert SHARED in pararel._shared_candidates()


# ---------------------------------------------------------------------------------------- downloader


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def upstream_server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving an upstream-shaped tree: /<commit>/data/..."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    tree = tmp_path / "upstream" / pararel.PARAREL_COMMIT
    source = SHARED if (SHARED / "patterns").is_dir() else None
    for rel in pararel.RELATIONS:
        for remote, local in pararel.upstream_files([rel])[1:]:
            (tree / remote).parent.mkdir(parents=True, exist_ok=True)
            if source is not None:
                shutil.copy(source / local, tree / remote)
            else:
                _write_jsonl(tree / remote, [{"pattern": "[X] is [Y]."}] if "pattern" in remote
                             else [{"sub_label": "a", "obj_label": "b", "uuid": "c"}])
    (tree / "LICENSE").write_text("MIT License\n")
    handler = type("Handler", (_QuietHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler, directory=str(tmp_path / "upstream")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tree, handler
    server.shutdown()
    server.server_close()


def test_download_from_local_server(upstream_server, tmp_path, capsys):
    url, tree, handler = upstream_server
    dest = tmp_path / "cache"
    out = pararel.download_pararel(dest, base_url=url, relations=["P103", "P1412"])
    assert out == dest and (dest / pararel.COMPLETE_MARKER).exists()
    for rel in ("P103", "P1412"):
        assert (dest / "patterns" / f"{rel}.jsonl").read_bytes() == \
            (tree / pararel.UPSTREAM_PATTERNS.format(relation=rel)).read_bytes()
        assert (dest / "tuples" / f"{rel}.jsonl").read_bytes() == \
            (tree / pararel.UPSTREAM_TUPLES.format(relation=rel)).read_bytes()
    assert not list(dest.rglob("*.tmp"))
    err = capsys.readouterr().err
    assert "1/5" in err and "5/5" in err
    assert pararel.available_relations(dest) == ["P103", "P1412"]
    # resumes: an existing file is not fetched again
    (dest / "tuples" / "P1412.jsonl").unlink()
    handler.requests.clear()
    pararel.download_pararel(dest, base_url=url, relations=["P103", "P1412"], progress=False)
    assert handler.requests == [f"/{pararel.PARAREL_COMMIT}/data/trex_lms_vocab/P1412.jsonl"]


def test_pararel_root_downloads_into_cache(upstream_server, tmp_path, monkeypatch):
    url, _, _ = upstream_server
    monkeypatch.delenv("KQLIB_PARAREL", raising=False)
    monkeypatch.setenv("KQLIB_CACHE", str(tmp_path / "kqcache"))
    monkeypatch.setattr(pararel_files, "_shared_candidates", lambda: [])
    monkeypatch.setattr(pararel_files, "PARAREL_BASE_URL", url)
    with pytest.raises(DataError, match="download=False"):
        pararel.pararel_root(download=False)
    root = pararel.pararel_root()
    assert root == tmp_path / "kqcache" / "pararel" / pararel.PARAREL_COMMIT
    assert len(pararel.available_relations()) == 39
    monkeypatch.setattr(pararel_files, "PARAREL_BASE_URL", "http://127.0.0.1:9")  # cached now: no network needed
    assert pararel.pararel_root() == root


def test_offline_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OfflineError) as err:
        pararel.download_pararel(tmp_path / "dl", base_url=f"http://127.0.0.1:{port}", timeout=5, progress=False)
    msg = str(err.value)
    assert "KQLIB_PARAREL=/path/to/pararel" in msg and "connect" in msg
    assert not (tmp_path / "dl" / pararel.COMPLETE_MARKER).exists()


def test_missing_upstream_file_is_a_data_error(upstream_server, tmp_path):
    url, _, _ = upstream_server
    with pytest.raises(DataError, match="HTTP 404"):
        pararel.download_pararel(tmp_path / "dl", base_url=url, relations=["P31"], progress=False)
