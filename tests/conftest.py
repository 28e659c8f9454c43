import os

import pytest
import torch

# Two cores: one torch thread pool per test process is what the machine can feed.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tmp_profile(tmp_path):
    """The test profile writing into a temporary output folder."""
    from spotlib.config import load_profile

    return load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
