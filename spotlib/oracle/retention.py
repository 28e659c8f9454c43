"""The retention points of a profile's Oracle: how many of its pairs lie within change ratio 0.5 and 0.7.

The paper's Oracle (Appendix G): of 6,171 rectified errors, 1,998 pass at R ≤ 0.5 and 3,646 at
R ≤ 0.7. `retention` runs the profile's programmatic Oracle on wrong answers as stages 02-03 see
them (stage 01's errors, or corpus-style slips of the tiny world before a base model exists) and
reports its success rate, the share of successes holding a wrong step, and both retention points.

    python -m spotlib.oracle.retention --profile tiny [--errors FILE] [-n 2000] [--set oracle.restart_rate=0.6 ...]
"""
from __future__ import annotations

from spotlib.world.oracle_rewrite import OracleBehaviour, synthetic_errors

PAPER_RETENTION = {"0.5": 1998 / 6171, "0.7": 3646 / 6171}   # 32.4% and 59.1%


def retention(profile, errors: list[dict], tokenizer) -> dict:
    """The profile's Oracle on `errors` as stage 02-03 see it: its success rate (a reply whose final answer
    is right), the share of successes holding a wrong step, and the share of successes within change
    ratio 0.5 and 0.7 (tokens), against the paper's."""
    from spotlib import proximity
    from spotlib.oracle.programmatic import ProgrammaticOracle
    from spotlib.world.edit import parse_solution, wrong_steps
    from spotlib.world.scoring import score

    oracle = ProgrammaticOracle(profile.seed, OracleBehaviour.from_config(profile.oracle))
    ratios, wrong, did = [], 0, {}
    for r in errors:
        result = oracle.fix(r, r["response"])
        step = (result.info or {}).get("beyond_minimal", {})
        key = f"{step.get('rewrite', 'none')}/{step.get('slip', 'none')}/{result.mode}"
        did[key] = did.get(key, 0) + 1
        if result.text is None or not score(r, result.text):
            continue
        wrong += bool(wrong_steps(r, parse_solution(result.text)))
        units = [proximity.to_units(t, "tokens", tokenizer) for t in (r["response"], result.text)]
        ratios.append(proximity.change_ratio(*units))
    n = len(ratios)
    within = {g: (sum(x <= float(g) + 1e-12 for x in ratios) / n if n else None) for g in PAPER_RETENTION}
    return {"errors": len(errors), "verified": n, "success_rate": n / len(errors) if errors else None,
            "wrong_step_rate": wrong / n if n else None, "within": within, "paper": PAPER_RETENTION,
            "median_change_ratio": proximity.summary(ratios)["median"] if ratios else None, "did": did}


def oracle_overrides(pairs: list[str], parser) -> dict:
    """`oracle.KEY=VALUE` strings as profile overrides (values read as YAML scalars); other keys are refused:
    the retention points depend on the Oracle's settings and the errors, nothing else of the profile."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("oracle."):
            parser.error(f"--set {pair!r}: expected oracle.KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv=None) -> None:
    """python -m spotlib.oracle.retention --profile P [--errors FILE] [-n N]: the Oracle's retention points."""
    import argparse
    import json

    from spotlib.config import load_profile
    from spotlib.io import read_jsonl

    parser = argparse.ArgumentParser(description="the profile's Oracle: success, wrong steps, change ratios")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--errors", help="stage 01's errors.jsonl (default: the profile's, else synthetic slips)")
    parser.add_argument("-n", type=int, default=2000, help="synthetic errors when there are no stage-01 errors")
    parser.add_argument("--set", action="append", default=[], metavar="oracle.KEY=VALUE",
                        help="another value of one of the Oracle's settings (repeatable), e.g. oracle.restart_rate=0.6")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile, overrides=oracle_overrides(args.set, parser))
    path = args.errors or profile.out / "01_sample" / "errors.jsonl"
    from pathlib import Path
    if Path(path).is_file():
        errors, source = [r for r in read_jsonl(path) if r.get("family") in ("arith", "arith_ood")], str(path)
    else:
        errors, source = synthetic_errors(profile.world, args.n, profile.seed), "synthetic slips (no stage-01 errors)"
    base = profile.base_model_path()
    if (base / "tokenizer.json").is_file():
        from spotlib.models import load_tokenizer
        tokenizer = load_tokenizer(base)
    else:
        from spotlib.world.tokenizer import build_tokenizer
        tokenizer = build_tokenizer(profile.world)
    print(json.dumps({"profile": profile.name, "errors_from": source, **retention(profile, errors, tokenizer)},
                     indent=2))


if __name__ == "__main__":
    main()
