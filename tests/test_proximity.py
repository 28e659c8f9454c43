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
