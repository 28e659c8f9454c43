"""Stage 04's settings chosen by the memory plan (spotlib.train.settings)."""
from spotlib.config import load_profile
from spotlib.plan.memory import build_plan
from spotlib.train.settings import choose


def _stage04(profile, choice, gpus, gib):
    chosen = load_profile(profile, overrides=choice.overrides())
    return next(s for s in build_plan(chosen, gpus=gpus, gpu_memory_gib=gib).stages if s.stage.startswith("04"))


def test_the_plan_picks_recomputation_only_where_activations_do_not_fit():
    paper = load_profile("paper")
    per_step = paper.train.per_device_batch * paper.train.grad_accum
    small = choose(paper, gpus=8, gpu_memory_gib=79.6, cuda=True)
    large = choose(paper, gpus=8, gpu_memory_gib=1000, cuda=True)
    assert small.gradient_checkpointing and not large.gradient_checkpointing
    for choice, gib in ((small, 79.6), (large, 1000)):
        assert choice.fits and choice.per_device_batch * choice.grad_accum == per_step   # the step keeps its examples
        assert choice.zero == "zero2" and choice.fused_adamw
        stage = _stage04("paper", choice, 8, gib)
        assert stage.fits and abs(stage.peak / 2**30 - choice.planned_peak_gib) < 0.01
    # the largest micro-batch that fits: one step larger does not (or is the whole step)
    assert large.per_device_batch == per_step


def test_one_process_runs_without_zero_and_a_card_too_small_is_flagged():
    paper = load_profile("paper")
    one = choose(paper, gpus=1, gpu_memory_gib=1000, cuda=False)
    assert one.zero == "none" and not one.fused_adamw
    tiny_card = choose(paper, gpus=1, gpu_memory_gib=24, cuda=True)
    assert not tiny_card.fits and "no micro-batch fits" in tiny_card.notes[0]
    test = choose(load_profile("test"), gpus=1, gpu_memory_gib=80, cuda=True)
    assert test.fits and not test.gradient_checkpointing and test.micro_batch_tokens > 0
