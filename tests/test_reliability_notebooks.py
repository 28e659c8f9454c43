"""Notebooks 02–06 run under papermill on the test profile (01 has its own test), with
smaller evaluation and RL settings: the test is about the notebooks, not the numbers."""
import json

import yaml

from spotlib.config import PARAMS_DIR


def test_notebooks_02_to_06_run_under_papermill(sampled_profile, tmp_path):
    from spotlib import reproduce

    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(sampled_profile.out))
    raw["eval"].update(n_items={"default": 1}, max_new_tokens=16)
    raw["rl"].update(num_prompts=4, rollouts_per_prompt=2, prompts_per_step=2, mini_batch=2, max_steps=1,
                     max_new_tokens=16, heldout_items=2)
    yaml_path = tmp_path / "test_profile.yaml"
    yaml_path.write_text(yaml.safe_dump(raw))

    assert reproduce.main(["--profile", str(yaml_path), "--stages", "02", "03", "04", "05", "06"]) == 0
    out = sampled_profile.out
    for name in ("02_rectify", "03_filter", "04_train_spot", "05_eval_forgetting", "06_rl_init"):
        nb = json.loads((out / "notebooks" / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(o.get("output_type") != "error" for c in code for o in c.get("outputs", [])), name
        assert any(c.get("outputs") for c in code), name
        assert json.loads((out / name / "manifest.json").read_text()).get("complete", True), name
    lesson = {c.get("id"): c for c in json.loads((out / "notebooks" / "04_train_spot.ipynb").read_text())["cells"]}
    for cell in ("tether-b", "tether-e"):  # the tether lesson's two figures (tests/test_tether_lesson.py)
        assert any("image/png" in o.get("data", {}) for o in lesson[cell]["outputs"]), cell
    table = (out / "05_eval_forgetting" / "table.md").read_text()
    assert "spot_bco" in table and "sft_plus" in table
    assert (out / "report.md").is_file()
