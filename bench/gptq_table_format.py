#!/usr/bin/env python3
"""Formats build/bench/gptq/results.jsonl (bench/gptq_table.sh) as Markdown with Δppl vs FP16.
Usage: bench/gptq_table_format.py RESULTS.jsonl FP_KJV_LLAMACPP FP_KJV_GPTQ FP_WIKI_LLAMACPP FP_WIKI_GPTQ"""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
fp = dict(zip(["wiki.test.raw/llamacpp", "wiki.test.raw/gptq"], map(float, sys.argv[4:6])))
fp.update(zip(["kjv_heldout.txt/llamacpp", "kjv_heldout.txt/gptq"], map(float, sys.argv[2:4])))
cols = ["kjv_heldout.txt/llamacpp", "kjv_heldout.txt/gptq", "wiki.test.raw/llamacpp", "wiki.test.raw/gptq"]
print("| model | " + " | ".join(f"{c} ppl (Δ) | KL" for c in cols) + " | convert s |")
print("|---|" + "---|---|" * len(cols) + "---|")
print("| FP16 | " + " | ".join(f"{fp[c]:.3f} | " for c in cols) + " |")
for r in rows:
    cells = []
    for c in cols:
        if c not in r:
            cells.append(" | ")
            continue
        p, k = r[c]["ppl"], r[c]["kl"]
        cells.append(f"{p:.3f} ({100 * (p / fp[c] - 1):+.2f}%) | {k:.5f}")
    print(f"| {r['name']} | " + " | ".join(cells) + f" | {r['convert_seconds']:.0f} |")
