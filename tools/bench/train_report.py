#!/usr/bin/env python3
"""The table and the JSON record of tools/bench/train.sh (standard library only).

Reads WORK/batches.safetensors (tokens of each step), and for each run R
WORK/explain.R.json, WORK/tune.R/training_log.jsonl, WORK/tune.R.time,
WORK/peer.R.json, WORK/peer.R.time (/usr/bin/time -f '%M %e'). Prints the
medians and writes OUT_DIR/train-<UTC date>-<commit>.json.
"""
import datetime
import hashlib
import json
import os
import statistics
import struct
import subprocess

env = os.environ
work = env["WORK"]
path = lambda name: os.path.join(work, name)


def step_tokens():
    """Tokens (B x T, padding included) of each optimizer step of the batches file."""
    data = open(path("batches.safetensors"), "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    start, end = head["step"]["data_offsets"]
    steps = struct.unpack(f"<{(end - start) // 4}i", data[8 + n + start:8 + n + end])
    tokens = [0] * (max(steps) + 1)
    for k, s in enumerate(steps):
        B, T = head[f"input_ids.{k}"]["shape"]
        tokens[s] += B * T
    return tokens


def read_time(name):
    rss_kib, wall = open(path(name)).read().split()[-2:]
    return int(rss_kib) / 1024, float(wall)


def tail(name, n=300):
    try:
        return open(path(name)).read()[-n:].strip()
    except OSError:
        return ""


def tune_run(r, tokens):
    x = json.load(open(path(f"explain.{r}.json")))
    log = [json.loads(l) for l in open(path(f"tune.{r}/training_log.jsonl"))]
    steps = [e for e in log if "tokens_per_second" in e]
    timed = steps[1:]  # the first step warms up
    seconds = sum(tokens[e["step"] - 1] / e["tokens_per_second"] for e in timed)
    rss, wall = read_time(f"tune.{r}.time")
    tps = sum(tokens[e["step"] - 1] for e in timed) / seconds
    first = steps[0].get("elapsed_s")
    # start-up: launch to the first step's start (the log's rate of step 1 gives that step's own time)
    startup = first - tokens[0] / steps[0]["tokens_per_second"] if first is not None else None
    return {"tokens_per_s": tps, "peak_rss_mib": rss, "wall_s": wall, "first_step_s": first, "startup_s": startup,
            "first_step_loss": steps[0]["loss"], "losses": [e["loss"] for e in steps],
            "step_tokens_per_s": [e["tokens_per_second"] for e in steps],
            "sgemm_gflops": x["sgemm"]["gflops"], "sgemm_n": x["sgemm"]["n"],
            "model_flops_per_token": x["model_flops_per_token"],
            "achieved_fraction": tps * x["model_flops_per_token"] / (x["sgemm"]["gflops"] * 1e9),
            "explain_step_s": x["step_seconds"]}, x


def peer_run(r):
    try:
        p = json.load(open(path(f"peer.{r}.json")))
    except (OSError, ValueError):
        return {"error": tail(f"peer.{r}.err")}
    rss, wall = read_time(f"peer.{r}.time")
    p.update(peak_rss_mib=rss, wall_s=wall, first_step_loss=p["losses"][0], sgemm_gflops=p["matmul_gflops"],
             startup_s=p["first_step_s"] - p["step_seconds"][0] if p.get("first_step_s") is not None else None,
             sgemm_n=p["matmul_n"],
             achieved_fraction=p["tokens_per_s"] * p["model_flops_per_token"] / (p["matmul_gflops"] * 1e9),
             achieved_fraction_model_shapes=p["tokens_per_s"] * p["model_flops_per_token"]
             / (p["matmul_model_shapes_gflops"] * 1e9))
    return p


FIGURES = ("tokens_per_s", "peak_rss_mib", "first_step_s", "startup_s", "sgemm_gflops", "achieved_fraction")


def medians(runs, extra=()):
    ok = [r for r in runs if "error" not in r]
    return {k: statistics.median(r[k] for r in ok) for k in FIGURES + extra if ok and None not in (r[k] for r in ok)}


def si(v):
    for unit in ("", "k", "M", "G", "T"):
        if abs(v) < 999.5:
            return f"{v:.4g}{unit}"
        v /= 1000
    return f"{v:.4g}P"


tokens = step_tokens()
repeats = int(env["REPEATS"])
tune_runs, explains = zip(*(tune_run(r, tokens) for r in range(1, repeats + 1)))
peer_runs = [peer_run(r) for r in range(1, repeats + 1)]
x = explains[0]
tm, pm = medians(tune_runs), medians(peer_runs, ("matmul_model_shapes_gflops", "achieved_fraction_model_shapes"))

# Equal first-step losses (the adapters start as the base model: B = 0) prove equal batches.
loss_check = None
peer_ok = [p for p in peer_runs if "error" not in p]
if peer_ok:
    a, b = tune_runs[0]["first_step_loss"], peer_ok[0]["first_step_loss"]
    rel = abs(a - b) / abs(a)
    loss_check = {"tune": a, "peer": b, "relative_difference": rel, "same_batches": rel <= 1e-3}
    counts = {"frozen_params": x["frozen_params"], "lora_params": x["lora_params"],
              "model_flops_per_token": x["model_flops_per_token"]}
    flops_check = {k: (v, peer_ok[0][k]) for k, v in counts.items() if abs(v - peer_ok[0][k]) > 1e-6 * v}

commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
if commit and subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src", "include", "Makefile"]).returncode:
    commit += "-dirty"
commit = commit or "unknown"
now = datetime.datetime.now(datetime.timezone.utc)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
doc = {
    "benchmark": "train", "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit,
    "machine": {"cpu": cpu, "nproc": os.cpu_count(), "loadavg_after": os.getloadavg()},
    "tune_binary": {"sha256": hashlib.sha256(open(env["TUNE"], "rb").read()).hexdigest(),
                    "modified": datetime.datetime.fromtimestamp(os.path.getmtime(env["TUNE"]), datetime.timezone.utc)
                    .strftime("%Y-%m-%dT%H:%M:%SZ")},
    "settings": {"model": env["MODEL"], "micro_batch_size": int(env["BATCH"]), "sequence_len": int(env["SEQ"]),
                 "timed_steps": int(env["STEPS"]), "warmup_steps": 1, "threads": int(env["THREADS"]),
                 "repeats": repeats, "order": "alternating: tune explain, tune, peer",
                 "lora": "r 16, alpha 32, dropout 0, every linear layer", "tune_env": "OPENBLAS_CORETYPE unset",
                 "sgemm": f"{x['sgemm']['n']}^3 fp32, best of 3 after a warm-up; tune through its BLAS (tune explain), "
                          "the peer through torch.matmul, same threads",
                 "tokens": "B x T of every micro-batch, padding included", "step_tokens": tokens},
    "model_flops_per_token": {"total": x["model_flops_per_token"], "frozen_params": x["frozen_params"],
                              "lora_params": x["lora_params"], "layers": x["layers"], "sequence_len": x["sequence_len"],
                              "attention_width": x["attention_width"],
                              "formula": "4 frozen + 6 lora + 6 layers T width; recomputation is overhead"},
    "medians": {"tune": tm, "peer": pm},
    "ratios": {"speed": tm["tokens_per_s"] / pm["tokens_per_s"], "memory": tm["peak_rss_mib"] / pm["peak_rss_mib"]}
    if pm else None,
    "first_step_loss_check": loss_check,
    "runs": {"tune": list(tune_runs), "peer": peer_runs},
}
os.makedirs(env["OUT_DIR"], exist_ok=True)
out = os.path.join(env["OUT_DIR"], f"train-{now:%Y%m%d}-{commit}.json")
n = 1
while os.path.exists(out):
    n += 1
    out = os.path.join(env["OUT_DIR"], f"train-{now:%Y%m%d}-{commit}-{n}.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")

fmt = "{:<18} {:>9} {:>9} {:>11} {:>14} {:>14} {:>9}"
print(fmt.format("", "tokens/s", "peak MiB", "first step", "sgemm GFLOP/s", "model GFLOP/s", "of sgemm"))
fpt = x["model_flops_per_token"]
for name, m in (("tune", tm), ("transformers+peft", pm)):
    if not m:
        print(f"{name:<18} not run: {peer_runs[0].get('error', '')[-200:]}")
        continue
    first = f"{m['first_step_s']:.2f} s" if "first_step_s" in m else "-"
    print(fmt.format(name, f"{m['tokens_per_s']:.1f}", f"{m['peak_rss_mib']:.0f}", first, f"{m['sgemm_gflops']:.1f}",
                     f"{m['tokens_per_s'] * fpt / 1e9:.1f}", f"{100 * m['achieved_fraction']:.1f}%"))
if pm:
    print(f"ratio (tune / peer): speed {doc['ratios']['speed']:.2f}x, memory {doc['ratios']['memory']:.2f}x")
print(f"medians of {repeats} runs each; first step: launch to the end of the first optimizer step, data cache warm")
parts = [f"{name} {m['startup_s']:.2f} s + {m['first_step_s'] - m['startup_s']:.2f} s" for name, m in
         (("tune", tm), ("peer", pm)) if m and "startup_s" in m]
if parts:
    print("first step = start-up (launch to the step's start) + the step itself: " + ", ".join(parts))
print(f"model FLOPs per token {si(fpt)} = 4 x {si(x['frozen_params'])} frozen linear and lm_head parameters"
      f" + 6 x {si(x['lora_params'])} LoRA parameters + 6 x {x['layers']} layers x {x['sequence_len']} x "
      f"{x['attention_width']} (causal attention)")
print(f"sgemm: {x['sgemm']['n']}^3 fp32 through tune's BLAS (tune explain) and torch.matmul, {env['THREADS']} threads")
if pm:
    print(f"peer's torch.matmul at the model's linear shapes: {pm['matmul_model_shapes_gflops']:.1f} GFLOP/s "
          f"(model FLOPs reach {100 * pm['achieved_fraction_model_shapes']:.1f}% of it)")
if loss_check:
    verdict = "the same batches" if loss_check["same_batches"] else "DIFFERENT: the batches or the models differ"
    print(f"first-step loss: tune {loss_check['tune']:.6f}, peer {loss_check['peer']:.6f}, relative difference "
          f"{loss_check['relative_difference']:.1e}: {verdict}")
    for k, (a, b) in flops_check.items():
        print(f"warning: {k}: tune counts {a:.0f}, the peer {b:.0f}")
print("wrote", out)
