"""Model cards: a `README.md` in the Hugging Face format beside every checkpoint the study saves.

The card's YAML metadata holds `base_model`, `library_name`, `pipeline_tag` and `tags` (what the
Hub reads) and, under `spotlib`, every fact the card shows: profile, run, seed, method and its
settings, the data (each file under the output folder, its sha256 and the examples used), steps,
the weights' `weights_sha256` and, once evaluated, the scores. The markdown body is rendered from
that block alone, so a later stage adds its scores by loading the card, setting them and writing
it again (`add_scores`); a card rewritten for the same weights keeps the scores it had.

Written by stage 04 (each run and the tether lesson's run) and stage 06 (each GRPO run's
`final/`); stage 05 adds each stage-04 model's scores, stage 06 its models' Table 4 rows. The
card describes a model and computes nothing: hashes of a model folder leave it out.
"""
from __future__ import annotations

from pathlib import Path

CARD = "README.md"

METHOD_TEXT = {
    "sft": "supervised fine-tuning on the Oracle's direct solutions",
    "rft": "rejection-sampling fine-tuning on the student's own correct samples",
    "sft_plus": "supervised fine-tuning on the Oracle's minimal edits of the student's wrong answers (SFT+)",
    "kl_sft": "SFT+ with a token-level KL penalty against the start model",
    "reward_sft": "SFT+ through the implicit reward β·log(π/π_ref) of the edited answer",
    "dpo": "DPO on (edited, wrong) answer pairs",
    "spot_bce": "SPoT's reward-based binary cross-entropy on (edited, wrong) pairs, no δ",
    "spot_bco": "SPoT's reward-based binary cross-entropy with the running reward mean δ (BCO) on (edited, wrong) pairs",
    "grpo": "GRPO (group-relative policy optimisation) with a k3 KL to its start model",
}


def base_model_label(profile, path) -> str:
    """What `base_model` names: a Hub id as the profile gives it, else the model's folder relative to
    the profile's output folder (`base_model`, `04_train_spot/spot_bco/seed0`): no machine's paths."""
    text = str(path)
    local = Path(text)
    if not local.exists():
        return text   # a Hub id (Qwen/Qwen3-8B)
    try:
        return local.resolve().relative_to(profile.out.resolve()).as_posix()
    except ValueError:
        return local.name


def load_facts(model_dir: Path) -> dict | None:
    """The card's metadata (None without a card, or one that does not parse)."""
    from huggingface_hub import ModelCard

    path = Path(model_dir) / CARD
    if not path.is_file():
        return None
    try:
        return ModelCard.load(path).data.to_dict()
    except Exception:   # noqa: BLE001 - a card edited by hand into something else: written anew
        return None


def write_card(model_dir: Path, metadata: dict) -> Path:
    """Write `model_dir/README.md` from `metadata` (Hub keys and the `spotlib` block). Scores of a
    card already there for the same weights are kept when `metadata` brings none."""
    from huggingface_hub import ModelCard, ModelCardData

    facts = metadata["spotlib"]
    old = load_facts(model_dir)
    if "scores" not in facts and old and old.get("spotlib", {}).get("weights_sha256") == facts.get("weights_sha256"):
        for key in ("scores", "scores_from"):
            if key in old["spotlib"]:
                facts[key] = old["spotlib"][key]
    data = ModelCardData(**metadata)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{render(metadata)}")
    path = Path(model_dir) / CARD
    tmp = path.with_name(f".{CARD}.tmp")
    card.save(tmp)
    tmp.replace(path)
    return path


def add_scores(model_dir: Path, scores: dict[str, float], source: str) -> bool:
    """Put `scores` (name -> %) into the model's card; False when the model has no card."""
    metadata = load_facts(model_dir)
    if metadata is None or "spotlib" not in metadata:
        return False
    metadata["spotlib"]["scores"] = {k: round(float(v), 2) for k, v in scores.items()}
    metadata["spotlib"]["scores_from"] = source
    write_card(model_dir, metadata)
    return True


