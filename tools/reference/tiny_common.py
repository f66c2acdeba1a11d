"""Shared helpers for the tiny-model reference scripts.

Needs: torch, transformers (5.x), peft, safetensors.
"""
import os

import torch

# Where the tiny models and their goldens live, relative to the repository root.
TINY_DIR = os.path.join("tests", "data", "tiny")


def repo_root():
    """The repository root (two levels above this file)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def deterministic():
    """Deterministic fp32 CPU arithmetic: one thread, fixed algorithms."""
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    torch.manual_seed(0)


def load_base_model(model_dir):
    """A Hugging Face Llama folder as an fp32 model with eager attention, in eval mode."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def default_input_ids(vocab_size, B=2, T=12, seed=1234):
    """Fixed test ids (B, T) drawn from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (B, T), generator=g, dtype=torch.int64)
