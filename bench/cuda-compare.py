#!/usr/bin/env python3
# The GPU-vs-CPU comparisons of bench/cuda-check.sh, on files the runs wrote (no torch, no node):
#   metrics CPU_RUN GPU_RUN --out FILE   two runs' RUN/metrics.jsonl, line by line at the same update: per value
#                                        (loss, recon, kl, text_loss, image_loss, val_loss, ...) the largest relative
#                                        difference |gpu - cpu| / max(|cpu|, 1e-6) and the update where it is, and the
#                                        largest absolute one; train and val lines apart. Names the CPU run compared
#                                        against (its config.yaml's seed, device and steps).
#   tokens CPU_OUT GPU_OUT --out FILE    two `dalle generate` folders' results.jsonl: per image (caption, sample) the
#                                        share of identical tokens of its grid, and where the first difference is
#                                        (sampling is autoregressive: after one different token the rest diverge).
#   grids CPU.npy GPU.npy --out FILE     two token caches' int32 grids (train.npy): the share of identical codes (the
#                                        dVAE's encoding on each device, which the prior then trains on).
# A file that is missing or malformed is an error naming it (exit 1); --out gets the JSON, stdout a one-line summary.
import argparse
import json
import os
import struct
import sys

EPS = 1e-6
# Values of a metrics line that are not losses: counters, rates and schedules that do not tell whether the GPU computes
# what the CPU does (throughput is its own figure), or that are identical by construction.
NOT_COMPARED = {"step", "epoch", "examples_per_s", "images_per_s", "ms_per_update", "lr", "beta", "tau", "val_examples",
                "skipped", "grad_scales", "dead_codes"}


def fail(message):
    sys.exit(f"cuda-compare: {message}")


def read_jsonl(path):
    if not os.path.isfile(path):
        fail(f"{path} is missing")
    rows = []
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                fail(f"{path}:{n} is not JSON ({e})")
            if not isinstance(row, dict):
                fail(f"{path}:{n} is not a JSON object")
            rows.append(row)
    return rows


def run_config(run):
    """seed, device, precision and steps of a run's config.yaml (a few lines read, no YAML library needed)."""
    found = {}
    path = os.path.join(run, "config.yaml")
    if os.path.isfile(path):
        with open(path, errors="replace") as f:
            for line in f:
                key, _, rest = line.strip().partition(":")
                if key in ("seed", "device", "precision", "steps", "batch_size") and key not in found:
                    found[key] = rest.split("#")[0].strip()
    return found


def by_step(rows, kind):
    out = {}
    for row in rows:
        is_val = any(k.startswith("val_") for k in row)
        if (kind == "val") == is_val and isinstance(row.get("step"), int):
            out[row["step"]] = row
    return out


def compare_lines(cpu, gpu):
    steps = sorted(set(cpu) & set(gpu))
    values = {}
    for step in steps:
        for key, a in cpu[step].items():
            b = gpu[step].get(key)
            if key in NOT_COMPARED or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            rel = abs(b - a) / max(abs(a), EPS)
            v = values.setdefault(key, {"max_rel": 0.0, "at_step": step, "max_abs": 0.0, "cpu": a, "gpu": b})
            v["max_abs"] = max(v["max_abs"], abs(b - a))
            if rel >= v["max_rel"]:
                v.update(max_rel=rel, at_step=step, cpu=a, gpu=b)
    return {"steps_compared": len(steps), "first_step": steps[0] if steps else None,
            "last_step": steps[-1] if steps else None, "values": values}


def metrics(cpu_run, gpu_run):
    cpu_rows = read_jsonl(os.path.join(cpu_run, "metrics.jsonl"))
    gpu_rows = read_jsonl(os.path.join(gpu_run, "metrics.jsonl"))
    train = compare_lines(by_step(cpu_rows, "train"), by_step(gpu_rows, "train"))
    val = compare_lines(by_step(cpu_rows, "val"), by_step(gpu_rows, "val"))
    if train["steps_compared"] == 0:
        fail(f"{cpu_run} and {gpu_run} have no metrics line at a common update")
    worst = max(([k, v["max_rel"]] for part in (train, val) for k, v in part["values"].items()), key=lambda kv: kv[1],
                default=[None, None])
    return {"cpu_run": os.path.abspath(cpu_run), "cpu_config": run_config(cpu_run),
            "gpu_run": os.path.abspath(gpu_run), "gpu_config": run_config(gpu_run),
            "largest_rel_diff": worst[1], "largest_rel_diff_value": worst[0], "train": train, "val": val}


