"""The `spotlib` command (pip's console script): the make targets' commands, for an installed package.

    spotlib reproduce --profile tiny        make reproduce PROFILE=tiny
    spotlib dry-run --profile paper         make dry-run PROFILE=paper
    spotlib base-model                      make base-model (pre-train again, compare with the shipped model)
    spotlib calibrate                       make calibrate
    spotlib sweep --profile tiny            make sweep
    spotlib tensorboard [--profile tiny]    make tensorboard

Each command calls the `main` the make target runs (`python -m <module>`) with the same arguments.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# command -> (module whose main() it runs, arguments put first, what it does)
COMMANDS = {
    "reproduce": ("spotlib.reproduce", [], "run the whole study for a profile into outputs/<profile>/"),
    "dry-run": ("spotlib.reproduce", ["--dry-run"], "validate a profile, print its memory/time plan and preflight"),
    "base-model": ("spotlib.world.__main__", ["--rebuild"],
                   "pre-train the tiny base model again, compare it with the shipped one bit for bit, score it"),
    "calibrate": ("spotlib.analysis.calibrate", [], "is the tiny world one where the paper's premise can occur?"),
    "sweep": ("spotlib.stages.sweep", [], "learning-rate sweep: chosen LR per method + trade-off frontier"),
    "tensorboard": ("spotlib.cli", [], "TensorBoard on the training curves of every profile (or --profile's)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: spotlib <command> [arguments]  (spotlib <command> --help for its arguments)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"spotlib: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, first, _ = COMMANDS[command]
    target = tensorboard_main if module == __name__ else importlib.import_module(module).main
    # Commands that restart themselves on the profile's CPU kernels re-run `python -m <module>` with
    # sys.argv[1:]: make that this command's arguments, not `<command> ...`.
    sys.argv = [f"spotlib {command}", *first, *rest]
    code = target([*first, *rest])
    return int(code or 0)


def tensorboard_dirs(profile_arg: str | None) -> dict[str, Path]:
    """name -> TensorBoard folder: the profile's, or every profile's under outputs/ that has one."""
    from spotlib.config import REPO_ROOT, load_profile
    from spotlib.train.tracking import TENSORBOARD_DIR

    if profile_arg and profile_arg != "auto":
        profile = load_profile(profile_arg)
        return {profile.name: profile.out / TENSORBOARD_DIR}
    return {p.parent.name: p for p in sorted((REPO_ROOT / "outputs").glob(f"*/{TENSORBOARD_DIR}")) if p.is_dir()}


def tensorboard_command(dirs: dict[str, Path], port: int | None = None) -> list[str]:
    """TensorBoard on `dirs`, each profile a group of runs (`tiny/04_train_spot/sft/seed0`)."""
    spec = ",".join(f"{name}:{path}" for name, path in dirs.items())
    return [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec, *(["--port", str(port)] if port else [])]


def tensorboard_main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="spotlib tensorboard", description="TensorBoard on the training curves")
    parser.add_argument("--profile", default="auto", help="a profile (its output folder), or auto: every profile")
    parser.add_argument("--port", type=int, help="TensorBoard's port (default 6006)")
    args = parser.parse_args(argv)
    dirs = tensorboard_dirs(args.profile)
    missing = [str(p) for p in dirs.values() if not p.is_dir()]
    if not dirs or missing:
        print(f"error: no training curves yet ({', '.join(missing) or 'outputs/*/tensorboard'}): stage 04 and "
              f"stage 06 write them while they train (train.report_to: tensorboard)", file=sys.stderr)
        return 2
    command = tensorboard_command(dirs, args.port)
    print(" ".join(command), flush=True)
    os.execv(command[0], command)
    return 0   # not reached


if __name__ == "__main__":
    sys.exit(main())
