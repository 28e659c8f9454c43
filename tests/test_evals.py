import json

import pytest

from spotlib.config import EvalConfig
from spotlib.evals import REGISTRY, get, k_for, load_items
from spotlib.io import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


MATH_ROWS = {  # one row per dataset, in its public format (the columns on the Hub)
    "aime24": {"id": 60, "problem": "Find $x$.", "solution": "...", "answer": "204", "url": "u", "year": "2024"},
    "aime25": {"id": "I-1", "problem": "Find $y$.", "answer": "70"},
    "amc23": {"id": 0, "problem": "Compute $1/2+1/4$.", "answer": 0.75, "url": "u", "question": "q"},
    "math500": {"problem": "Simplify.", "solution": "s", "answer": "\\frac{1}{2}", "subject": "Algebra",
                "level": 2, "unique_id": "test/algebra/1.json"},
    # Minerva has no answer column: the gold answer is the last box of the worked solution.
    "minerva": {"problem": "Speed?", "solution": "First $\\boxed{2}$, then $c=\\boxed{3 \\times 10^{8}}$.",
                "type": "Physics (8.01)", "idx": 4},
    "olympiadbench": {"id": 1606, "question": "Find $n$.", "solution": ["Since ..."],
                      "final_answer": ["$\\frac{3}{2}$"], "answer": "$\\frac{3}{2}$", "context": None,
                      "unit": None, "answer_type": "Numerical", "error": None, "is_multiple_answer": False,
                      "subfield": "Algebra"},
}
GOLD = {"aime24": "204", "aime25": "70", "amc23": "0.75", "math500": "\\frac{1}{2}",
        "minerva": "3 \\times 10^{8}", "olympiadbench": "\\frac{3}{2}"}
ANSWER_COLUMN = {"minerva": "solution"}


@pytest.mark.parametrize("name", list(MATH_ROWS))
def test_math_loaders_read_local_files_in_the_public_format(tmp_path, name):
    cfg = EvalConfig(data_files={name: _write(tmp_path / f"{name}.jsonl", [MATH_ROWS[name]] * 3)},
                     n_items={"default": 2})
    items = load_items(name, cfg)
    assert len(items) == 2 and items[0]["family"] == name and items[0]["answer"] == GOLD[name]
    assert "\\boxed{ANSWER}" in items[0]["prompt"]
    bench = get(name)
    right = f"Therefore, the final answer is: $\\boxed{{{items[0]['answer']}}}$."
    assert bench.score_all(items, [right, "no idea"], cfg) == [{"score": 1.0}, {"score": 0.0}]


@pytest.mark.parametrize("name", list(MATH_ROWS))
def test_a_file_without_the_gold_column_names_file_benchmark_and_column(tmp_path, name):
    column = ANSWER_COLUMN.get(name, "answer")
    row = {k: v for k, v in MATH_ROWS[name].items() if k != column}
    path = _write(tmp_path / f"{name}.jsonl", [row])
    with pytest.raises(DataError, match=rf"{name}.jsonl: benchmark {name}: row 0: expected column '{column}'"):
        load_items(name, EvalConfig(data_files={name: path}))


def test_minerva_solution_without_a_box_is_an_error(tmp_path):
    path = _write(tmp_path / "m.jsonl", [{**MATH_ROWS["minerva"], "solution": "The speed is c."}])
    with pytest.raises(DataError, match=r"m.jsonl: benchmark minerva: row 0: column 'solution' has no"):
        load_items("minerva", EvalConfig(data_files={"minerva": path}))


def test_bad_rows_get_a_clear_error(tmp_path):
    cfg = EvalConfig(data_files={"math500": _write(tmp_path / "m.jsonl", [{"question_text": "x", "answer": "1"}])})
    with pytest.raises(DataError, match=r"m.jsonl: benchmark math500: row 0: expected column 'problem'"):
        load_items("math500", cfg)
    with pytest.raises(DataError, match="data file not found"):
        load_items("math500", EvalConfig(data_files={"math500": str(tmp_path / "missing.jsonl")}))


GPQA_ROW = {"Record ID": "rec1", "Question": "Which is heaviest?", "Correct Answer": "lead",
            "Incorrect Answer 1": "air", "Incorrect Answer 2": "water", "Incorrect Answer 3": "wood"}


