"""Goldens for a grown vocabulary trained with PEFT modules_to_save.

Needs: torch, transformers (5.23), peft (0.21), safetensors.

For the tiny untied (gqa) and tied models: the vocabulary grows by ADDED
tokens whose embedding (and lm_head) rows are the mean of the old rows (tune's
rule; Transformers' mean_resizing adds 1e-9-covariance noise to the same
mean), then PEFT wraps it with LoRA on q_proj/v_proj (B set nonzero so every
LoRA parameter gets a gradient) and modules_to_save=["embed_tokens",
"lm_head"]. One forward/backward on fixed ids that use the new tokens gives
the mean loss and the gradients. Writes tests/data/tiny/vocab/<model>.safetensors:
  input_ids, labels (I64, (2, 10)); loss (F32, (1,)); init.<lora name> (each
  LoRA tensor's values in the pass, PEFT's saved name); grad.embed_tokens,
  grad.lm_head ((V+ADDED, C)); grad.<lora name> for each LoRA tensor. Run from anywhere; deterministic.
"""
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_common import TINY_DIR, deterministic, load_base_model, repo_root  # noqa: E402

ADDED = 3


def main():
    from peft import LoraConfig, get_peft_model

    deterministic()
    out_dir = os.path.join(repo_root(), TINY_DIR, "vocab")
    os.makedirs(out_dir, exist_ok=True)
    for name in ("gqa", "tied"):
        model = load_base_model(os.path.join(repo_root(), TINY_DIR, name))
        V = model.config.vocab_size
        with torch.no_grad():
            old_e = model.get_input_embeddings().weight.clone()
            old_h = model.get_output_embeddings().weight.clone()
            model.resize_token_embeddings(V + ADDED, mean_resizing=False)
            model.get_input_embeddings().weight[V:] = old_e.mean(0)
            if not model.config.tie_word_embeddings:
                model.get_output_embeddings().weight[V:] = old_h.mean(0)
        assert model.get_output_embeddings().weight.shape[0] == V + ADDED
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                         modules_to_save=["embed_tokens", "lm_head"])
        pm = get_peft_model(model, cfg)
        g = torch.Generator().manual_seed(99)
        out = {}
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        ids = torch.randint(0, V + ADDED, (2, 10), generator=g, dtype=torch.int64)
        ids[0, 2], ids[0, 5], ids[1, 7] = V, V + 1, V + 2  # the new tokens as inputs and targets
        labels = ids.clone()
        labels[1, :3] = -100
        pm.train()
        loss = pm(input_ids=ids, labels=labels).loss
        loss.backward()
        out["input_ids"], out["labels"] = ids, labels
        out["loss"] = loss.detach().reshape(1)
        for n, p in pm.named_parameters():
            if not p.requires_grad:
                continue
            if "modules_to_save" in n:
                key = "grad.embed_tokens" if "embed_tokens" in n else "grad.lm_head"
            else:
                key = "grad." + n.replace(".default", "")
                out["init." + n.replace(".default", "")] = p.detach().clone()
            out[key] = p.grad.detach().clone()
        # the copies start equal to the grown matrices
        assert torch.equal(pm.base_model.model.model.embed_tokens.modules_to_save["default"].weight[V],
                           old_e.mean(0))
        save_file({k: v.contiguous() for k, v in sorted(out.items())}, os.path.join(out_dir, name + ".safetensors"),
                  metadata={"format": "pt"})
        print(name, "loss", loss.item(), "tensors", len(out))


if __name__ == "__main__":
    main()
