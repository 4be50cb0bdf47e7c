#!/usr/bin/env python3
# The last step of bench/cuda-check.sh: gathers every figure of the run folder DIR into DIR/summary.json (each step's
# exit status and seconds, the GPU and what else ran on it, the CUDA status, the mocha counts and failures, the
# end-to-end result, the attention timings), reading only what the steps wrote; a missing file is reported as missing.
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
        "endToEnd": read_json(os.path.join(d, "e2e.json")),
        "attention": read_json(os.path.join(d, "attention.json")),
    }
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary)[:2000])


if __name__ == "__main__":
    main()
