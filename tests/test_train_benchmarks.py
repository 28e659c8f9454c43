"""The GPU check's CPU-size path runs end to end and its FLOP count is sane."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))


def test_gpu_check_smoke(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train_check.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps_timed"] == 3 and result["tokens_per_s"] > 0


def test_flops_per_token_matches_six_n_for_qwen3_0_6b():
    import gpu_train_check as g
    assert 0.40e9 < g.layer_params(g.QWEN3_0_6B) < 0.46e9   # 0.6B minus the 0.16B embedding
    per_token = g.train_flops_per_token(g.QWEN3_0_6B, 2048, 0.75)
    assert 6 * 0.44e9 < per_token < 6 * 0.75e9
