"""Run the study's notebooks in order with papermill: `python -m spotlib.reproduce --profile P`.

Each notebook is executed into outputs/<profile>/notebooks/. Stages skip work whose
inputs and params are unchanged (their manifests), so a re-run is cheap and a crashed
run resumes. A failing stage stops the run and names its executed notebook.

One run at a time per output folder: a lock file (`.reproduce.lock`, held with
`fcntl.flock`, released by the OS when its process dies) names the holder's PID, host
and start time; notebooks opened by hand take the same lock (`spotlib.launch.output_lock`).
Ctrl-C, SIGINT or SIGTERM to the runner (passed on to the kernel and what it started), a
full disk or a dead kernel end with one line saying what was kept (`spotlib.launch.job_control`).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from spotlib.config import REPO_ROOT, ConfigError, load_profile
from spotlib.launch.output_lock import LOCK_NAME, OutputLocked, output_lock  # noqa: F401 - re-exported
from spotlib.stages import STAGES, Stage
from spotlib.plan.validate import cuda_devices, validate

NOTEBOOKS = REPO_ROOT / "notebooks"


def available_stages() -> list[Stage]:
    """The stages whose notebook exists, in order."""
    return [s for s in STAGES if (NOTEBOOKS / s.notebook).is_file()]


def pick_profile(requested: str) -> str:
    if requested != "auto":
        return requested
    chosen = "paper" if cuda_devices() > 0 else "tiny"
    print(f"PROFILE=auto: {cuda_devices()} CUDA GPU(s) visible -> profile '{chosen}'")
    return chosen


def select(stages: list[Stage], wanted: list[str] | None) -> list[Stage]:
    if not wanted:
        return stages
    by_key = {}
    for s in stages:
        by_key[s.name] = s
        by_key[s.name[:2]] = s
        by_key[s.name[3:]] = s
    unknown = [w for w in wanted if w not in by_key]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)} "
                          f"(available: {', '.join(s.name for s in stages)})")
    chosen = {by_key[w].name for w in wanted}
    return [s for s in stages if s.name in chosen]


def world_student_origin(profile) -> str:
    """Where a world profile's base model comes from: the repository's shipped copy when one matches the
    world hash and is intact (`spotlib.world.shipped`), else pre-training on first use."""
    if profile.model.name_or_path != "world":
        return ""
    from spotlib.world.shipped import shipped_for

    source, _ = shipped_for(profile.world)
    if source is not None:
        return f"  (the world's base model: the shipped copy {source.relative_to(REPO_ROOT)}/, no pre-training)"
    return "  (the world's base model, pre-trained here on first use)"


def plan(profile, stages: list[Stage]) -> str:
    lines = [
        f"profile      {profile.name}  ({profile.source})",
        f"outputs      {profile.out}",
        f"student      {profile.model.name_or_path}" + world_student_origin(profile),
        f"problems     {profile.sample.dataset}"
        + (f" [{profile.sample.dataset_config}/{profile.sample.dataset_split}]" if profile.sample.dataset != "world" else "")
        + f", {profile.sample.num_problems} problems x {profile.sample.n} sample(s)",
        f"oracle       {profile.oracle.kind}: {profile.oracle.model}"
        + (f" at {profile.oracle.base_url}" if profile.oracle.base_url else "")
        + (f" (key from ${profile.oracle.api_key_env})" if profile.oracle.api_key_env else ""),
        f"methods      {', '.join(profile.train.methods)}"
        + (f"; ablations {', '.join(profile.train.ablations)}" if profile.train.ablations else ""),
        f"seeds        {profile.seeds}",
        f"benchmarks   {', '.join(profile.eval.benchmarks)}",
        f"GPUs         {cuda_devices()} CUDA device(s) visible",
        "stages:",
    ]
    for s in stages:
        lines.append(f"  {s.name:<20} {s.notebook:<26} -> {profile.out / s.name}/  ({s.produces})")
    lines.append(f"  report               -> {profile.out / 'report.md'}")
    return "\n".join(lines)


def memory_plan_and_preflight(profile, args) -> tuple[str, list[str], bool]:
    """The memory/time plan's text, the preflight's failures, and whether the plan fits.
    CPU profiles (hardware.gpus 0) have neither."""
    from spotlib.plan.memory import build_plan, format_plan
    from spotlib.plan.preflight import preflight

    if args.gpus is not None or args.gpu_memory_gib is not None:
        changes = {k: v for k, v in (("gpus", args.gpus), ("gpu_memory_gib", args.gpu_memory_gib)) if v is not None}
        profile = profile.replace(hardware=dataclasses.replace(profile.hardware, **changes))
    if profile.hardware.gpus <= 0:
        return "", [], True
    from spotlib.launch.nodes import for_nodes
    from spotlib.launch.relaunch import multi_node_text

    memory = build_plan(for_nodes(profile))  # on several nodes: the batch kept, or a clear refusal
    text = format_plan(memory) + multi_node_text(profile)
    return text, preflight(profile, memory), memory.fits


def run_stage(profile_arg: str, profile, stage: Stage, kernel: str, stops=None) -> float:
    """Execute one stage's notebook; meanwhile print the progress its code reports. A stop request
    (`job_control.StopRequests`) is passed on to the kernel and what it started."""
    import papermill

    from spotlib.launch import job_control

    out_nb = profile.out / "notebooks" / stage.notebook
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    partial = out_nb.with_name(f".{out_nb.stem}.partial.ipynb")   # a notebook cut short never replaces one

    def execute():
        job_control.execute_notebook(str(NOTEBOOKS / stage.notebook), str(partial),
                                     parameters={"profile_name": profile_arg, "output_dir": ""},
                                     kernel_name=kernel, cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)

    started = time.perf_counter()
    try:
        with stage_progress(profile.out / stage.name / "progress.jsonl", stage.name):
            job_control.run_stoppable(execute, stops or job_control.StopRequests())
    except papermill.PapermillExecutionError as exc:
        if exc.ename == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        if job_control.disk_full(text=f"{exc.ename}: {exc.evalue}"):
            raise StageFailed(disk_full_message(profile, stage)) from None
        raise StageFailed(f"stage {stage.name} failed: {exc.ename}: {exc.evalue}\n"
                          f"  see the executed notebook: {out_nb}") from None
    except Exception as exc:  # noqa: BLE001 - nbclient's DeadKernelError and kin: the kernel is gone
        if job_control.disk_full(exc):
            raise StageFailed(disk_full_message(profile, stage)) from None
        if type(exc).__name__ != "DeadKernelError":
            raise
        raise StageFailed(f"stage {stage.name}: its kernel died (out of memory, or killed); the work it had "
                          f"finished is kept: run the same command again to resume "
                          f"(executed notebook: {out_nb})") from None
    finally:
        _keep_executed(partial, out_nb)
    return time.perf_counter() - started


def disk_full_message(profile, stage: Stage | None) -> str:
    where = f"stage {stage.name}" if stage else "the run"
    return (f"{where}: the disk is full (no space left on device under {profile.out}); the work finished so far "
            f"is kept: free some space (or set output_dir to a larger disk) and run the same command again")


def _keep_executed(partial: Path, out_nb: Path) -> None:
    """The executed notebook replaces the last one only when whole (a full disk can cut it short)."""
    if not partial.exists():
        return
    try:
        json.loads(partial.read_text(encoding="utf-8"))
        os.replace(partial, out_nb)
    except (OSError, ValueError):
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_progress(path: Path, stage_name: str):
    """Point the kernel (and its worker processes) at a fresh progress file and follow it."""
    from spotlib import progress

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    before = os.environ.get(progress.ENV_FILE)
    os.environ[progress.ENV_FILE] = str(path)
    try:
        with progress.follow(path, stage_name):
            yield
    finally:
        if before is None:
            os.environ.pop(progress.ENV_FILE, None)
        else:
            os.environ[progress.ENV_FILE] = before


class StageFailed(RuntimeError):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotlib.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="auto", help="auto, a name under params/, or a YAML path")
    parser.add_argument("--stages", nargs="*", help="subset to run, e.g. 01 02 or 01_sample")
    parser.add_argument("--dry-run", action="store_true", help="validate the profile and print the plan")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel for papermill")
    parser.add_argument("--skip-preflight", action="store_true",
                        help="start a GPU profile even when its preflight checks fail (experts)")
    parser.add_argument("--gpus", type=int, help="plan for this many GPUs instead of hardware.gpus (with --dry-run)")
    parser.add_argument("--nodes", type=int, help="run on this many nodes instead of hardware.nodes "
                                                  "(each node: SPOT_NODE_RANK, SPOT_MAIN_ADDRESS; docs/multi-node.md)")
    parser.add_argument("--kernel-env", action="store_true",
                        help="print the profile's CPU-kernel environment as NAME=VALUE words and exit (make lab)")
    parser.add_argument("--gpu-memory-gib", type=float,
                        help="plan for this much memory per GPU instead of hardware.gpu_memory_gib (with --dry-run)")
    args = parser.parse_args(argv)
    if args.kernel_env:
        return _print_kernel_env(args.profile)
    try:
        name = pick_profile(args.profile)
        profile_arg = str(Path(name).resolve()) if name.endswith((".yaml", ".yml")) else name
        if args.nodes:  # every stage's kernel (and what it launches) runs on this many nodes
            os.environ["SPOT_NODES"] = str(args.nodes)
        profile = load_profile(profile_arg, overrides={"hardware.nodes": args.nodes}) if args.nodes \
            else load_profile(profile_arg)
        stages = select(available_stages(), args.stages)
        problems = validate(profile, [s.name for s in stages])
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(plan(profile, stages))
    try:
        memory_text, failures, fits = memory_plan_and_preflight(profile, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if memory_text:
        print(memory_text)
    if failures:
        print(f"preflight: {len(failures)} problem(s)" + (" (ignored: --skip-preflight)" if args.skip_preflight else ""))
        print("\n".join(f"  - {line}" for line in failures))
    for problem in problems:
        print(f"not ready: {problem}", file=sys.stderr if not args.dry_run else sys.stdout)
    if args.dry_run:  # the plan is printed, whether or not it fits: the run itself refuses
        return 0
    if problems:
        print(f"error: {len(problems)} problem(s) above must be fixed before this run can start", file=sys.stderr)
        return 2
    if failures and not args.skip_preflight:
        print(f"error: profile {profile.name} cannot start: fix the preflight problems above "
              f"(or pass --skip-preflight)", file=sys.stderr)
        return 1
    from spotlib import precision
    try:   # every stage (and the workers it starts) computes on the profile's CPU kernels
        os.environ.update(precision.kernel_env(profile.world.cpu_kernels))
    except precision.KernelsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from spotlib.launch import job_control
    try:
        node = _node_ready(profile)
        lock_name = LOCK_NAME if node is None else f".reproduce-node{node.rank}.lock"
        with output_lock(profile.out, name=lock_name), job_control.StopRequests() as stops:
            if node is not None and node.rank > 0:  # this node joins the training of stages 04 and 06
                from spotlib.launch.nodes import follow_node0
                follow_node0(profile, node, [s.name for s in stages], join_stage)
                return 0
            return _run_stages(profile_arg, profile, stages, args.kernel, stops)
    except OutputLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:   # writing the report or the timings
        if not job_control.disk_full(exc):
            raise
        print(f"error: {disk_full_message(profile, None)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # between stages or while writing the report
        print("\ninterrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
        return 130


def _node_ready(profile):
    """On several nodes: this node's place, once every node sees the same outputs folder."""
    from spotlib.launch.relaunch import profile_nodes
    from spotlib.launch.nodes import check_shared_outputs, node_count

    if node_count(profile) <= 1:
        return None

    from spotlib.launch.nodes import clear_stage_markers

    node = profile_nodes(profile)
    if node.rank == 0:
        clear_stage_markers(profile.out)
    check_shared_outputs(profile.out, node)
    return node


