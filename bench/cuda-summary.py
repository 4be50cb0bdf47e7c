#!/usr/bin/env python3
# The last step of bench/cuda-check.sh: gathers every figure of the run folder DIR into DIR/summary.json (each step's
# exit status and seconds, the GPU and what else ran on it, the CUDA status, the mocha counts and failures, the
# end-to-end result, the attention timings; the GPU-vs-CPU comparisons of train-dvae, train-prior and generate, the fp16
# run's grad_scales and the peak device memory of fp16 against fp32, `dalle config --device cuda`'s estimate of each
# prior run's peak against the measured one (fp32, fp16), the speed against PyTorch), reading only what the
# steps wrote; a missing file is reported as missing.
#   python3 bench/cuda-summary.py DIR
import json
import os
import sys


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"missing": os.path.basename(path)}
    except (OSError, ValueError) as e:
        return {"unreadable": f"{os.path.basename(path)}: {e}"}


def read_text(path, limit=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read(limit).strip()
    except OSError:
        return None


def mocha(path):
    r = read_json(path)
    if "stats" not in r:
        return r
    s = r["stats"]
    return {"passes": s.get("passes"), "failures": s.get("failures"), "pending": s.get("pending"),
            "failed": [{"test": t.get("fullTitle"), "error": (t.get("err") or {}).get("message", "")[:500]}
                       for t in r.get("failures", [])]}


def read_jsonl(path):
    rows = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        return None
    return rows


def comparison(path):
    """The headline of a bench/cuda-compare.py file (the full file stays beside summary.json)."""
    r = read_json(path)
    if "missing" in r or "unreadable" in r:
        return r
    keep = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
    for part in ("train", "val"):
        if isinstance(r.get(part), dict):
            keep[part] = {k: {"max_rel": v["max_rel"], "at_step": v["at_step"]} for k, v in r[part].get("values", {}).items()}
            keep[part]["steps_compared"] = r[part].get("steps_compared")
    if "cpu_config" in r:
        keep["cpu_config"] = r["cpu_config"]
    return keep


def fp16(d):
    """grad_scales of the fp16 prior run at each logged update, and peak device memory fp16 vs fp32 (same run)."""
    rows = read_jsonl(os.path.join(d, "prior-gpu-fp16", "metrics.jsonl"))
    scales = [{"step": r["step"], "grad_scales": r["grad_scales"], "skipped": r.get("skipped")}
              for r in rows or [] if isinstance(r.get("grad_scales"), list)]
    peak16 = read_json(os.path.join(d, "prior-gpu-fp16.json")).get("peakBytesInUse")
    peak32 = read_json(os.path.join(d, "prior-gpu.json")).get("peakBytesInUse")
    out = {"grad_scales": scales or "missing (no metrics line with grad_scales in prior-gpu-fp16/metrics.jsonl)",
           "peak_bytes_fp16": peak16, "peak_bytes_fp32": peak32}
    if isinstance(peak16, (int, float)) and isinstance(peak32, (int, float)) and peak32 > 0:
        out["peak_ratio_fp16_to_fp32"] = peak16 / peak32
    return out


def memory_estimate(d, name):
    """`dalle config --device cuda --json` of run NAME (NAME.estimate.json) against its measured peakBytesInUse
    (NAME.json): the estimate for the run's own precision, batch and recompute, the ratio, and whether it is within 20%."""
    est = read_json(os.path.join(d, f"{name}.estimate.json"))
    if "missing" in est or "unreadable" in est:
        return est
    precision = (est.get("runtime") or {}).get("precision")
    training = ((est.get("estimates") or {}).get("device") or {}).get("training") or {}
    row = training.get(precision)
    if not isinstance(row, dict) or not isinstance(row.get("totalBytes"), (int, float)):
        return {"unreadable": f"{name}.estimate.json: no estimates.device.training.{precision}.totalBytes"}
    measured = read_json(os.path.join(d, f"{name}.json")).get("peakBytesInUse")
    out = {"precision": precision, "batch": row.get("batch"), "recompute": row.get("recompute"),
           "estimate_bytes": row["totalBytes"], "measured_peak_bytes": measured,
           "outside_allocator_bytes": row.get("outsideAllocatorBytes")}
    if isinstance(measured, (int, float)) and measured > 0:
        out["ratio_estimate_to_measured"] = row["totalBytes"] / measured
        out["within_20_percent"] = abs(out["ratio_estimate_to_measured"] - 1) <= 0.2
    else:
        out["measured_peak_bytes"] = f"missing (no peakBytesInUse in {name}.json)"
    return out


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: cuda-summary.py DIR (the run folder of bench/cuda-check.sh)")
    d = sys.argv[1]
    steps = {}
    for line in (read_text(os.path.join(d, "steps.tsv"), 100000) or "").splitlines():
        name, rc, secs = (line.split("\t") + ["", ""])[:3]
        steps[name] = {"exit": rc, "seconds": secs}
    summary = {
        "steps": steps,
        "gpu": read_text(os.path.join(d, "gpu.csv")),
        "otherProcessesOnGpu": read_text(os.path.join(d, "gpu-apps.csv")),
        "cudaStatus": read_json(os.path.join(d, "cuda-status.json")),
        "opHarnessOnCuda": mocha(os.path.join(d, "ops-cuda.json")),
        "cudaTests": mocha(os.path.join(d, "cuda-tests.json")),
        "ncclTests": mocha(os.path.join(d, "nccl-tests.json")),
        "endToEnd": read_json(os.path.join(d, "e2e.json")),
        "attention": read_json(os.path.join(d, "attention.json")),
        "trainDvaeGpuVsCpu": comparison(os.path.join(d, "compare-dvae.json")),
        "trainPriorGpuVsCpu": comparison(os.path.join(d, "compare-prior.json")),
        "priorDataGpuVsCpu": comparison(os.path.join(d, "compare-prior-data.json")),
        "generateGpuVsCpu": comparison(os.path.join(d, "compare-generate.json")),
        "fp16": fp16(d),
        "memoryEstimate": {"fp32": memory_estimate(d, "prior-gpu"), "fp16": memory_estimate(d, "prior-gpu-fp16")},
        "peakBytes": {name: read_json(os.path.join(d, f"{name}.json")).get("peakBytesInUse")
                      for name in ("dvae-gpu", "prior-gpu", "prior-gpu-fp16")},
        "speedPriorStepEmoji": read_json(os.path.join(d, "speed-step-emoji.json")),
        "speedPriorStepLarge": read_json(os.path.join(d, "speed-step-large.json")),
        "speedGenerate": read_json(os.path.join(d, "speed-generate.json")),
    }
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary)[:2000])


if __name__ == "__main__":
    main()
