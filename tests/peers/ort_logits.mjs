// Runs an ONNX model in ONNX Runtime (onnxruntime-node) over windows of token ids.
// Usage: node ort_logits.mjs ORT_DIR MODEL.onnx TOKENS.i32 CTX OUT DUMP [THREADS]
//   TOKENS.i32: windows of CTX int32 token ids back to back; each runs as input_ids [1, CTX].
//   OUT.logits.f32: logits [CTX][vocab] (float32) of the first DUMP windows, back to back.
//   OUT.json: {vocab, windows, seconds, load_seconds, nll: [...], argmax: [...]} where, for each
//   window and row j < CTX - 1, nll = -log softmax(logits[j])[token j+1] (in double) and argmax
//   is the row's first maximum: the GPTQ perplexity protocol's terms, from ONNX Runtime's logits.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const [ortDir, modelPath, tokensPath, ctxArg, outPrefix, dumpArg, threadsArg] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(ortDir), 'package.json'));
const ort = require('onnxruntime-node');
const ctx = Number(ctxArg), dump = Number(dumpArg || 0);
const buf = fs.readFileSync(tokensPath);
const ids = new Int32Array(buf.buffer, buf.byteOffset, buf.length / 4);
if (ids.length === 0 || ids.length % ctx !== 0) throw new Error(`${tokensPath}: ${ids.length} tokens is not a multiple of ${ctx}`);

const t0 = performance.now();
const session = await ort.InferenceSession.create(modelPath, {
  intraOpNumThreads: Number(threadsArg || 1),
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
});
const t1 = performance.now();
const out = fs.openSync(`${outPrefix}.logits.f32`, 'w');
const nll = [], argmax = [];
let vocab = 0;
const windows = ids.length / ctx;
for (let w = 0; w < windows; ++w) {
  const win = new BigInt64Array(ctx);
  for (let i = 0; i < ctx; ++i) win[i] = BigInt(ids[w * ctx + i]);
  const res = await session.run({ input_ids: new ort.Tensor('int64', win, [1, ctx]) });
  const logits = res.logits;
  if (logits.dims.length !== 3 || logits.dims[0] !== 1 || logits.dims[1] !== ctx) throw new Error(`logits dims ${logits.dims}`);
  vocab = logits.dims[2];
  const x = logits.data;
  for (let j = 0; j + 1 < ctx; ++j) {
    const row = j * vocab;
    let mx = -Infinity, arg = 0;
    for (let v = 0; v < vocab; ++v) if (x[row + v] > mx) { mx = x[row + v]; arg = v; }
    let sum = 0;
    for (let v = 0; v < vocab; ++v) sum += Math.exp(x[row + v] - mx);
    nll.push(-(x[row + ids[w * ctx + j + 1]] - mx - Math.log(sum)));
    argmax.push(arg);
  }
  if (w < dump) fs.writeSync(out, Buffer.from(x.buffer, x.byteOffset, x.byteLength));
}
fs.closeSync(out);
const t2 = performance.now();
fs.writeFileSync(`${outPrefix}.json`, JSON.stringify({ vocab, windows, seconds: (t2 - t1) / 1000, load_seconds: (t1 - t0) / 1000, nll, argmax }));