def grids_of(out_dir):
    rows = read_jsonl(os.path.join(out_dir, "results.jsonl"))
    grids = {}
    for n, row in enumerate(rows, 1):
        grid = row.get("grid")
        if not isinstance(grid, list):
            fail(f"{out_dir}/results.jsonl record {n} has no token grid")
        grids[(row.get("caption_index"), row.get("sample"))] = (row.get("caption"), grid)
    return grids


def tokens(cpu_out, gpu_out):
    cpu, gpu = grids_of(cpu_out), grids_of(gpu_out)
    keys = sorted(set(cpu) & set(gpu), key=lambda k: (k[0] or 0, k[1] or 0))
    if not keys:
        fail(f"{cpu_out} and {gpu_out} have no image (caption, sample) in common")
    same = total = 0
    images = []
    for key in keys:
        (caption, a), (_, b) = cpu[key], gpu[key]
        if len(a) != len(b):
            fail(f"image {key}: grids of {len(a)} and {len(b)} tokens")
        equal = sum(x == y for x, y in zip(a, b))
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        same += equal
        total += len(a)
        images.append({"caption_index": key[0], "sample": key[1], "caption": caption, "identical": equal / len(a),
                       "first_difference": first})
    return {"cpu_out": os.path.abspath(cpu_out), "gpu_out": os.path.abspath(gpu_out), "images": len(keys),
            "only_cpu": len(set(cpu) - set(gpu)), "only_gpu": len(set(gpu) - set(cpu)),
            "identical_tokens": same / total, "identical_images": sum(i["first_difference"] is None for i in images),
            "per_image": images}


def read_npy_i32(path):
    """The shape and values of a little-endian int32 .npy (format 1.0 / 2.0), as src/core/io writes it."""
    if not os.path.isfile(path):
        fail(f"{path} is missing")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        fail(f"{path} is not a .npy file")
    major = raw[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", raw[8:10]), 10
    else:
        (hlen,), start = struct.unpack("<I", raw[8:12]), 12
    header = raw[start:start + hlen].decode("latin1")
    if "'<i4'" not in header or "'fortran_order': False" not in header:
        fail(f"{path}: expected a C-order '<i4' array, header {header.strip()}")
    shape = tuple(int(s) for s in header.split("'shape':")[1].split("(")[1].split(")")[0].split(",") if s.strip())
    data = raw[start + hlen:]
    count = 1
    for s in shape:
        count *= s
    if len(data) != 4 * count:
        fail(f"{path}: {len(data)} data bytes for shape {shape}")
    return shape, struct.unpack(f"<{count}i", data)


def grids(cpu_npy, gpu_npy):
    (sa, a), (sb, b) = read_npy_i32(cpu_npy), read_npy_i32(gpu_npy)
    if sa != sb:
        fail(f"{cpu_npy} has shape {sa}, {gpu_npy} {sb}")
    same = sum(x == y for x, y in zip(a, b))
    per = sa[1] * sa[2] if len(sa) == 3 else 1
    identical_images = sum(a[i:i + per] == b[i:i + per] for i in range(0, len(a), per))
    return {"cpu": os.path.abspath(cpu_npy), "gpu": os.path.abspath(gpu_npy), "shape": list(sa),
            "identical_codes": same / max(1, len(a)), "identical_images": identical_images}


def main(argv):
    p = argparse.ArgumentParser(description="GPU-vs-CPU comparisons of bench/cuda-check.sh")
    p.add_argument("what", choices=["metrics", "tokens", "grids"])
    p.add_argument("cpu", help="the CPU side: a run folder (metrics), a generate folder (tokens), a .npy (grids)")
    p.add_argument("gpu", help="the GPU side, the same kind")
    p.add_argument("--out", help="write the JSON here")
    a = p.parse_args(argv)
    result = {"metrics": metrics, "tokens": tokens, "grids": grids}[a.what](a.cpu, a.gpu)
    text = json.dumps(result, indent=2)
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, a.out)
    headline = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    print(json.dumps(headline))


if __name__ == "__main__":
    main(sys.argv[1:])
