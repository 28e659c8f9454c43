"""What every notebook does first: open the profile, choose the output folder, set progress display.

The notebooks take three papermill parameters:

- `profile_name`: a profile under params/ or a YAML path;
- `output_dir`: where the stages read and write. `""` is the profile's own folder, the study
  that `make reproduce` fills (it passes `""`). `"scratch"` (the notebooks' default, so a run in
  JupyterLab never touches the study) is `outputs/<profile>-scratch/`: on first use it starts as a
  copy of the study's outputs, so finished stages are reused and whatever you change is recomputed
  there. Any other value is a folder of your own, used as is. Whichever it is, the kernel holds
  its output lock (`spotlib.launch.output_lock`) while it lives: a `make reproduce` into the same folder is
  refused, and so is another notebook kernel;
- `progress`: live progress bars. `make reproduce` passes False: an executed notebook stores
  results, not bars frozen at their first frame.
"""
from __future__ import annotations

import os

import shutil
from pathlib import Path

SCRATCH = "scratch"
SCRATCH_COPY_LIMIT_BYTES = 2 * 1024**3  # a tiny study copies in seconds; a paper study does not copy
_NOT_COPIED = ("notebooks", "report.md", "report.html", "report_figures")


def output_folder(study: Path, output_dir: str | None) -> Path:
    """The folder a notebook works in, given the study's folder and the `output_dir` parameter."""
    if not output_dir:
        return study
    if output_dir == SCRATCH:
        return study.with_name(study.name + "-scratch")
    return Path(output_dir).expanduser().resolve()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def seed_scratch(study: Path, scratch: Path) -> bool:
    """Copy the study's outputs into a new scratch folder (never into an existing one)."""
    if scratch.exists() or not study.is_dir():
        return False
    parts = [p for p in study.iterdir() if p.name not in _NOT_COPIED]
    size = sum(_size(p) if p.is_dir() else p.stat().st_size for p in parts)
    if size > SCRATCH_COPY_LIMIT_BYTES:
        raise ValueError(f"output_dir='scratch': the study in {study} holds {size / 1024**3:.1f} GiB, too much "
                         f"to copy; set output_dir='' to work in the study's folder (finished stages are "
                         f"skipped) or output_dir='<folder>' to start a separate study there")
    tmp = scratch.with_name(scratch.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in parts:
        (shutil.copytree if part.is_dir() else shutil.copy2)(part, tmp / part.name)
    tmp.rename(scratch)  # a copy cut short never passes for a finished one
    return True


def quiet_progress() -> None:
    """No progress bars at all: the libraries' own (model loading, hub downloads) and any
    `tqdm.auto` bar created from now on (modules imported afterwards, transformers' loader)."""
    import tqdm.auto
    import tqdm.autonotebook
    from tqdm import std

    class SilentTqdm(std.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = tqdm.autonotebook.tqdm = SilentTqdm
    # Processes the stage starts (torchrun/accelerate relaunches, engine workers) inherit this:
    # transformers and huggingface_hub read it when imported.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def open_profile(profile_name: str, output_dir: str | None = SCRATCH, progress: bool = True):
    """Load the profile for a notebook, pointed at its output folder; safe to call again."""
    from spotlib.config import ConfigError, load_profile

    if not isinstance(profile_name, (str, Path)):
        raise ConfigError(f"profile_name: expected a profile name or a YAML path, got {type(profile_name).__name__}")
    study = load_profile(profile_name).out
    folder = output_folder(study, output_dir)
    if folder != study:
        if output_dir == SCRATCH and seed_scratch(study, folder):
            print(f"scratch folder {folder}: a copy of the study in {study}")
        profile = load_profile(profile_name, overrides={"output_dir": str(folder)})
    else:
        profile = load_profile(profile_name)
    from spotlib.launch.output_lock import hold_for_kernel
    hold_for_kernel(profile.out)   # one writer per folder: a `reproduce` run into it refuses, and so does this
    from spotlib.progress import reporting_to

    if not progress or reporting_to() is not None:  # under `make reproduce`: no widget bar is stored
        quiet_progress()
    print(f"profile {profile.name}: outputs in {profile.out}"
          + ("  (the study's folder)" if folder == study else "  (the study's outputs stay as they are)"))
    return profile
