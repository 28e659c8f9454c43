import random

import pytest

from spotlib import proximity


def lcs_dp(a, b) -> int:
    """Reference: the textbook O(|a||b|) dynamic programme."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def levenshtein_dp(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_lcs_and_ratio_match_reference_on_random_token_sequences():
    rng = random.Random(0)
    for _ in range(300):
        vocab = rng.choice([2, 5, 50, 50000])   # large ids: token ids, not characters
        a = [rng.randrange(vocab) for _ in range(rng.randrange(0, 40))]
        b = [rng.randrange(vocab) for _ in range(rng.randrange(0, 40))]
        assert proximity.lcs_length(a, b) == lcs_dp(a, b)
        assert proximity.edit_distance(a, b) == levenshtein_dp(a, b)
        expected = (1.0 - lcs_dp(a, b) / len(b)) if b else (0.0 if not a else 1.0)
        assert proximity.change_ratio(a, b) == pytest.approx(expected)


def test_change_ratio_edge_cases_and_chars():
    assert proximity.change_ratio([1, 2, 3], [1, 2, 3]) == 0.0
    assert proximity.change_ratio([], [1, 2]) == 1.0
    assert proximity.change_ratio([1, 2, 3, 4], [1, 2]) == 0.0   # y⁺ inside y⁻: nothing new
    assert proximity.change_ratio("12 + 5 = 18", "12 + 5 = 17") == pytest.approx(1 / 11)
    assert proximity.to_units("ab", "chars") == ["a", "b"]
    with pytest.raises(ValueError, match="tokenizer"):
        proximity.to_units("ab", "tokens")
    with pytest.raises(ValueError, match="unknown unit"):
        proximity.to_units("ab", "words")


def test_filter_table_summary_and_wording():
    ratios = [0.0, 0.25, 0.6, 0.61, 1.0]
    table = proximity.kept_by_gamma(ratios, [0.3, 0.6, 1.0])
    assert table == {"0.30": 2, "0.60": 3, "1.00": 5}
    assert proximity.keep(0.6, 0.6) and not proximity.keep(0.61, 0.6)
    s = proximity.summary([1, 2, 3, 4, 5])
    assert s["median"] == 3 and s["mean"] == 3 and s["p10"] == pytest.approx(1.4)
    assert proximity.summary([])["median"] is None
    assert proximity.same_wording("First, 3 + 4 = 8.", "First, 3 + 4 = 7.")
    assert not proximity.same_wording("First, 3 + 4 = 8.", "3 plus 4 makes 7.")


def test_diff_html_marks_only_edited_words():
    page = proximity.diff_html("so 3 + 4 = 8 <ok>", "so 3 + 4 = 7 <ok>")
    assert "line-through\">8</span>" in page and "#dfd\">7</span>" in page
    assert "&lt;ok&gt;" in page   # escaped


def test_pooled_nll_is_token_weighted():
    out = proximity.pooled_nll([(2.0, 1), (6.0, 3)])
    assert out["nll_per_token"] == pytest.approx(2.0)
    assert proximity.pooled_nll([])["ppl"] is None


def test_token_budget_batches_never_exceed_the_budget_and_cover_every_index():
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 40))]
        budget, rows = rng.randint(64, 300), rng.choice([None, 3])
        batches = proximity.token_budget_batches(lengths, budget, rows)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            assert len(b) * max(lengths[i] for i in b) <= budget
            assert rows is None or len(b) <= rows
    assert proximity.token_budget_batches([5, 50, 6], 60) == [[0, 2], [1]]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_rl import _micro_model

    from spotlib.models import load_model

    path = _micro_model(tmp_path_factory.mktemp("micro"))
    return load_model(path, dtype="float32", device="cpu")


def test_budgeted_chunked_nll_equals_the_unbatched_full_logits_nll(micro):
    import torch

    from spotlib.tokens import build_completion_batch, sequence_logps

    model, tok = micro
    rng = random.Random(1)
    prompts = [f"x{i}" for i in range(9)]
    completions = ["".join(rng.choice("abcde xyz") for _ in range(rng.randint(1, 30))) for _ in prompts]
    reference = []
    for p, c in zip(prompts, completions):
        with torch.no_grad():
            lp, n = sequence_logps(model, build_completion_batch(tok, [p], [c], 48))
        reference.append((-float(lp[0]), int(n[0])))
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        got = proximity.mean_token_nll(model, tok, prompts, completions, 48, batch_tokens=100, chunk_tokens=7)
    finally:
        hook.remove()
    assert [n for _, n in got] == [n for _, n in reference]
    assert [x for x, _ in got] == pytest.approx([x for x, _ in reference], rel=1e-5, abs=1e-5)
    assert seen and all(len(shape) == 2 and shape[0] <= 7 for shape in seen)   # never [B, T, V]
    with pytest.raises(ValueError, match="nll_batch_tokens"):
        proximity.mean_token_nll(model, tok, prompts, completions, 48, batch_tokens=32)
