"""python -m spotlib.world --profile P [--n N]: pre-train (or reuse) the base model and score it."""
import argparse

from .evaluate import main as evaluate_main

parser = argparse.ArgumentParser(prog="python -m spotlib.world", description=__doc__)
parser.add_argument("--profile", default="tiny")
parser.add_argument("--n", type=int, default=200, help="held-out items per family")
args = parser.parse_args()
evaluate_main([args.profile, "--n", str(args.n)])
