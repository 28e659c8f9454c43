import json

import pytest

from spotlib.problems import dapo_records, math_prompt
from spotlib.stages.sample import load_train_problems
from spotlib.io import DataError


def dapo_rows():
    # The layout of open-r1/DAPO-Math-17k-Processed (config "en").
    return [
        {"prompt": "What is 1+1?", "solution": "2", "data_source": "math_dapo",
         "source_prompt": [{"role": "user", "content": "..."}], "ability": "MATH",
         "reward_model": {"ground_truth": "2", "style": "rule"}, "extra_info": {"index": "a1"}},
        {"prompt": "Find x if 2x=10.", "solution": "5", "data_source": "math_dapo",
         "source_prompt": [], "ability": "MATH", "reward_model": {"ground_truth": "5", "style": "rule"},
         "extra_info": {"index": "b2"}},
    ]


def test_math_prompt_carries_final_line():
    text = math_prompt("  What is 2+2?  ")
    assert text.endswith("What is 2+2?")
    assert "Therefore, the final answer is: $\\boxed{ANSWER}$." in text


def test_dapo_loader_on_local_jsonl_and_parquet(tmp_path, tmp_profile):
    import pandas as pd

    rows = dapo_rows()
    jsonl = tmp_path / "dapo.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parquet = tmp_path / "dapo.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    for path in (jsonl, parquet):
        profile = tmp_profile.replace(sample=tmp_profile.sample.__class__(
            dataset="open-r1/DAPO-Math-17k-Processed", data_files=str(path), num_problems=5))
        records = load_train_problems(profile)
        assert [r["id"] for r in records] == ["dapo-a1", "dapo-b2"]
        assert records[1]["answer"] == "5" and records[1]["family"] == "math"
        assert "Find x if 2x=10." in records[1]["prompt"]
        assert [r["id"] for r in load_train_problems(profile, 1)] == ["dapo-a1"]  # a count of its own


def test_dapo_missing_field_and_missing_file(tmp_path, tmp_profile):
    with pytest.raises(DataError, match="row 0: missing field 'solution'"):
        dapo_records([{"prompt": "p"}], 10, source="x.jsonl")
    profile = tmp_profile.replace(sample=tmp_profile.sample.__class__(
        dataset="open-r1/DAPO-Math-17k-Processed", data_files=str(tmp_path / "absent.parquet")))
    with pytest.raises(DataError, match="absent.parquet: data file not found"):
        load_train_problems(profile)


def test_world_problems_take_a_count_and_keep_their_order(tmp_profile):
    """Stage 06 asks for its own number of prompts: the first of the same problems."""
    all_problems = load_train_problems(tmp_profile)
    assert len(all_problems) == tmp_profile.sample.num_problems
    assert load_train_problems(tmp_profile, 5) == all_problems[:5]