def render(metadata: dict) -> str:
    """The card's markdown body, from its metadata."""
    f = metadata["spotlib"]
    what = METHOD_TEXT.get(f["method"], f["method"])
    lines = [f"# spotlib · {f['profile']} · {f['run']} · seed {f['seed']}", "",
             f"A checkpoint of the spotlib study (profile `{f['profile']}`): **{f['run']}**, {what}, trained by "
             f"stage `{f['stage']}` from `{metadata.get('base_model')}`"
             + (f" (files' hash `{f['base_model_hash'][:16]}…`)." if f.get("base_model_hash") else "."), "",
             "## Training", "", "| setting | value |", "|---|---|",
             f"| method | `{f['method']}` (objective `{f.get('objective', f['method'])}`) |"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in f.get("settings", {}).items()]
    lines += [f"| steps | {f['steps']} |", f"| seed | {f['seed']} |", "", "## Data", ""]
    data = f.get("data", [])
    if data:
        lines += ["| file (under the output folder) | examples used | sha256 |", "|---|---|---|"]
        lines += [f"| `{d['file']}` | {d.get('examples', '')} | `{d.get('sha256', '')}` |" for d in data]
    else:
        lines.append("(no data files)")
    lines += ["", "## Evaluation", ""]
    scores = f.get("scores")
    if scores:
        lines += [f"Scores (%) from {f.get('scores_from', 'evaluation')}:", "", "| benchmark | score |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in scores.items()]
    else:
        lines.append("Not evaluated yet: stage 05 (stage 06 for GRPO models) writes the scores here.")
    lines += ["", "## Files", "",
              f"`weights_sha256` (spotlib.io.weights_sha256 over config.json and the weight files): "
              f"`{f.get('weights_sha256', '?')}`.", "",
              "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")",
              "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")", "```", ""]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return f"`{value}`"
    return str(value)


def _metadata(profile, facts: dict, base_path, base_hash: str | None, tags: list[str]) -> dict:
    if base_hash:   # the start model's identity as the stage keyed it (not hashed again: 16 GB at 8B)
        facts["base_model_hash"] = base_hash
    return {"base_model": base_model_label(profile, base_path), "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["spotlib", "surgical-post-training", *tags, f"profile-{profile.name}"], "spotlib": facts}


def training_card(profile, plan, run_spec, seed: int, run_dir: Path, summary: dict, train_cfg=None,
                  run_name: str | None = None) -> Path:
    """The card of a stage-04 run (`train_run`'s summary, `plan` the stage's `StagePlan`), the tether
    lesson's run included (its own `train_cfg` and `run_name`)."""
    from spotlib.train.runspec import DATA_FILES, PAIRS_FILE

    cfg = train_cfg or profile.train
    n_examples, effective_batch, inputs_hash = plan.n, plan.effective, plan.inputs_hash
    files = [PAIRS_FILE] if run_spec.info.pairs else [DATA_FILES[run_spec.data]]
    if run_spec.info.pairs and run_spec.data == "direct":
        files.append(DATA_FILES["direct"])
    settings = {"data": run_spec.data, "learning rate": summary.get("lr"), "β": cfg.beta}
    if run_spec.objective == "bco":
        settings["δ mode"] = run_spec.delta_mode
    if run_spec.objective == "kl_sft":
        settings["KL coefficient"] = cfg.kl_coef
    if run_spec.options:
        settings["options"] = "+".join(run_spec.options)
    settings.update({"effective batch": effective_batch, "examples": n_examples, "epochs": cfg.epochs,
                     "warmup ratio": cfg.warmup_ratio, "weight decay": cfg.weight_decay,
                     "max grad norm": cfg.max_grad_norm, "max length": cfg.max_len,
                     "completion format": cfg.completion_format,
                     "precision": "bf16 autocast" if cfg.bf16_autocast else ("bf16" if cfg.bf16 else "fp32")})
    facts = {"profile": profile.name, "stage": "04_train_spot", "run": run_name or run_spec.name, "seed": seed,
             "method": run_spec.method, "objective": run_spec.objective, "settings": settings,
             "data": [{"file": f"03_filter/{f}", "sha256": inputs_hash.get(f, ""), "examples": n_examples}
                      for f in files],
             "steps": summary.get("steps"), "weights_sha256": summary.get("weights_sha256"),
             "final_loss": (summary.get("final") or {}).get("loss")}
    return write_card(run_dir, _metadata(profile, facts, plan.base_path, plan.inputs_hash.get("base_model"),
                                         [run_spec.method]))


def grpo_card(profile, method: str, start, final_dir: Path, *, steps: int, n_prompts: int,
              prompts_hash: str, start_hash: str | None = None) -> Path:
    """The card of a stage-06 GRPO run's final model (`method`: the start, base or a stage-04 run)."""
    from spotlib.io import weights_sha256

    cfg = profile.rl
    settings = {"start": method, "learning rate": cfg.lr, "KL coefficient": cfg.kl_coef, "clip ε": cfg.clip_eps,
                "rollouts per prompt": cfg.rollouts_per_prompt, "prompts per step": cfg.prompts_per_step,
                "mini-batch (prompts)": cfg.mini_batch, "PPO epochs": cfg.ppo_epochs,
                "temperature": cfg.temperature, "max new tokens": cfg.max_new_tokens,
                "precision": "bf16 autocast" if cfg.bf16_autocast else "fp32 (bf16 under DeepSpeed)"}
    facts = {"profile": profile.name, "stage": "06_rl_init", "run": f"{method}+grpo", "seed": profile.seeds[0],
             "method": "grpo", "objective": "grpo", "settings": settings,
             "data": [{"file": f"RL prompts ({profile.sample.dataset})", "sha256": prompts_hash,
                       "examples": n_prompts}],
             "steps": steps, "weights_sha256": weights_sha256(final_dir)}
    return write_card(final_dir, _metadata(profile, facts, start, start_hash, ["grpo", f"from-{method}"]))


def add_evaluation_scores(entries: list[dict], rows: list[dict], benchmarks: list[str]) -> int:
    """Stage 05: each evaluated model's scores (benchmarks, group means, overall; %) into its card.
    Returns how many cards took them (the base model has none)."""
    import math

    from spotlib.evals import GROUPS

    paths = {e["model"]: e["path"] for e in entries}
    written = 0
    for row in rows:
        scores = {k: row[k] for k in [*benchmarks, *GROUPS, "overall"]
                  if isinstance(row.get(k), (int, float)) and not math.isnan(row[k])}
        if row["model"] in paths and scores:
            written += add_scores(paths[row["model"]], scores, "stage 05 (05_eval_forgetting/results.json)")
    return written
