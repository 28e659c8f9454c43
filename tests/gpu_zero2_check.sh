#!/usr/bin/env bash
# Stage 04's trainer under `accelerate launch` + DeepSpeed ZeRO-2 on one GPU (needs a GPU and
# deepspeed; wheels it lacks can be given as a folder):
#   bash tests/gpu_zero2_check.sh [WHEEL_DIR]
# 1. fp32: 1 × batch 4 and 1 × batch 2 with accumulation 2 train the same weights under the
#    DeepSpeed engine (accelerate's accumulate() steps it once per logged step);
# 2. stage 04 relaunched by itself from notebooks/ (papermill's cwd) with the repository's
#    accelerate config, bf16 with fp32 master weights.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PYTHONPATH=$REPO
if [ -n "${1:-}" ]; then  # deepspeed and its dependencies (hjson, einops, msgpack, pydantic...) for this Python
  for wheel in "$1"/*.whl; do python -m pip install -q --no-deps --no-index "$wheel" 2>&1 | tail -1 || true; done
fi
python -c "import torch, accelerate, transformers, deepspeed; print('torch', torch.__version__, 'accelerate', accelerate.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, torch.cuda.get_device_name())"
WORK=${OUT:-/tmp}/zero2_check
rm -rf "$WORK" && mkdir -p "$WORK"
python -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from dist_worker import build_base; build_base(Path('$WORK/base'))"
CONFIG=$(cd notebooks && python -c "from pathlib import Path; from spotlib.stages.train_methods import resolved_accelerate_config as r; print(r('params/accelerate_zero2.yaml', Path('$WORK/accelerate.yaml')))")
for run in one=4,1 accum=2,2; do
  python -m accelerate.commands.launch --config_file "$CONFIG" --num_processes 1 tests/dist_worker.py \
    --device cuda --base "$WORK/base" --out "$WORK/${run%%=*}_out" --runs "$run" --methods sft dpo spot_bco \
    > "$WORK/${run%%=*}.log" 2>&1 || { tail -40 "$WORK/${run%%=*}.log"; exit 1; }
done
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from test_distributed import _relative_difference, _records
work = Path(sys.argv[1])
failed = False
for method in ("sft", "dpo", "spot_bco"):
    one, accum = work / "one_out" / "one" / method, work / "accum_out" / "accum" / method
    gap = _relative_difference(one, accum, work / "base")
    a, b = _records(one), _records(accum)
    losses = [(round(x["loss"], 6), round(y["loss"], 6)) for x, y in zip(a, b)]
    ok = gap < 1e-2 and len(b) == 3 or method == "spot_bco"   # BCO: δ per micro-batch, differs by design
    failed |= not ok
    print(f"ZeRO-2 fp32 {method:9s} |w_1x4 - w_2x2| / |update| = {gap:.2e}  steps {len(b)}  losses {losses}  {'ok' if ok else 'FAIL'}")
sys.exit(1 if failed else 0)
PY
# Stage 04 relaunching itself (accelerate + ZeRO-2, bf16) from notebooks/.
python - "$WORK" <<'PY'
import sys, yaml
from pathlib import Path
sys.path.insert(0, "tests")
from dist_worker import synthetic_examples
from spotlib.io import write_jsonl
work = Path(sys.argv[1])
write_jsonl(work / "stage" / "03_filter" / "pairs.jsonl", [dict(e, answer="", source="rectified") for e in synthetic_examples(7)])
raw = yaml.safe_load(Path("params/test.yaml").read_text())
raw.update(name="zero2", device="cuda", output_dir=str(work / "stage"))
raw["model"] = dict(raw.get("model") or {}, name_or_path=str(work / "base"))
raw["train"].update(methods=["spot_bco"], accelerate_config="params/accelerate_zero2.yaml", launcher="accelerate",
                    num_processes=1, max_steps=3, per_device_batch=2, grad_accum=2, kl_probe_every=0, bf16=True)
(work / "zero2.yaml").write_text(yaml.safe_dump(raw))
PY
(cd notebooks && python -m spotlib.stages.train_methods --profile "$WORK/zero2.yaml" > "$WORK/stage.log" 2>&1) || { tail -40 "$WORK/stage.log"; exit 1; }
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1]) / "stage" / "04_train_spot"
manifest = json.loads((work / "manifest.json").read_text())
records = [json.loads(l) for l in (work / "spot_bco" / "seed0" / "metrics.jsonl").read_text().splitlines()]
config = json.loads((work / "spot_bco" / "seed0" / "config.json").read_text())
print("stage 04 under accelerate + ZeRO-2 bf16: steps", [r["step"] for r in records if r["kind"] == "train"],
      "effective batch", manifest["counts"]["effective_batch"], "saved dtype", config.get("dtype") or config.get("torch_dtype"))
PY
echo "zero2 check passed"