def test_gpqa_shuffles_options_with_a_recorded_seed_and_grades_letters(tmp_path):
    path = _write(tmp_path / "g.jsonl", [GPQA_ROW, {**GPQA_ROW, "Record ID": "rec2"}])
    items = load_items("gpqa_diamond", EvalConfig(data_files={"gpqa_diamond": path}))
    again = load_items("gpqa_diamond", EvalConfig(data_files={"gpqa_diamond": path}))
    other = load_items("gpqa_diamond", EvalConfig(data_files={"gpqa_diamond": path}, gpqa_shuffle_seed=7))
    assert [i["meta"]["options"] for i in items] == [i["meta"]["options"] for i in again]
    assert items[0]["meta"]["shuffle_seed"] == 0 and other[0]["meta"]["shuffle_seed"] == 7
    item = items[0]
    gold = item["answer"]
    assert item["meta"]["options"]["ABCD".index(gold)] == "lead"
    assert f"{gold}) lead" in item["prompt"]
    wrong = next(c for c in "ABCD" if c != gold)
    score = get("gpqa_diamond").score
    assert score(item, f"Therefore, the final answer is: $\\boxed{{{gold}}}$.")["score"] == 1.0
    assert score(item, f"$\\boxed{{\\text{{({gold})}}}}$")["score"] == 1.0
    assert score(item, f"The answer is ({gold}).")["score"] == 1.0
    assert score(item, f"$\\boxed{{{wrong}}}$")["score"] == 0.0
    assert score(item, "$\\boxed{A or B}$")["score"] == 0.0


IFEVAL_ROWS = [
    {"key": 1000, "prompt": "Write a short note without any commas, all in lowercase.",
     "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
     "kwargs": [{}, {}]},
    {"key": 1001, "prompt": "Answer in fewer than 3 sentences. Wrap the whole answer in double quotes.",
     "instruction_id_list": ["length_constraints:number_sentences", "startend:quotation"],
     "kwargs": [{"relation": "less than", "num_sentences": 3}, {}]},
]


def test_ifeval_uses_the_maintained_checkers_at_prompt_and_instruction_level(tmp_path, monkeypatch):
    from spotlib.evals.ifeval import sentence_splitter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")    # the suite never downloads NLTK data

    items = load_items("ifeval", EvalConfig(data_files={"ifeval": _write(tmp_path / "if.jsonl", IFEVAL_ROWS)}))
    bench = get("ifeval")
    follows = bench.score(items[0], "this is a note that follows every rule here")
    assert follows["prompt_level_strict"] == 1.0 and follows["inst_strict_followed"] == 2
    half = bench.score(items[0], "This note, sadly, has commas")
    assert half["prompt_level_strict"] == 0.0 and half["inst_strict_followed"] == 0
    quoted = bench.score(items[1], '"One sentence. Two sentences."')
    assert quoted["score"] == 1.0
    # loose accepts markdown emphasis that strict rejects
    loose = bench.score(items[1], '**"One sentence."**')
    assert loose["prompt_level_strict"] == 0.0 and loose["prompt_level_loose"] == 1.0
    summary = bench.summarize([follows, half, quoted])
    assert summary["prompt_level_strict"] == pytest.approx(2 / 3)
    assert summary["inst_level_strict"] == pytest.approx(4 / 6)
    assert sentence_splitter() in ("punkt_tab", "punkt_untrained")
    assert follows["sentence_splitter"] == sentence_splitter()
    assert summary["trained_sentence_splitter"] == float(sentence_splitter() == "punkt_tab")


class _FakeNltk:
    """nltk.data.find / nltk.download stand-ins: `installed` flips when a download succeeds."""

    def __init__(self, installed=False, download_result=True, raises=None):
        self.installed, self.download_result, self.raises, self.downloads = installed, download_result, raises, 0

    def find(self, path):
        if not self.installed:
            raise LookupError(path)

    def download(self, name, quiet=False):
        self.downloads += 1
        if self.raises:
            raise self.raises
        self.installed = self.download_result
        return self.download_result


@pytest.mark.parametrize("state, offline, splitter, downloads, why", [
    (dict(installed=True), False, "punkt_tab", 0, None),
    (dict(), True, "punkt_untrained", 0, "HF_HUB_OFFLINE is set"),
    (dict(), False, "punkt_tab", 1, None),
    (dict(download_result=False), False, "punkt_untrained", 1, "no network"),
    (dict(raises=OSError("unreachable")), False, "punkt_untrained", 1, "OSError"),
])
def test_ifeval_gets_the_trained_sentence_splitter_when_it_can(state, offline, splitter, downloads, why):
    from spotlib.evals.ifeval import ensure_punkt

    fake = _FakeNltk(**state)
    got, warning = ensure_punkt(find=fake.find, download=fake.download, is_offline=offline)
    assert got == splitter and fake.downloads == downloads
    assert (warning is None) == (why is None)
    if why:
        assert why in warning and "nltk.downloader punkt_tab" in warning and "\n" not in warning


