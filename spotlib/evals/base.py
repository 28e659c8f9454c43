"""What a benchmark is: a loader, a prompt builder (inside the loader), a scorer and its k.

Items follow the project's record schema `{id, family, prompt, answer, meta}`; `prompt` is
the user message (the chat template is applied at generation time). A scorer maps one
response to a dict of metrics whose `score` entry is the benchmark's headline number
(1 right, 0 wrong, or a fraction); `aggregate` turns the per-response dicts of one sample
index into the benchmark's numbers (a plain mean unless the benchmark says otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from spotlib.io import DataError, load_data_file

GROUPS = ("in_domain", "ood", "general")


@dataclass(frozen=True)
class Benchmark:
    name: str
    group: str                                  # in_domain | ood | general
    load: Callable[..., list[dict]]             # load(eval_cfg, n, world_cfg) -> items
    score: Callable[[dict, str], dict]          # score(item, response) -> {"score": ..., ...}
    k: int = 1                                  # the paper's avg@k (the profile may override)
    dataset: str = ""                           # public dataset id (documentation and loading)
    score_many: Callable[..., list[dict]] | None = None  # batched scorer (processes), optional
    aggregate: Callable[[list[dict]], dict] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def score_all(self, items: Sequence[dict], responses: Sequence[str], eval_cfg=None) -> list[dict]:
        if self.score_many is not None:
            return self.score_many(items, responses, eval_cfg)
        return [self.score(item, response) for item, response in zip(items, responses)]

    def summarize(self, metrics: list[dict]) -> dict:
        """Numbers of one sample index over all items (fractions in [0, 1])."""
        if self.aggregate is not None:
            return self.aggregate(metrics)
        return mean_metrics(metrics)


def mean_metrics(metrics: list[dict]) -> dict:
    if not metrics:
        return {}
    keys = [k for k, v in metrics[0].items() if isinstance(v, (int, float, bool))]
    return {k: sum(float(m[k]) for m in metrics) / len(metrics) for k in keys}


def setting(table: dict[str, int], name: str, fallback: int) -> int:
    """A per-benchmark value from `{"default": v, name: v}` tables (k, n_items)."""
    if name in table:
        return int(table[name])
    return int(table.get("default", fallback))


def load_rows(dataset: str, config: str | None, split: str, data_file: str | None) -> list[dict]:
    """Rows of a public dataset, or of a local file in the same format (parquet/jsonl/json/csv)."""
    import datasets

    if data_file:
        path = Path(data_file)
        if not path.is_absolute() and not path.exists():  # relative to the repository, not the notebook
            from spotlib.config import REPO_ROOT
            path = REPO_ROOT / path
        if not path.exists():
            raise DataError(f"{path}: data file not found (eval.data_files)")
        rows = load_data_file(path, "eval.data_files")
    else:
        rows = datasets.load_dataset(dataset, config, split=split)
    return [dict(row) for row in rows]


def column(row: dict, name: str, benchmark: str, dataset: str, source: str, index: int, what: str = "") -> Any:
    """Column `name` of a row in `dataset`'s public format; a clear error naming the file, the
    benchmark and the expected column otherwise (empty values count as missing)."""
    if row.get(name) in (None, "", []):
        role = f"{what} of " if what else ""
        raise DataError(f"{source}: benchmark {benchmark}: row {index}: expected column {name!r} "
                        f"({role}{dataset}), found: {', '.join(sorted(row)) or 'none'}")
    return row[name]