def _print_kernel_env(profile_arg: str) -> int:
    """`make lab` starts JupyterLab with these, so its notebook kernels compute as `make reproduce` does."""
    from spotlib import precision
    try:
        level = load_profile(pick_profile(profile_arg)).world.cpu_kernels
        print(" ".join(f"{name}={value}" for name, value in precision.kernel_env(level).items()))
    except precision.KernelsUnavailable as exc:
        print(f"warning: {exc}", file=sys.stderr)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def join_stage(profile, stage: str) -> None:
    """A node other than 0 joins the launch of a distributed stage node 0 started."""
    if stage == "04_train_spot":
        from spotlib.stages import train_methods

        train_methods.run(profile, progress=False)
    else:
        from spotlib.stages import rl_init

        rl_init.relaunch(profile, rl_init.num_processes(profile))


def _run_stages(profile_arg: str, profile, stages: list[Stage], kernel: str, stops=None) -> int:
    from spotlib.launch.job_control import Stopped

    timings: dict[str, float] = {}
    from spotlib.launch.nodes import mark_stage_started, node_count

    for stage in stages:
        print(f"\n== {stage.name} ==", flush=True)
        if node_count(profile) > 1:  # the other nodes join this stage's launch now
            mark_stage_started(profile.out, stage.name)
        try:
            if stops is not None and stops.requested:
                raise Stopped(stops.requested)
            seconds = run_stage(profile_arg, profile, stage, kernel, stops)
        except StageFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Stopped as exc:
            kept = ", ".join(timings) or "none"
            print(f"\nstopped by {exc.signame} in stage {stage.name}: the job is stopped; finished stages are kept "
                  f"({kept}), and so is the work {stage.name} had saved; run the same command again to resume",
                  file=sys.stderr)
            return 130 if exc.signame == "SIGINT" else 143
        except KeyboardInterrupt:
            kept = ", ".join(timings) or "none"
            print(f"\ninterrupted in stage {stage.name}: finished stages kept ({kept}), and so is the work "
                  f"{stage.name} had saved; run the same command again to resume", file=sys.stderr)
            return 130
        timings[stage.name] = round(seconds, 1)
        print(f"   done in {seconds:.1f} s -> {profile.out / 'notebooks' / stage.notebook}", flush=True)
    try:
        from spotlib.report.build import build_report
    except ImportError:
        build_report = None
    if build_report is not None and stages:
        report = build_report(profile)
        print(f"\nreport: {report}")
    (profile.out / "reproduce_timings.json").write_text(json.dumps(timings, indent=2))
    print(f"total {sum(timings.values()):.1f} s: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