def test_world_benchmarks_use_the_world_items_and_scorer():
    from spotlib import world

    cfg = EvalConfig(n_items={"default": 3, "facts": 2})
    for name, group in (("arith", "in_domain"), ("arith_ood", "ood"), ("facts", "general"), ("format", "general")):
        items = load_items(name, cfg)
        assert len(items) == (2 if name == "facts" else 3) and get(name).group == group
        assert items == world.make_items(name, len(items), split="eval")
        assert get(name).score(items[0], "nothing")["score"] == 0.0


def test_registry_covers_the_paper_and_tiny_suites_with_their_k():
    paper = ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench", "gpqa_diamond", "connect4", "ifeval"]
    assert set(paper + ["arith", "arith_ood", "facts", "format"]) <= set(REGISTRY)
    cfg = EvalConfig(k={"default": 5, "aime24": 16})
    assert k_for(cfg, "aime24") == 16 and k_for(cfg, "math500") == 5
    assert [get(n).group for n in paper].count("in_domain") == 6
    with pytest.raises(KeyError, match="unknown benchmark"):
        get("mmlu")


CONNECT4_ROW = {"state": "Board:\n.......\nValid moves: [(0,3)]", "answer": [[[0, 3]], []]}


@pytest.mark.parametrize("name, row, gold_column", [
    ("gpqa_diamond", GPQA_ROW, "Correct Answer"),
    ("connect4", CONNECT4_ROW, "answer"),
    ("ifeval", IFEVAL_ROWS[0], "instruction_id_list"),
])
def test_other_benchmarks_name_their_gold_column(tmp_path, name, row, gold_column):
    good = _write(tmp_path / "good.jsonl", [row])
    assert len(load_items(name, EvalConfig(data_files={name: good}))) == 1
    bad = _write(tmp_path / "bad.jsonl", [{k: v for k, v in row.items() if k != gold_column}])
    with pytest.raises(DataError, match=rf"bad.jsonl: benchmark {name}: row 0: expected column '{gold_column}'"):
        load_items(name, EvalConfig(data_files={name: bad}))


def _gpqa_profile(**eval_changes):
    """The paper profile's eval settings, with these changes."""
    import dataclasses

    from spotlib.config import load_profile

    return dataclasses.replace(load_profile("paper").eval, **eval_changes)


class _FakeHub:
    def __init__(self, status=None):
        self.status, self.calls = status, []

    def auth_check(self, repo_id, repo_type=None, token=None):
        import httpx
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        self.calls.append((repo_id, repo_type, token))
        if self.status is None:
            return None
        response = httpx.Response(self.status, request=httpx.Request("GET", "https://hub/auth-check"))
        kind = {403: GatedRepoError, 404: RepositoryNotFoundError}.get(self.status, HfHubHTTPError)
        raise kind("refused", response=response)


@pytest.fixture
def no_hf_login(tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return monkeypatch


def test_gpqa_access_check_before_any_compute(tmp_path, no_hf_login):
    from spotlib.evals.gpqa import check_access

    hub = _FakeHub()
    problem = check_access(_gpqa_profile(), api=hub)
    assert "gated" in problem and "no Hugging Face token" in problem and "\n" not in problem
    assert hub.calls == []                                        # no token: no network call either
    local = _write(tmp_path / "gpqa.jsonl", [GPQA_ROW])
    assert check_access(_gpqa_profile(data_files={"gpqa_diamond": local})) is None
    assert "not found" in check_access(_gpqa_profile(data_files={"gpqa_diamond": str(tmp_path / "x.csv")}))
    assert check_access(_gpqa_profile(benchmarks=["math500"])) is None   # not asked for
    no_hf_login.setenv("HF_TOKEN", "hf_test")
    assert check_access(_gpqa_profile(), api=hub) is None and hub.calls == [("Idavidrein/gpqa", "dataset", "hf_test")]
    assert "not accepted the dataset's terms" in check_access(_gpqa_profile(), api=_FakeHub(403))
    assert "invalid token" in check_access(_gpqa_profile(), api=_FakeHub(404))
    assert "HTTP 500" in check_access(_gpqa_profile(), api=_FakeHub(500))
    no_hf_login.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" in check_access(_gpqa_profile(), api=hub)
    (tmp_path / "hub" / "datasets--Idavidrein--gpqa").mkdir(parents=True)   # downloaded earlier
    assert check_access(_gpqa_profile(), api=hub) is None
