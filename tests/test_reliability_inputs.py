"""Every setting that cannot be right is refused by `--dry-run` in one line naming the key;
broken input files are named with what to do (the rows of tests/bad_inputs.py)."""
import pytest
import yaml

from bad_inputs import BAD_SETTINGS, dry_run_message, missing_base_model_at_stage_03, torn_dapo_line
from spotlib.config import PARAMS_DIR, ConfigError, load_profile
from spotlib.config import check_ranges
from spotlib.config.checks import SMALLEST_VOCAB
from spotlib.plan.names import NAME_RULES
from spotlib.plan.validate import validate


@pytest.mark.parametrize("overrides, key", BAD_SETTINGS, ids=[k for _, k in BAD_SETTINGS])
def test_bad_setting_is_refused_naming_its_key(tmp_path, overrides, key):
    message = dry_run_message(overrides, str(tmp_path / "out"))
    assert message is not None, f"{overrides} was accepted"
    assert f"key {key}:" in message and "test.yaml" in message and "\n" not in message


@pytest.mark.parametrize("name", sorted(p.stem for p in PARAMS_DIR.glob("*.yaml") if not p.stem.startswith("accelerate"))
                         + sorted(f"calibration/{p.name}" for p in (PARAMS_DIR / "calibration").glob("*.yaml")))
def test_shipped_profiles_pass_every_check(name):
    path = PARAMS_DIR / name if name.endswith(".yaml") else name
    profile = load_profile(path)
    check_ranges(profile, profile.source, extra_rules=NAME_RULES)


def test_smallest_vocab_is_the_tokenizers_alphabet():
    from spotlib.world.tokenizer import SPECIALS

    assert SMALLEST_VOCAB == 256 + len(SPECIALS)


def test_dry_run_refuses_a_model_path_that_does_not_exist(tmp_path, capsys):
    from spotlib import reproduce

    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(tmp_path / "out"))
    raw["model"]["name_or_path"] = str(tmp_path / "no-such-model")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert reproduce.main(["--profile", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "key model.name_or_path" in err and "no-such-model" in err


def test_a_hub_id_is_not_checked_on_disk(tmp_path):
    assert dry_run_message({"model.name_or_path": "Qwen/Qwen3-8B"}, str(tmp_path / "out")) is None


def test_rehearsal_inputs_built_by_stage_01_pass_before_they_exist(tmp_path):
    from spotlib.plan.validate import validate

    validate(load_profile("rehearsal", overrides={"output_dir": str(tmp_path / "r")}))


def test_torn_dapo_line_is_named_with_file_and_line(tmp_path):
    message = torn_dapo_line(tmp_path)
    assert message.startswith(f"{tmp_path / 'dapo.jsonl'}:2: malformed JSON line") and "sample.data_files" in message


def test_missing_base_model_at_stage_03_says_to_run_stage_01(tmp_path):
    message = missing_base_model_at_stage_03(tmp_path)
    assert "base_model: no saved model here" in message and "stage 01" in message and "Repo id" not in message


def test_unknown_server_fault_is_refused_at_dry_run(tmp_path):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "oracle.server_faults": {"drop": 0.5}})
    with pytest.raises(ConfigError, match="oracle.server_faults.drop"):
        validate(profile)
