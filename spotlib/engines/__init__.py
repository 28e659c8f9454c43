"""Generation: one generate call over transformers or vLLM, the engine worker pool, the CPU stand-in
for vLLM, GRPO's rollout engine and the engines' settings from a profile."""
