"""python -m spotlib.world --profile P [--n N] [--rebuild [--ship NAME]]: the base model and its scores.

Without --rebuild: the profile's base model as the study gets it (its cache, the repository's shipped
copy, else pre-trained), scored on held-out items. With --rebuild: pre-trained from scratch whatever
is cached or shipped, then compared with the shipped copy bit for bit (exit status 1 when they
differ). --ship NAME copies the base model (the rebuilt one with --rebuild, else the cached one) into
assets/NAME/, refreshing what the repository ships.
"""
import argparse
import json
import shutil
import sys

from spotlib import precision
from spotlib.config import load_profile
from spotlib.models import load_model

from .edit import is_oracle_worded
from .evaluate import score_model, style_nll
from .pretrain import build_base_model, ensure_base_model
from .shipped import compare_with_shipped, digests, ship


def oracle_worded_share(samples) -> float:
    return sum(is_oracle_worded(text) for _, text in samples) / max(1, len(samples))


def rebuild(profile) -> tuple[bool | None, str]:
    """Pre-train the profile's base model from scratch into its folder (built aside, then swapped in);
    returns `compare_with_shipped`'s verdict."""
    out = profile.base_model_path()
    fresh = out.with_name(f".{out.name}.rebuild")
    shutil.rmtree(fresh, ignore_errors=True)
    build_base_model(profile.world, fresh)
    same, verdict = compare_with_shipped(fresh, profile.world)
    shutil.rmtree(out, ignore_errors=True)
    fresh.rename(out)
    return same, verdict


def report(model, tokenizer, profile, n: int) -> dict:
    """Held-out scores at T 0 and 0.7, NLL per style and (with an oracle prefix) the wording checks."""
    result = {}
    for t in (0.0, 0.7):
        result[f"T={t}"], answers = score_model(model, tokenizer, n, t, seed=0, world_cfg=profile.world,
                                                max_new_tokens=profile.world.eval_max_new_tokens, return_samples=True)
    result["nll_nats_per_token"] = style_nll(model, tokenizer, world_cfg=profile.world)
    if profile.world.oracle_style_prefix:
        # Can the student compute in the oracle's wording? Arithmetic asked in the context where the
        # corpus writes that wording (the share of answers in it, and their accuracy).
        scores, samples = score_model(model, tokenizer, n, 0.7, seed=0, world_cfg=profile.world,
                                      families=("arith",), max_new_tokens=profile.world.eval_max_new_tokens,
                                      return_samples=True, prompt_prefix=profile.world.oracle_style_prefix)
        result["arith_after_oracle_prefix_T=0.7"] = {"accuracy": scores["arith"],
                                                     "oracle_worded_share": oracle_worded_share(samples["arith"])}
        # ... and whether a plain prompt still gets the student's own wording (the Oracle stays off-policy)
        result["arith_T=0.7_oracle_worded_share"] = oracle_worded_share(answers["arith"])   # T 0.7's
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlib.world", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--n", type=int, default=200, help="held-out items per family")
    parser.add_argument("--rebuild", action="store_true",
                        help="pre-train from scratch and compare with the shipped base model bit for bit")
    parser.add_argument("--ship", metavar="NAME", help="copy the base model into assets/NAME/ (the shipped copy)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    precision.run_on_kernels(profile.world.cpu_kernels, "spotlib.world", argv)   # scores too, on them
    same, verdict = None, None
    if args.rebuild:
        same, verdict = rebuild(profile)
        print(verdict, flush=True)
    path = ensure_base_model(profile)
    if args.ship:
        print(f"shipped: {ship(path, args.ship)}", flush=True)
    model, tokenizer = load_model(path, device="cpu")
    result = report(model, tokenizer, profile, args.n)
    result["digests"] = digests(path)   # weights_sha256 as manifests record it; each weight file's sha256
    print(json.dumps(result, indent=1))
    if verdict:
        print(verdict)
    return 1 if same is False and not args.ship else 0


if __name__ == "__main__":
    sys.exit(main())
