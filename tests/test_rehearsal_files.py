"""The rehearsal's inputs: tiny-world problems written in the public datasets' own formats,
read back by the paper profile's real loaders."""
import json

import pytest

from spotlib import evals
from spotlib.plan import rehearsal
from spotlib.config import load_profile
from spotlib.stages.sample import load_train_problems
from spotlib.evals import connect4
from spotlib.oracle.programmatic import ProgrammaticOracle
from spotlib.world.families import parse_arith_problem


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    profile = load_profile("rehearsal", overrides={"output_dir": str(tmp_path_factory.mktemp("rehearsal"))})
    folder = profile.out / rehearsal.PUBLIC_DIR
    folder.mkdir(parents=True)
    rehearsal.write_public_files(folder, profile.world, 40, seed=profile.seed, n_eval=6)
    return profile


def test_profile_paths_point_into_its_output_folder(files):
    assert files.model.name_or_path == f"{files.output_dir}/base_model"
    assert files.sample.data_files.startswith(files.output_dir)
    assert all(v.startswith(files.output_dir) for v in files.eval.data_files.values())
    assert set(files.eval.data_files) == set(files.eval.benchmarks)


def test_dapo_parquet_is_read_by_the_training_loader_with_the_paper_prompt(files):
    problems = load_train_problems(files)
    assert len(problems) == 40  # the file holds 40 rows, fewer than sample.num_problems
    first = problems[0]
    assert first["prompt"].startswith("Solve the following math problem step by step.")
    assert parse_arith_problem(first["prompt"]) is not None
    assert first["answer"].lstrip("-").isdigit()


@pytest.mark.parametrize("name", ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench",
                                  "gpqa_diamond", "connect4", "ifeval"])
def test_every_benchmark_file_loads_through_its_real_loader(files, name):
    items = evals.load_items(name, files.eval, files.world)
    assert len(items) == 6
    if name in ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"):
        for item in items:  # the gold answer is the world's: the problem's own arithmetic
            operands, ops = parse_arith_problem(item["prompt"])
            value = operands[0]
            for op, b in zip(ops, operands[1:]):
                value = value + b if op == "+" else value - b
            assert float(item["answer"]) == value


def test_connect4_answers_are_the_positions_immediate_wins(files):
    rows = [json.loads(line) for line in open(files.eval.data_files["connect4"])]
    assert len(rows) == 6
    for row in rows:
        result = connect4.score(connect4.render_answer(row["answer"], row["state"]), row["answer"])
        assert (result["own"], result["opponent"], result["format_error"]) == (1.0, 1.0, False)
        assert connect4.valid_moves(row["state"])


def test_the_programmatic_oracle_repairs_a_dapo_record():
    from spotlib.problems import dapo_records, math_prompt
    from spotlib.world.families import arith_prompt

    record = dapo_records([{"prompt": arith_prompt([12, 30, 5], ["+", "-"]), "solution": "37",
                            "extra_info": {"index": "a"}}], 1)[0]
    wrong = "12 + 30 = 42\n42 - 5 = 38\nTherefore, the final answer is: $\\boxed{38}$."
    fixed = ProgrammaticOracle(0).fix(record, wrong)
    assert "\\boxed{37}" in fixed.text and fixed.mode != "rewrite"
    assert record["prompt"] == math_prompt(arith_prompt([12, 30, 5], ["+", "-"]))
