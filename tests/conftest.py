import os

import pytest
import torch

# Two cores: one torch thread pool per test process is what the machine can feed.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module that asks for it (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    micro models run fastest on one, and on 2 cores shared by several processes two threads spin-wait
    on each other (measured: the stage-06 test 169 s with 2 threads, 15 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tmp_profile(tmp_path):
    """The test profile writing into a temporary output folder."""
    from spotlib.config import load_profile

    return load_profile("test", overrides={"output_dir": str(tmp_path / "out")})


@pytest.fixture(scope="session")
def sampled_profile(tmp_path_factory):
    """The test profile after stage 01 (base model pre-trained once per test session)."""
    from spotlib.config import load_profile
    from spotlib.stages import sample

    out = tmp_path_factory.mktemp("pipeline")
    profile = load_profile("test", overrides={"output_dir": str(out)})
    sample.run(profile, progress=False)
    return profile


def profile_yaml(profile, path):
    """A YAML file for `profile` (the test profile with its output folder), for papermill runs."""
    import yaml

    from spotlib.config import PARAMS_DIR

    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw["output_dir"] = str(profile.out)
    raw["name"] = "test"
    path.write_text(yaml.safe_dump(raw))
    return path
