"""Training log-probs by LM-head chunks (`train.logits_chunk_tokens`): the same values and
gradients as one full-vocabulary pass, with chunk boundaries inside rows and at their ends,
bare and through the DDP wrapper; kl_sft's token KL by the same chunks through `losses.token_kl`."""
import torch
import torch.nn.functional as F

from spotlib.train.logps import CompletionLogpsModel, completion_logps

VOCAB = 97


def micro_qwen3(seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                         tie_word_embeddings=True, use_cache=False)
    config._attn_implementation = "eager"
    return Qwen3ForCausalLM(config).float()


def batch_of_rows() -> dict[str, torch.Tensor]:
    """Three rows, the last right-padded, with 7, 10 and 4 completion targets (21 in all)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 14), generator=g)
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0
    completion = torch.zeros_like(ids)
    completion[0, 7:14] = 1
    completion[1, 4:14] = 1
    completion[2, 5:9] = 1
    ids[2, 9:] = 0
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


def full_vocabulary(lm, batch):
    """The unchunked computation: logits of every completion position at once."""
    return completion_logps(lm, batch, keep_logits=True)


def grads_of(lm, loss) -> list[torch.Tensor]:
    lm.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in lm.parameters()]


def assert_same_gradients(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Equal to 1e-6 of each tensor's largest entry: fp32 sums taken in another order
    (the tied head's gradient, chunk by chunk) differ in the last bits only."""
    for g, w in zip(got, want):
        scale = max(float(w.abs().max()), 1.0)
        assert float((g - w).abs().max()) <= 1e-6 * scale, (float((g - w).abs().max()), scale)


def weighted(out) -> torch.Tensor:
    """A loss that weighs rows and tokens differently, so a misplaced token shows."""
    return (out.sums * torch.tensor([0.3, -1.1, 0.7])).sum() + (out.token_logps ** 2).mean()


def test_chunked_logps_and_gradients_equal_one_pass():
    lm = micro_qwen3(0)
    batch = batch_of_rows()
    want = full_vocabulary(lm, batch)
    want_grads = grads_of(lm, weighted(want))
    assert want.counts.tolist() == [7.0, 10.0, 4.0]
    # 4: boundaries inside rows; 7: at the first row's end; 21: one chunk; 1: every token alone
    for chunk in (4, 7, 21, 1):
        got = completion_logps(lm, batch, head_chunk=chunk)
        assert got.logits is None
        # fp32 sums of ~10 log-probs of magnitude ~5 differ by a few ulps with the GEMM's blocking,
        # which varies with the CPU's kernels; a chunking error would be orders of magnitude larger.
        torch.testing.assert_close(got.sums, want.sums, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(got.token_logps, want.token_logps, rtol=1e-6, atol=2e-6)
        assert torch.equal(got.rows, want.rows)
        assert_same_gradients(grads_of(lm, weighted(got)), want_grads)


def test_chunked_logits_are_rebuilt_in_backward_not_kept():
    """Under grad, a chunk's [chunk, V] logits are not saved for backward (checkpointed)."""
    lm = micro_qwen3(0)
    batch = batch_of_rows()
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        completion_logps(lm, batch, head_chunk=4)
    assert (4, VOCAB) not in saved and (21, VOCAB) not in saved
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        full_vocabulary(lm, batch)
    assert (21, VOCAB) in saved  # the unchunked pass keeps them: the hook sees what is saved


def test_token_kl_by_chunks_equals_full_vocabulary_kl():
    lm, ref = micro_qwen3(0), micro_qwen3(1).requires_grad_(False)
    batch = batch_of_rows()
    policy = full_vocabulary(lm, batch)
    with torch.no_grad():
        reference = full_vocabulary(ref, batch)
    logp, logq = F.log_softmax(policy.logits, -1), F.log_softmax(reference.logits, -1)
    want_kl = (logp.exp() * (logp - logq)).sum(-1)
    want_grads = grads_of(lm, weighted(policy) + (want_kl * torch.linspace(0.5, 2, want_kl.numel())).sum())
    assert float(want_kl.detach().min()) > 0
    for chunk in (5, 21):
        got = completion_logps(lm, batch, head_chunk=chunk, reference=ref)
        torch.testing.assert_close(got.token_kl, want_kl.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(got.sums, policy.sums.detach(), rtol=0, atol=1e-6)
        loss = weighted(got) + (got.token_kl * torch.linspace(0.5, 2, want_kl.numel())).sum()
        assert_same_gradients(grads_of(lm, loss), want_grads)
    assert all(p.grad is None for p in ref.parameters())


def ddp_wrapper_check(store: str) -> None:
    """Chunked log-probs through DDP (gloo, one process) give the unwrapped gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    lm = micro_qwen3(0)
    batch = batch_of_rows()
    want_grads = grads_of(lm, weighted(full_vocabulary(lm, batch)))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(CompletionLogpsModel(lm))
        got = completion_logps(wrapped, batch, head_chunk=4)
        got_grads = grads_of(lm, weighted(got))
    finally:
        dist.destroy_process_group()
    assert_same_gradients(got_grads, want_grads)


def test_chunks_through_the_ddp_wrapper_give_the_same_gradients(tmp_path):
    # In a child with a time limit, as the torchrun tests: a process group inside the pytest
    # process once sat idle (gloo resolving the host), and a hang must fail, not stall the suite.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)]))
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "store")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ddp gradients equal" in done.stdout


def test_chunk_size_must_be_positive():
    import pytest

    with pytest.raises(ValueError, match="logits_chunk_tokens"):
        completion_logps(micro_qwen3(0), batch_of_rows(), head_chunk=0)


if __name__ == "__main__":
    import sys

    ddp_wrapper_check(sys.argv[1])
    print("ddp gradients equal")
