"""The base-model gate of stage 01: targets from the profile, enforce or warn."""
import json

import pytest

from spotlib.config import ConfigError, load_profile
from spotlib.stages import sample
from spotlib.world import gate


def _with_manifest(tmp_path, scores, **overrides):
    """The test profile over a base-model manifest holding `scores` at T=0.7."""
    profile = load_profile("test", overrides={"output_dir": str(tmp_path), **overrides})
    base = profile.base_model_path()
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps({"heldout_scores": {"T=0.0": {}, "T=0.7": scores},
                                                    "world": {"manifest_eval_items": 100}}))
    return profile


def test_generous_targets_pass_and_the_verdict_is_written(tmp_path):
    profile = _with_manifest(tmp_path, {"arith": 0.1, "arith_ood": 0.0, "facts": 1.0, "format": 0.5})
    result = gate.check_base_model(profile, tmp_path)
    assert result["passed"] and not result["overridden"]
    assert json.loads((tmp_path / gate.VERDICT_FILE).read_text()) == result
    assert "passed" in gate.report_line(result)
    assert "arith 0.10 (0.00-1.00)" in (tmp_path / gate.NOTE_FILE).read_text()


def test_outside_targets_stops_with_scores_targets_and_the_fix(tmp_path):
    targets = {"arith": [0.4, 0.7], "facts": [0.8, 1.0]}
    profile = _with_manifest(tmp_path, {"arith": 0.02, "facts": 1.0}, **{"base_gate.targets": targets})
    with pytest.raises(gate.BaseModelOutsideTargets) as err:
        gate.check_base_model(profile, tmp_path)
    text = str(err.value)
    assert "arith 0.02 (target 0.40-0.70)" in text and "within: facts 1.00" in text
    assert "base_gate.mode: warn" in text and "world.*" in text and "\n" not in text
    assert not (tmp_path / gate.VERDICT_FILE).exists()


def test_warn_goes_on_and_the_report_states_the_override(tmp_path, capsys):
    profile = _with_manifest(tmp_path, {"arith": 0.02, "facts": 0.9},
                             **{"base_gate.targets": {"arith": [0.4, 0.7], "facts": [0.8, 1.0],
                                                      "format": [0.8, 1.0]},
                                "base_gate.mode": "warn"})
    result = gate.check_base_model(profile, tmp_path)
    assert not result["passed"] and result["overridden"] and result["mode"] == "warn"
    assert result["families"]["format"] == {"score": None, "low": 0.8, "high": 1.0, "inside": False}
    assert "WARNING" in capsys.readouterr().out
    line = gate.report_line(json.loads((tmp_path / gate.VERDICT_FILE).read_text()))
    assert "outside its targets" in line and "base_gate.mode: warn" in line and "arith 0.02" in line
    assert line in (tmp_path / gate.NOTE_FILE).read_text()  # the report takes in the stage's .md notes
    from spotlib.report.build import stage_section
    assert line in "\n".join(stage_section(tmp_path))


def test_no_scores_at_the_temperature_and_bad_targets_fail_clearly(tmp_path):
    profile = _with_manifest(tmp_path, {"arith": 0.5}, **{"base_gate.temperature": 1.0})
    with pytest.raises(ValueError, match=r"no held-out scores at T=1 .*T=0.0, T=0.7"):
        gate.check_base_model(profile, tmp_path)
    with pytest.raises(ConfigError, match=r"base_gate.targets.arith: expected \[low, high\]"):
        load_profile("test", overrides={"base_gate.targets": {"arith": [0.7, 0.4]}})
    with pytest.raises(ConfigError, match="base_gate.mode"):
        load_profile("test", overrides={"base_gate.mode": "ignore"})


def test_stage_01_gates_the_real_base_model(sampled_profile, tmp_path):
    """The test profile's pre-trained model passes its generous targets; an unreachable target
    stops stage 01 before it samples, and `warn` lets it go on."""
    verdict = json.loads((sampled_profile.stage_dir(sample.STAGE) / gate.VERDICT_FILE).read_text())
    assert verdict["passed"] and set(verdict["families"]) == {"arith", "facts", "format"}
    scores = {f: v["score"] for f, v in verdict["families"].items()}
    impossible = {"arith": [scores["arith"] + 0.01, 1.0]} if scores["arith"] < 1 else {"arith": [0.0, 0.99]}
    # A copy of the output folder's base model only: stage 01 of the shared fixture stays as it is.
    import shutil
    shutil.copytree(sampled_profile.base_model_path(), tmp_path / "base_model")
    strict = sampled_profile.replace(output_dir=str(tmp_path), base_gate=sampled_profile.base_gate.__class__(
        temperature=0.7, targets=impossible, mode="enforce"))
    with pytest.raises(gate.BaseModelOutsideTargets, match="arith"):
        sample.run(strict, progress=False)
    assert not (tmp_path / sample.STAGE / "all.jsonl").exists()


def test_the_message_names_the_profile_to_edit_not_the_runs_copy(tmp_path):
    """Under `make reproduce` the stage loads outputs/<p>/profile.yaml; the fix belongs in params/<p>.yaml."""
    import yaml

    from spotlib.config import PARAMS_DIR
    out = tmp_path / "out"
    out.mkdir()
    data = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    data["output_dir"], data["name"] = str(out), "test"  # as the run writes its copy
    data.setdefault("base_gate", {})["targets"] = {"arith": [0.4, 0.7]}
    copy = out / "profile.yaml"
    copy.write_text(yaml.safe_dump(data))
    profile = load_profile(copy)
    base = profile.base_model_path()
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps({"heldout_scores": {"T=0.7": {"arith": 0.02}}}))
    with pytest.raises(gate.BaseModelOutsideTargets) as err:
        gate.check_base_model(profile, tmp_path)
    assert str(PARAMS_DIR / "test.yaml") in str(err.value) and str(copy) not in str(err.value)


def test_the_stop_names_the_cpu_kernels_the_model_was_pretrained_on(tmp_path):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path),
                                              "base_gate.targets": {"arith": [0.4, 0.7]}})
    base = profile.base_model_path()
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps({
        "heldout_scores": {"T=0.7": {"arith": 0.96}}, "world": {"manifest_eval_items": 100, "cpu_kernels": "native"},
        "stats": {"machine": {"kernels": "AVX2"}}}))
    with pytest.raises(gate.BaseModelOutsideTargets) as err:
        gate.check_base_model(profile, tmp_path)
    assert "pre-trained on AVX2 kernels (world.cpu_kernels: native)" in str(err.value)
    assert "\n" not in str(err.value)
