"""Which tokens a completion is trained on: the authors' conversational format vs the clean one."""
from pathlib import Path

import pytest

from spotlib.config import ConfigError, load_profile
from spotlib.models import chat_prompt
from spotlib.tokens import completion_token_ids
from spotlib.train import data as D
from spotlib.world.tokenizer import build_tokenizer

EXAMPLES = [("Compute 1 + 2.", "1 + 2 = 3\nAnswer: 3"), ("Hi", "hello there friend"),
            ("What is 12 * 3?", "12 * 3 = 36")]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(load_profile("test").world)


@pytest.fixture(scope="module")
def qwen3_tok():
    """The tiny tokenizer with Qwen3's original chat template (as TRL ships it for identification)
    and Qwen3's thinking tags as added tokens; eos `<|im_end|>` as in Qwen3-8B."""
    import trl

    tokenizer = build_tokenizer(load_profile("test").world)
    tokenizer.add_tokens(["<think>", "</think>"])
    template = Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja"
    tokenizer.chat_template = template.read_text()
    return tokenizer


def _trl_conversational(tokenizer, prompt, completion):
    """TRL 1.x's own tokenization of a conversational pair, plus the eos TRL 0.20 appended."""
    from trl.trainer.dpo_trainer import _tokenize

    user = [{"role": "user", "content": prompt}]
    prompt_ids = _tokenize(tokenizer, user, add_generation_prompt=True)["input_ids"]
    full = _tokenize(tokenizer, user + [{"role": "assistant", "content": completion}])["input_ids"]
    assert full[:len(prompt_ids)] == prompt_ids
    return prompt_ids, full[len(prompt_ids):] + [tokenizer.eos_token_id]


def test_conversational_is_what_trl_fed_and_two_tokens_longer_than_clean(tok):
    for prompt, completion in EXAMPLES:
        conv = completion_token_ids(tok, prompt, completion, "conversational")
        assert conv == _trl_conversational(tok, prompt, completion)
        p_clean, c_clean = completion_token_ids(tok, prompt, completion, "clean")
        assert p_clean == conv[0]  # the tiny template has no thinking block: same prompt
        assert tok.decode(c_clean) == completion + "<|im_end|>"
        # The authors' completion: the template's end-of-turn marker and newline, then eos again.
        assert conv[1] == c_clean[:-1] + tok("<|im_end|>\n<|im_end|>", add_special_tokens=False)["input_ids"]
        assert len(conv[1]) == len(c_clean) + 2


def test_qwen3_template_moves_the_empty_thinking_block_into_the_completion(qwen3_tok):
    tok = qwen3_tok
    for prompt, completion in EXAMPLES:
        conv_p, conv_c = completion_token_ids(tok, prompt, completion, "conversational")
        assert (conv_p, conv_c) == _trl_conversational(tok, prompt, completion)
        clean_p, clean_c = completion_token_ids(tok, prompt, completion, "clean")
        # TRL 0.20 passed no `enable_thinking`: its prompt ends at the assistant header and the
        # empty thinking block is scored as completion; spotlib's clean prompt is the sampling
        # prompt (enable_thinking=False), which holds that block.
        assert tok.decode(conv_p).endswith("<|im_start|>assistant\n")
        assert tok.decode(clean_p) == chat_prompt(tok, prompt)
        assert tok.decode(clean_p).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert tok.decode(conv_c) == "<think>\n\n</think>\n\n" + completion + "<|im_end|>\n<|im_end|>"
        assert tok.decode(clean_c) == completion + "<|im_end|>"
        # The whole sequence differs only by the trailing "\n<|im_end|>".
        assert tok.decode(conv_p + conv_c) == tok.decode(clean_p + clean_c[:-1]) + "<|im_end|>\n<|im_end|>"


def test_prepare_passes_the_format_through(tok):
    examples = [{"id": str(i), "prompt": p, "chosen": c, "rejected": c + " 7"} for i, (p, c) in enumerate(EXAMPLES)]
    conv = D.prepare(tok, examples, 384, 128, with_rejected=True, completion_format="conversational")
    clean = D.prepare(tok, examples, 384, 128, with_rejected=True, completion_format="clean")
    for a, b in ((conv.chosen, clean.chosen), (conv.rejected, clean.rejected)):
        assert a.prompt_lens == b.prompt_lens
        assert [len(x) for x in a.ids] == [len(x) + 2 for x in b.ids]
    with pytest.raises(ValueError, match="completion_format: unknown completion format 'chat'"):
        D.prepare(tok, examples, 384, 128, with_rejected=False, completion_format="chat")


def test_profiles_state_their_format(tmp_path):
    assert load_profile("paper").train.completion_format == "conversational"
    assert load_profile("tiny").train.completion_format == "clean"
    with pytest.raises(ConfigError, match="train.completion_format"):
        load_profile("test", overrides={"train.completion_format": "chat"})
