#!/usr/bin/env python3
"""Tiny LLaMA models and the numerical ground truth for tune's LoRA training.

Needs (pip): torch (CPU), transformers==5.23.*, peft==0.21.*, tokenizers==0.23.*, safetensors.

Run from anywhere:  python tools/reference/make_tiny_llama_golden.py
Writes tests/data/tiny/ (see tools/reference/README.md for every file and tensor).

Everything is seeded and computed in deterministic fp32 on the CPU with eager
attention. Each golden is checked here against an independent computation
(hand-written loss, hand-merged LoRA weights, fp64 rerun, packed rerun,
hand-written AdamW, a second accumulation layout) before it is written.
"""
import copy
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_common import TINY_DIR, deterministic, load_base_model, repo_root  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 384
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

B, T = 2, 12
LORA_R, LORA_ALPHA = 4, 8
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IGNORE = -100

# Training trajectory settings (section "train golden" of the README).
TRAIN = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, warmup_steps=2, steps=6,
             grad_accum=2, micro_batch=2, max_grad_norm=2.4)

CORPUS = """\
The quick brown fox jumps over the lazy dog.
Use SUM to add a range of cells: =SUM(A1:A10) returns the total of the first ten rows.
To look up a value, try =VLOOKUP(B2, Sheet2!A:C, 3, FALSE) and check the result.
=IF(C2>100, "high", "low") labels each row as high or low.
=INDEX(A:A, MATCH(MAX(B:B), B:B, 0)) finds the name with the largest value.
=AVERAGE(D2:D50) gives the mean; =COUNTIF(E:E, ">0") counts the positive cells.
=SUMIFS(F:F, A:A, "Seoul", B:B, ">=2024-01-01") adds sales in Seoul since January.
Press Ctrl+Shift+Enter for an array formula in older versions of Excel.
The assistant answers questions about spreadsheets, formulas and charts.
엑셀에서 합계를 구하려면 =SUM(A1:A10) 함수를 사용하세요.
VLOOKUP 함수는 표의 첫 번째 열에서 값을 찾아 같은 행의 다른 열 값을 반환합니다.
조건에 따라 다른 값을 표시하려면 IF 함수를 사용합니다: =IF(A1>=60, "합격", "불합격")
평균은 AVERAGE 함수로, 개수는 COUNT 함수로 구할 수 있습니다.
서울 지점의 매출 합계를 구하려면 SUMIFS 함수를 쓰면 됩니다.
날짜 형식이 맞지 않으면 셀 서식에서 날짜를 선택하세요.
피벗 테이블을 만들면 데이터를 쉽게 요약할 수 있습니다.
안녕하세요! 엑셀 수식에 대해 무엇이든 물어보세요.
How do I count the cells that contain text? Use =COUNTIF(A:A, "*").
What does #N/A mean? It means the lookup value was not found.
Wrap the formula with IFERROR to hide errors: =IFERROR(VLOOKUP(A2, B:C, 2, 0), "")
The total for 2023 was 1,234,567 won and for 2024 it was 2,345,678 won.
Numbers like 3.14, 42, 100% and -7 appear in many sheets.
표에서 중복 값을 제거하려면 데이터 탭의 중복 항목 제거를 누르세요.
텍스트를 합치려면 =CONCAT(A1, " ", B1) 또는 & 연산자를 사용합니다.
=TEXT(A1, "yyyy-mm-dd") formats a date as text.
=ROUND(B2*1.1, 0) rounds the price with tax to a whole number.
The quick answer is: select the range, then press Alt+= to insert SUM.
"""


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------- tokenizer

