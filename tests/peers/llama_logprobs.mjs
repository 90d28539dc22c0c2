// Runs llama.cpp (through node-llama-cpp) on GGUF files and reports, for every position of a
// token sequence, llama.cpp's log-probability of the next token and its top-1 token, plus
// llama.cpp's own tokenization of a text. Usage: node llama_logprobs.mjs PEER_DIR REQUEST OUT
//   REQUEST: {"models": [path...], "sequences": [[id...]...], "text": "..."}
//   OUT:     {"models": [{"model", "error"?, "tokenized", "logp": [...], "top1": [...]}]}
// logp/top1 concatenate the positions 0..n-2 of every sequence, each run from an empty cache.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [peerDir, reqPath, outPath] = process.argv.slice(2);
const req = JSON.parse(readFileSync(reqPath, 'utf8'));
const entry = join(peerDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
const { getLlama } = await import(pathToFileURL(entry).href);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });

const out = { models: [] };
for (const modelPath of req.models) {
  const result = { model: modelPath };
  out.models.push(result);
  let model;
  try {
    model = await llama.loadModel({ modelPath });
  } catch (e) {
    result.error = String((e && e.message) || e);  // llama.cpp's reason for rejecting the file
    continue;
  }
  if (req.text !== undefined) result.tokenized = model.tokenize(req.text);
  const longest = Math.max(...req.sequences.map((s) => s.length));
  const ctx = await model.createContext({ contextSize: Math.max(longest, 512), batchSize: Math.max(longest, 512), threads: 1 });
  result.logp = [];
  result.top1 = [];
  const seq = ctx.getSequence();
  for (const tokens of req.sequences) {
    await seq.clearHistory();
    const n = tokens.length;
    const input = tokens.map((t, i) => (i + 1 < n ? [t, { generateNext: { logits: true } }] : t));
    const res = await seq.controlledEvaluate(input);
    for (let i = 0; i + 1 < n; i++) {
      const logits = res[i].next.logits;  // Map token -> raw logit, sorted high to low
      const max = logits.values().next().value;  // the first is the largest
      let sum = 0;
      for (const v of logits.values()) sum += Math.exp(v - max);
      result.logp.push(logits.get(tokens[i + 1]) - (max + Math.log(sum)));
      result.top1.push(logits.keys().next().value);
    }
  }
  await ctx.dispose();
  await model.dispose();
}
writeFileSync(outPath, JSON.stringify(out));
