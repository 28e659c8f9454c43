import pytest

from spotlib.config import ConfigError, load_profile, secret_from_env


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["tiny", "paper", "test"])
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.out.name == name
    assert 0 < profile.filter.gamma <= 1


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "train:\n  betaa: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and "train.'betaa'" in str(err.value).replace('"', "'")


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_profile(write(tmp_path, "trian: {}\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"key train\.per_device_batch: expected an integer"):
        load_profile(write(tmp_path, "train:\n  per_device_batch: two\n"))
    with pytest.raises(ConfigError, match=r"key seeds\[1\]: expected an integer"):
        load_profile(write(tmp_path, "seeds: [0, x]\n"))
    with pytest.raises(ConfigError, match=r"train\.bf16: expected true or false"):
        load_profile(write(tmp_path, "train:\n  bf16: 1\n"))


def test_float_accepts_yaml_exponent_strings(tmp_path):
    # YAML 1.1 reads 1e-6 as a string; a float field takes it.
    profile = load_profile(write(tmp_path, "rl:\n  lr: 1e-6\n"))
    assert profile.rl.lr == 1e-6


def test_bad_choice_and_range(tmp_path):
    with pytest.raises(ConfigError, match="train.delta_mode"):
        load_profile(write(tmp_path, "train:\n  delta_mode: average\n"))
    with pytest.raises(ConfigError, match="filter.gamma"):
        load_profile(write(tmp_path, "filter:\n  gamma: 1.5\n"))


def test_missing_file_and_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown profile 'nope'.*known: .*tiny"):
        load_profile("nope")


def test_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(write(tmp_path, "train: [\n"))


def test_overrides_and_stage_dir(tmp_path):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "train.beta": 0.5})
    assert profile.train.beta == 0.5
    assert profile.stage_dir("01_sample") == tmp_path / "01_sample"
    assert (tmp_path / "01_sample").is_dir()
    assert profile.base_model_path() == tmp_path / "base_model"


def test_secret_from_env(monkeypatch):
    monkeypatch.delenv("SPOT_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="SPOT_TEST_KEY is not set"):
        secret_from_env("SPOT_TEST_KEY")
    monkeypatch.setenv("SPOT_TEST_KEY", "s3cret")
    assert secret_from_env("SPOT_TEST_KEY") == "s3cret"
    assert secret_from_env(None) is None


def test_paper_profile_names_key_variable_not_key():
    profile = load_profile("paper")
    assert profile.oracle.api_key_env == "GEMINI_API_KEY"
    assert "api_key" not in {k for k in profile.to_dict()["oracle"] if k != "api_key_env"}


@pytest.mark.parametrize("key,value", [("train.sweep_bracket", -1), ("train.sweep_bracket_tie", -0.5)])
def test_bracketing_settings_below_zero_name_their_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_profile("test", overrides={key: value})


def test_tie_word_embeddings_must_be_a_boolean():
    with pytest.raises(ConfigError, match="world.tie_word_embeddings: expected true or false"):
        load_profile("test", overrides={"world.tie_word_embeddings": "no"})