def make_tokenizer(out_dir):
    """Byte-level BPE (GPT-2 style) trained on CORPUS; special tokens get ids 0, 1, 2."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    lines = [line for line in CORPUS.splitlines() if line]
    tok.train_from_iterator(lines * 3, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))

    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    specials = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>"}
    config = dict(specials)
    config.update({
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for i, s in enumerate(SPECIAL_TOKENS)},
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 64,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    stm = dict(specials)
    stm["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
    write_json(os.path.join(out_dir, "special_tokens_map.json"), stm)
    return tok


def tokenizer_golden(tok_dir, out_path):
    """Encodings of a few strings and of a rendered chat, by both tokenizers and transformers."""
    from transformers import AutoTokenizer

    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(tok_dir)
    texts = [
        "=SUM(A1:A10)",
        "엑셀에서 합계를 구하려면 =SUM(A1:A10) 함수를 사용하세요.",
        "Hello world!  Two spaces,\ttab and\nnewline 123456 😀 ünïcödé",
        "<|im_start|>user\n평균은?<|im_end|>\n",
        "",
    ]
    cases = []
    for text in texts:
        ids = tok.encode(text).ids
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.encode(text) == ids  # no BOS is added
        assert tok.decode(ids, skip_special_tokens=False) == text
        cases.append({"text": text, "ids": ids})
    messages = [{"role": "system", "content": "You are an Excel assistant."},
                {"role": "user", "content": "합계는 어떻게 구하나요?"},
                {"role": "assistant", "content": "=SUM(A1:A10)을 사용하세요."}]
    rendered = hf.apply_chat_template(messages, tokenize=False)
    expect = "".join("<|im_start|>%s\n%s<|im_end|>\n" % (m["role"], m["content"]) for m in messages)
    assert rendered == expect, rendered
    prompt = hf.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    chat = {"messages": messages, "rendered": rendered, "ids": tok.encode(rendered).ids,
            "generation_prompt": prompt, "generation_prompt_ids": tok.encode(prompt).ids}
    write_json(out_path, {"cases": cases, "chat": chat, "vocab_size": tok.get_vocab_size()})


# ---------------------------------------------------------------- models

MODEL_SPECS = {
    # name: config kwargs, how config.json is written, LoRA settings
    "gqa": dict(
        config=dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6),
        legacy_config=False, targets=ALL_TARGETS, use_rslora=False, seed=101),
    "tied": dict(
        config=dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-6),
        legacy_config=True, targets=ALL_TARGETS, use_rslora=False, seed=202),
    "llama3rope": dict(
        config=dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5,
                    eos_token_id=[2, 0],
                    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 40}),
        legacy_config=True, targets=["q_proj", "v_proj", "down_proj"], use_rslora=True, seed=303),
}


def llama_config(vocab_size, extra):
    from transformers import LlamaConfig

    kw = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
              num_attention_heads=4, head_dim=16, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
              pad_token_id=None, initializer_range=0.1, attention_bias=False, mlp_bias=False)
    kw.update(extra)
    return LlamaConfig(**kw)


def expected_inv_freq(cfg_extra, head_dim=16):
    """RoPE inverse frequencies written out from the formulas (REFERENCE.md), in float64."""
    theta = cfg_extra["rope_theta"]
    inv = [theta ** (-2.0 * i / head_dim) for i in range(head_dim // 2)]
    rs = cfg_extra.get("rope_scaling")
    regimes = set()
    if rs:
        L = rs["original_max_position_embeddings"]
        lw, hw = L / rs["low_freq_factor"], L / rs["high_freq_factor"]
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < hw:
                out.append(f)
                regimes.add("keep")
            elif wavelen > lw:
                out.append(f / rs["factor"])
                regimes.add("divide")
            else:
                s = (L / wavelen - rs["low_freq_factor"]) / (rs["high_freq_factor"] - rs["low_freq_factor"])
                out.append((1 - s) * f / rs["factor"] + s * f)
                regimes.add("blend")
        inv = out
    return torch.tensor(inv, dtype=torch.float64), regimes


def init_model_weights(model, seed):
    """Weights N(0, 0.1); norm weights 1 + N(0, 0.1) so the norm scale is tested too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights appear once
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.1
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def legacy_config_json(path):
    """Rewrite config.json in the pre-5.0 key layout of real model folders:
    rope_theta at top level, rope_scaling instead of rope_parameters, torch_dtype."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    cfg["torch_dtype"] = cfg.pop("dtype")
    write_json(path, cfg)


def make_model(name, spec, vocab_size, tok_dir):
    from transformers import LlamaForCausalLM

    out_dir = os.path.join(TINY_DIR, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    cfg = llama_config(vocab_size, spec["config"])
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg)
    init_model_weights(model, spec["seed"])
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    for fname in TOKENIZER_FILES:
        shutil.copy(os.path.join(tok_dir, fname), os.path.join(out_dir, fname))
    if spec["legacy_config"]:
        legacy_config_json(os.path.join(out_dir, "config.json"))

    # What is on disk must be the model we built.
    reloaded = load_base_model(out_dir)
    ids = torch.arange(24, dtype=torch.int64).reshape(2, 12) * 7 % vocab_size
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits), name
    inv, regimes = expected_inv_freq(spec["config"])
    got = reloaded.model.rotary_emb.inv_freq.double()
    assert torch.allclose(got, inv, rtol=1e-6, atol=0), (name, got, inv)
    assert reloaded.model.rotary_emb.attention_scaling == 1.0
    if "rope_scaling" in spec["config"]:
        assert regimes == {"keep", "blend", "divide"}, regimes  # every llama3 branch is exercised
    return out_dir


# ---------------------------------------------------------------- LoRA goldens

def peft_name(param_name):
    return param_name.replace(".default", "")


def lora_params(pm):
    """[(PEFT saved name, parameter)] in module order."""
    return [(peft_name(n), p) for n, p in pm.named_parameters() if "lora_" in n]


def attach_lora(model, spec, seed):
    """PEFT LoRA with A ~ U(-1/sqrt(in), 1/sqrt(in)) and B ~ N(0, 0.1), both from a seeded generator."""
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=list(spec["targets"]), lora_dropout=0.0,
                      bias="none", use_rslora=spec["use_rslora"], task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_params(pm):
            if name.endswith("lora_A.weight"):
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return pm


def fixed_batch(vocab_size, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (B, T), generator=g, dtype=torch.int64)
    labels = ids.clone()
    labels[0, :4] = IGNORE
    labels[1, 2:4] = IGNORE
    return ids, labels


def hand_loss(logits, labels):
    """Mean cross-entropy of logits[:, t] against labels[:, t+1], in float64, written out."""
    lg = logits[:, :-1].double()
    tg = labels[:, 1:]
    logz = torch.logsumexp(lg, dim=-1)
    total, n = 0.0, 0
    for b in range(tg.shape[0]):
        for t in range(tg.shape[1]):
            if tg[b, t] != IGNORE:
                total += float(logz[b, t] - lg[b, t, tg[b, t]])
                n += 1
    return total / n, n


def hand_merged_logits(base_dir, pm, scaling, ids):
    """Logits of a fresh base model whose weights get W + scaling * B @ A added by hand."""
    merged = load_base_model(base_dir)
    mods = dict(merged.named_modules())
    lora = dict(lora_params(pm))
    with torch.no_grad():
        for name, A in lora.items():
            if not name.endswith("lora_A.weight"):
                continue
            path = name[len("base_model.model."):-len(".lora_A.weight")]
            Bw = lora[name.replace("lora_A", "lora_B")]
            mods[path].weight += scaling * (Bw.detach().double() @ A.detach().double()).float()
        return merged(ids).logits


def max_diff(a, b):
    return float((a.detach().double() - b.detach().double()).abs().max())


def forward_golden(name, spec, model_dir):
    model = load_base_model(model_dir)
    pm = attach_lora(model, spec, spec["seed"] + 1)
    V = model.config.vocab_size
    scaling = LORA_ALPHA / (math.sqrt(LORA_R) if spec["use_rslora"] else LORA_R)
    names = [n for n, _ in lora_params(pm)]

    # Parameter names are exactly PEFT's saved names.
    from peft import get_peft_model_state_dict
    sd = get_peft_model_state_dict(pm)
    assert list(sd.keys()) == names, (list(sd.keys())[:3], names[:3])
    for mod in pm.modules():
        if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
            assert mod.scaling["default"] == scaling, (mod.scaling, scaling)
    n_targets_expected = len(spec["targets"]) * model.config.num_hidden_layers * 2
    assert len(names) == n_targets_expected

    ids, labels = fixed_batch(V, spec["seed"] + 2)
    with torch.no_grad(), pm.disable_adapter():
        base_logits = pm(input_ids=ids).logits.detach().clone()
    out = pm(input_ids=ids, labels=labels)
    logits = out.logits.detach().clone()
    loss = out.loss
    pm.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in lora_params(pm)}

    # Checks: loss by hand, LoRA maths by hand, sensitivity, fp64 rerun.
    hl, n_targets = hand_loss(logits, labels)
    assert abs(hl - loss.item()) < 1e-5, (hl, loss.item())
    with torch.no_grad():
        plain = load_base_model(model_dir)
        assert torch.equal(plain(ids).logits, base_logits)
        hm = hand_merged_logits(model_dir, pm, scaling, ids)
    assert max_diff(hm, logits) < 1e-4, max_diff(hm, logits)
    assert float(logits.std()) > 0.5, float(logits.std())
    assert max_diff(logits, base_logits) > 0.05, "the adapter barely changes the logits"
    for n, gr in grads.items():
        assert float(gr.abs().max()) > 0, n

    pm64 = copy.deepcopy(pm).double()
    out64 = pm64(input_ids=ids, labels=labels)
    out64.loss.backward()
    g64 = {peft_name(n): p.grad for n, p in pm64.named_parameters() if "lora_" in n}
    fp64 = {
        "logits_max_abs_diff": max_diff(out64.logits, logits),
        "loss_abs_diff": abs(out64.loss.item() - loss.item()),
        "grad_max_abs_diff": max(max_diff(g64[n], grads[n]) for n in names),
        "grad_max_abs": max(float(g.abs().max()) for g in grads.values()),
    }
    assert fp64["logits_max_abs_diff"] < 1e-4 and fp64["grad_max_abs_diff"] < 1e-5, fp64

    # Packed: both rows in one sequence, positions restarting at 0.
    p_ids = ids.reshape(1, B * T)
    p_labels = labels.reshape(1, B * T)
    p_pos = torch.arange(T, dtype=torch.int64).repeat(B).reshape(1, B * T)
    p_seg = torch.arange(B, dtype=torch.int64).repeat_interleave(T).reshape(1, B * T)
    # The loss of the two examples, unpacked, over all their trained targets together.
    sums = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    packed_loss = sums / n_targets
    # HF on the packed row: position_ids make the mask block-diagonal; the target that
    # would cross the boundary (logits[T-1] vs labels[T]) is excluded by masking it.
    hf_labels = p_labels.clone()
    for s in range(1, B):
        hf_labels[0, s * T] = IGNORE
    assert p_labels[0, T] != IGNORE  # so a forward that crosses segments gets a different loss
    pm.zero_grad(set_to_none=True)
    # use_cache=False: HF only derives the packed mask when no KV cache is in play.
    pout = pm(input_ids=p_ids, labels=hf_labels, position_ids=p_pos, use_cache=False)
    assert max_diff(pout.logits.reshape(B, T, V), logits) < 1e-5
    assert abs(pout.loss.item() - packed_loss.item()) < 1e-6, (pout.loss.item(), packed_loss.item())
    pout.loss.backward()
    for n, p in lora_params(pm):
        assert max_diff(p.grad, grads[n]) < 1e-6, n
    pm.zero_grad(set_to_none=True)

    tensors = {
        "input_ids": ids, "labels": labels,
        "base_logits": base_logits, "logits": logits,
        "loss": loss.detach().reshape(1).clone(),
        "packed_input_ids": p_ids, "packed_labels": p_labels, "packed_position_ids": p_pos,
        "packed_segment_ids": p_seg, "packed_loss": packed_loss.detach().reshape(1).clone(),
    }
    for n, p in lora_params(pm):
        tensors[n] = p.detach().clone()
        tensors["grad." + n] = grads[n]
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(model_dir, "golden.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(model_dir, "golden.json"), {
        "model": name, "lora_r": LORA_R, "lora_alpha": LORA_ALPHA, "use_rslora": spec["use_rslora"],
        "scaling": scaling, "target_modules": spec["targets"], "lora_dropout": 0.0,
        "B": B, "T": T, "vocab_size": V, "loss": loss.item(), "packed_loss": packed_loss.item(),
        "n_targets": n_targets, "lora_names": names,
        "fp64_check": fp64,
    })
    return pm


# ---------------------------------------------------------------- training trajectory

def train_batches(vocab_size, seed):
    """Per step, grad_accum micro-batches of (micro_batch, T) with prompt-like masked prefixes of
    varying length, so micro-batches hold different numbers of trained targets."""
    g = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(TRAIN["steps"]):
        mbs = []
        for _ in range(TRAIN["grad_accum"]):
            ids = torch.randint(0, vocab_size, (TRAIN["micro_batch"], T), generator=g, dtype=torch.int64)
            labels = ids.clone()
            for b in range(TRAIN["micro_batch"]):
                k = int(torch.randint(0, 10, (1,), generator=g))
                labels[b, :k] = IGNORE
            mbs.append((ids, labels))
        steps.append(mbs)
    return steps


def n_trained(labels):
    return int((labels[:, 1:] != IGNORE).sum())


def run_trajectory(pm, steps, layout):
    """Optimizer steps as tune takes them. layout 'accum': each step's micro-batches one by one,
    each backward scaled by 1/(targets in the whole step); 'single': one batch of all rows;
    'mean_of_means' (the rule tune does NOT use, a control): each micro-batch's own mean loss
    divided by the number of micro-batches."""
    from transformers import get_cosine_schedule_with_warmup

    named = lora_params(pm)
    params = [p for _, p in named]
    opt = torch.optim.AdamW(params, lr=TRAIN["lr"], betas=TRAIN["betas"], eps=TRAIN["eps"],
                            weight_decay=TRAIN["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=TRAIN["warmup_steps"],
                                            num_training_steps=TRAIN["steps"])
    log, grads_per_step, weights_per_step = [], [], []
    for mbs in steps:
        if layout == "single":
            mbs = [(torch.cat([m[0] for m in mbs]), torch.cat([m[1] for m in mbs]))]
        n_step = sum(n_trained(lab) for _, lab in mbs)
        loss = 0.0
        hand = 0.0
        for ids, labels in mbs:
            # HF's num_items_in_batch: sum of token losses / targets in the whole step.
            n_div = n_trained(labels) * len(mbs) if layout == "mean_of_means" else n_step
            out = pm(input_ids=ids, labels=labels, num_items_in_batch=n_div)
            out.loss.backward()
            loss += out.loss.item()
            hl, n = hand_loss(out.logits.detach(), labels)
            hand += hl * n / n_div
        assert abs(hand - loss) < 1e-5, (hand, loss)
        lr = opt.param_groups[0]["lr"]
        grads_per_step.append({n: p.grad.detach().clone() for n, p in named})
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=TRAIN["max_grad_norm"]))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        weights_per_step.append({n: p.detach().clone() for n, p in named})
        log.append({"loss": loss, "lr": lr, "grad_norm": norm, "n_targets": n_step,
                    "clipped": norm > TRAIN["max_grad_norm"]})
    return log, grads_per_step, weights_per_step


def hand_adamw(init, grads_per_step, log):
    """AdamW as documented in the README, fed with the recorded pre-clip gradients."""
    b1, b2 = TRAIN["betas"]
    w = {n: t.double().clone() for n, t in init.items()}
    m = {n: torch.zeros_like(t) for n, t in w.items()}
    v = {n: torch.zeros_like(t) for n, t in w.items()}
    for s, (grads, rec) in enumerate(zip(grads_per_step, log)):
        step = s + 1
        lr = TRAIN["lr"] * (step - 1) / TRAIN["warmup_steps"] if s < TRAIN["warmup_steps"] else \
            TRAIN["lr"] * 0.5 * (1 + math.cos(math.pi * (s - TRAIN["warmup_steps"]) /
                                              (TRAIN["steps"] - TRAIN["warmup_steps"])))
        assert abs(lr - rec["lr"]) < 1e-12, (lr, rec["lr"])
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
        assert abs(norm - rec["grad_norm"]) < 1e-5 * max(1.0, norm), (norm, rec["grad_norm"])
        coef = min(TRAIN["max_grad_norm"] / (norm + 1e-6), 1.0)
        for n in w:
            g = grads[n].double() * coef
            w[n] *= 1 - lr * TRAIN["weight_decay"]
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            denom = (v[n] / (1 - b2 ** step)).sqrt() + TRAIN["eps"]
            w[n] -= lr / (1 - b1 ** step) * m[n] / denom
    return w


def train_golden(model_dir, spec):
    V = load_base_model(model_dir).config.vocab_size
    steps = train_batches(V, 4242)

    pm = attach_lora(load_base_model(model_dir), spec, spec["seed"] + 1)
    init = {n: p.detach().clone() for n, p in lora_params(pm)}
    # The trajectory starts from the forward golden's adapter.
    from safetensors.torch import load_file
    fg = load_file(os.path.join(model_dir, "golden.safetensors"))
    for n, t in init.items():
        assert torch.equal(fg[n], t), n

    log, grads_per_step, weights_per_step = run_trajectory(pm, steps, "accum")
    final = weights_per_step[-1]

    # Same rows as one micro-batch of 4 per step: the token-weighted rule makes them agree.
    pm4 = attach_lora(load_base_model(model_dir), spec, spec["seed"] + 1)
    log4, _, w4 = run_trajectory(pm4, steps, "single")
    worst = max(max_diff(w4[-1][n], final[n]) for n in final)
    assert worst < 1e-6, worst
    # Control: the per-micro-batch mean rule gives a clearly different result, so the check has teeth.
    pmm = attach_lora(load_base_model(model_dir), spec, spec["seed"] + 1)
    _, _, wm = run_trajectory(pmm, steps, "mean_of_means")
    wrong = max(max_diff(wm[-1][n], final[n]) for n in final)
    moved = max(max_diff(init[n], final[n]) for n in final)
    assert wrong > 100 * 1e-6, wrong
    for a, b in zip(log, log4):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5, (a, b)

    hw = hand_adamw(init, grads_per_step, log)
    worst_hand = max(max_diff(hw[n], final[n]) for n in final)
    assert worst_hand < 1e-6, worst_hand
    assert all(r["n_targets"] > 0 for r in log)
    mb_counts = [[n_trained(lab) for _, lab in mbs] for mbs in steps]
    assert any(c[0] != c[1] for c in mb_counts), "micro-batches must differ in trained targets"
    assert any(r["clipped"] for r in log) and not all(r["clipped"] for r in log[1:]), log

    tensors = {}
    for s, mbs in enumerate(steps):
        for m, (ids, labels) in enumerate(mbs):
            tensors["step%d.mb%d.input_ids" % (s, m)] = ids
            tensors["step%d.mb%d.labels" % (s, m)] = labels
        for n, g in grads_per_step[s].items():
            tensors["step%d.grad.%s" % (s, n)] = g
        if s < len(steps) - 1:
            for n, w in weights_per_step[s].items():
                tensors["step%d.after.%s" % (s, n)] = w
    for n in init:
        tensors["init." + n] = init[n]
        tensors["final." + n] = final[n]
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(model_dir, "train_golden.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(model_dir, "train_golden.json"), {
        "model": os.path.basename(model_dir),
        "optimizer": {"name": "adamw_torch", "lr": TRAIN["lr"], "betas": list(TRAIN["betas"]),
                      "eps": TRAIN["eps"], "weight_decay": TRAIN["weight_decay"]},
        "lr_scheduler": "cosine", "warmup_steps": TRAIN["warmup_steps"], "max_steps": TRAIN["steps"],
        "micro_batch_size": TRAIN["micro_batch"], "gradient_accumulation_steps": TRAIN["grad_accum"],
        "max_grad_norm": TRAIN["max_grad_norm"], "T": T, "lora_dropout": 0.0,
        "loss_normalisation": "sum of token cross-entropies over the step's micro-batches / "
                              "trained targets in the whole step",
        "micro_batch_targets": mb_counts,
        "steps": log,
        "check_max_abs_diff": {"micro_batch_4_accum_1": worst, "hand_adamw_fp64": worst_hand,
                               "control_mean_of_means_rule": wrong, "final_vs_init": moved},
    })
    return pm, log


# ---------------------------------------------------------------- PEFT layout reference

def peft_adapter(model_dir, spec):
    """The forward golden's adapter of the gqa model, saved by PEFT itself."""
    out_dir = os.path.join(TINY_DIR, "peft_adapter")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    pm = attach_lora(load_base_model(model_dir), spec, spec["seed"] + 1)
    pm.save_pretrained(out_dir)
    readme = os.path.join(out_dir, "README.md")  # a generated model card, not part of the layout
    if os.path.exists(readme):
        os.remove(readme)
    with open(os.path.join(out_dir, "adapter_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    assert cfg["base_model_name_or_path"] == model_dir, cfg["base_model_name_or_path"]
    return out_dir


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":
        # PEFT writes target_modules from a set: fix string hashing so its order is reproducible.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    os.chdir(repo_root())  # every path below is relative, so none of the machine's leaks into outputs
    deterministic()
    if os.path.isdir(TINY_DIR):
        shutil.rmtree(TINY_DIR)
    tok_dir = os.path.join(TINY_DIR, "tokenizer")
    tok = make_tokenizer(tok_dir)
    tokenizer_golden(tok_dir, os.path.join(TINY_DIR, "tokenizer_golden.json"))
    V = tok.get_vocab_size()
    for name, spec in MODEL_SPECS.items():
        model_dir = make_model(name, spec, V, tok_dir)
        pm = forward_golden(name, spec, model_dir)
        with open(os.path.join(model_dir, "golden.json"), encoding="utf-8") as f:
            g = json.load(f)
        print("%-10s loss %.6f  scaling %.3f  lora tensors %d" % (name, g["loss"], g["scaling"],
                                                                   len(lora_params(pm))))
    gqa_dir = os.path.join(TINY_DIR, "gqa")
    _, log = train_golden(gqa_dir, MODEL_SPECS["gqa"])
    for s, r in enumerate(log):
        print("step %d  loss %.6f  lr %.6f  grad_norm %.6f%s" % (
            s, r["loss"], r["lr"], r["grad_norm"], "  (clipped)" if r["clipped"] else ""))
    peft_adapter(gqa_dir, MODEL_SPECS["gqa"])
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(TINY_DIR) for f in fs)
    print("wrote %s: %.2f MB" % (TINY_DIR, total / 1e6))
    assert total < 3e6, total


if __name__ == "__main__":
    main()
