#!/usr/bin/env python3
"""The loss of a model's base weights stored as bitsandbytes stores them for
load_in_4bit (NF4, with and without double quantisation) and load_in_8bit
(LLM.int8), beside fp32, on the first optimizer step of a tune run: what
QLoRA costs the model before any training, measured by the reference
library rather than by tune. Compare with the first "loss" of tune's
training_log.jsonl for the same config with --load_in_4bit true --adapter
qlora [--bnb_4bit_use_double_quant true] or --load_in_8bit true.

Needs: pip install torch transformers bitsandbytes safetensors gguf

    build/tune preprocess CONFIG.yml --batches /tmp/b.safetensors --steps 1
    python tools/reference/quantised_base_loss.py MODEL /tmp/b.safetensors

MODEL is a Hugging Face folder, or a GGUF file, which Transformers
dequantises to fp32 and which is written as a temporary Hugging Face folder
first (bitsandbytes quantises from a folder). The loss is tune's: summed
over the step's trained targets (tools/bench/peer_lora_train.py builds the
packed batches' masks and targets), divided by their count. Prints one JSON
object.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from peer_lora_train import load_batches, packed_mask  # noqa: E402


def step_loss(model, step, torch):
    total, targets = 0.0, 0
    for mb in step:
        with torch.no_grad():
            out = model(input_ids=mb["input_ids"], position_ids=mb["position_ids"],
                        attention_mask=packed_mask(mb["segments"], torch))
        logits = out.logits.float()
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), mb["shift_labels"].reshape(-1),
                                                   ignore_index=-100, reduction="sum").item()
        targets += mb["targets"]
    return total / targets


def hf_folder(model, out, torch):
    """A GGUF file as an fp32 Hugging Face folder (config, safetensors, tokenizer) in out."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(os.path.abspath(model))
    m = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tied = m.config.tie_word_embeddings
    save_file({k: v.contiguous() for k, v in m.state_dict().items() if not (tied and k == "lm_head.weight")},
              os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = m.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF's, not ours
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("batches")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.set_num_threads(args.threads)
    step = load_batches(args.batches, torch)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = hf_folder(args.model, tmp, torch) if args.model.endswith(".gguf") else args.model
        storages = {
            "fp32": None,
            "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.float32),
            "nf4_double_quant": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_compute_dtype=torch.float32,
                                                   bnb_4bit_use_double_quant=True),
            "int8": BitsAndBytesConfig(load_in_8bit=True),
        }
        losses = {}
        for name, q in storages.items():
            extra = {"quantization_config": q, "device_map": "cpu"} if q else {}
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
            losses[name] = step_loss(model, step, torch)
    import bitsandbytes
    print(json.dumps({"model": args.model, "batches": args.batches, "bitsandbytes": bitsandbytes.__version__,
                      "first_step_loss": losses,
                      "relative_to_fp32": {k: v / losses["fp32"] - 1.0 for k, v in losses.items()}}, indent=1))


if __name__ == "__main__":
    main()
