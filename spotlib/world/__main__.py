"""python -m spotlib.world --profile P [--n N]: pre-train (or reuse) the base model and score it."""
import argparse
import json
import sys

from spotlib import precision
from spotlib.config import load_profile
from spotlib.models import load_model

from .evaluate import score_model, style_nll
from .edit import is_oracle_worded
from .pretrain import ensure_base_model


def oracle_worded_share(samples) -> float:
    return sum(is_oracle_worded(text) for _, text in samples) / max(1, len(samples))


parser = argparse.ArgumentParser(prog="python -m spotlib.world", description=__doc__)
parser.add_argument("--profile", default="tiny")
parser.add_argument("--n", type=int, default=200, help="held-out items per family")
args = parser.parse_args()
profile = load_profile(args.profile)
precision.run_on_kernels(profile.world.cpu_kernels, "spotlib.world", sys.argv[1:])   # scores too, on them
model, tokenizer = load_model(ensure_base_model(profile), device="cpu")
report = {}
for t in (0.0, 0.7):
    report[f"T={t}"], answers = score_model(model, tokenizer, args.n, t, seed=0, world_cfg=profile.world,
                                            max_new_tokens=profile.world.eval_max_new_tokens, return_samples=True)
report["nll_nats_per_token"] = style_nll(model, tokenizer, world_cfg=profile.world)
if profile.world.oracle_style_prefix:
    # Can the student compute in the oracle's wording? Arithmetic asked in the context where the
    # corpus writes that wording (the share of answers in it, and their accuracy).
    scores, samples = score_model(model, tokenizer, args.n, 0.7, seed=0, world_cfg=profile.world,
                                  families=("arith",), max_new_tokens=profile.world.eval_max_new_tokens,
                                  return_samples=True, prompt_prefix=profile.world.oracle_style_prefix)
    report["arith_after_oracle_prefix_T=0.7"] = {"accuracy": scores["arith"],
                                                 "oracle_worded_share": oracle_worded_share(samples["arith"])}
    # ... and whether a plain prompt still gets the student's own wording (the Oracle stays off-policy)
    report["arith_T=0.7_oracle_worded_share"] = oracle_worded_share(answers["arith"])   # T 0.7's
print(json.dumps(report, indent=1))
