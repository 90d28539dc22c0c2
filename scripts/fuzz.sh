#!/usr/bin/env bash
# Runs one libFuzzer target (tests/fuzz/targets.h) for SECONDS under ASan + UBSan:
#   bash scripts/fuzz.sh TARGET SECONDS      (TARGET: gguf gguf_file safetensors config imatrix llama2c llama2c_tokenizer policy bitplan sweep
#                                             tokenizer_json torch_bin st_index onnx stats)
# Builds build-fuzz/ with clang, makes seed inputs with our own writers (build-fuzz/seeds/TARGET),
# fuzzes with tests/fuzz/corpus/TARGET (inputs worth keeping: every crasher, minimized, goes
# there; the normal suite replays that directory) and tests/fuzz/dict/TARGET.dict when present.
# Prints libFuzzer's final stats line; exits non-zero on a crash, leaving crash-* in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: fuzz.sh TARGET SECONDS}
secs=${2:?usage: fuzz.sh TARGET SECONDS}
bash scripts/deps.sh  # clang among them
[[ -f build/bin/quant ]] || bash scripts/build.sh >/dev/null
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link -g -O1"
[[ -f build-fuzz/CMakeCache.txt ]] || CXX=clang++ cmake -S . -B build-fuzz "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DQUANT_FUZZ=ON -DQUANT_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-fuzz --target "fuzz_$t" -j "$(nproc)" >/dev/null

# Seeds: small valid files of each format, written by our own tools.
q=build/bin/quant
seeds=build-fuzz/seeds/$t
stories=../shared/models/stories260K
if [[ ! -d $seeds ]]; then
  mkdir -p "$seeds"
  s=$(mktemp -d)
  case $t in
    gguf|gguf_file)
      for ty in Q4_0 Q8_0 F16; do $q convert "$stories/stories260K.bin" --tokenizer "$stories/tok512.bin" --qtype "$ty" -o "$seeds/$ty.gguf" --quiet >/dev/null; done ;;
    safetensors)
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 -o "$s/st" --quiet >/dev/null
      cp "$s/st/blk.0.safetensors" "$seeds/" ;;
    config) cp models/kjvwiki-9m/config.json "$seeds/" ;;
    imatrix)
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 --imatrix "$seeds/im.gguf" --quiet >/dev/null
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 --imatrix "$seeds/im.dat" --quiet >/dev/null ;;
    llama2c) cp "$stories/stories260K.bin" "$seeds/" ;;
    llama2c_tokenizer) cp "$stories/tok512.bin" "$seeds/" ;;
    policy) printf '[{"match": "*_norm.weight", "qtype": "F32"}, {"match": "blk.*.attn_v.weight", "qtype": "Q6_K"}, {"match": "*", "qtype": "int4 g128 asym"}]' > "$seeds/policy.json" ;;
    sweep|bitplan)
      $q sweep models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 --proxy-only --method rtn --bits 2,4 \
        --granularity kind -o "$s/sweep.json" --quiet >/dev/null
      $q plan "$s/sweep.json" --linear-bpw 3 -o "$s/plan.json" --quiet >/dev/null
      if [[ $t == sweep ]]; then cp "$s/sweep.json" "$seeds/"; else cp "$s/plan.json" "$seeds/"; fi ;;
    tokenizer_json|torch_bin)  # small files built with Debian's python3 (stdlib only), as HF and torch.save lay them out
      /usr/bin/python3 - "$t" "$seeds" <<'PY'
import json, struct, sys, zipfile
t, out = sys.argv[1], sys.argv[2]
if t == "tokenizer_json":
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    vocab = {chr(c): i for i, c in enumerate(cs)}
    merges = ["\u0120 t", "h e", "\u0120t he", "i n", "e r", "1 2"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    for name, rx in (("llama3", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                     ("qwen2", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")):
        j = {"version": "1.0",
             "added_tokens": [{"id": len(vocab), "content": "<|begin_of_text|>", "special": True},
                              {"id": len(vocab) + 1, "content": "<|eot|>", "special": True}],
             "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                 {"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False},
                 {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
             "model": {"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": name == "llama3"}}
        open(f"{out}/{name}.json", "w").write(json.dumps(j))
else:
    def pickle(tensors):  # protocol 2: OrderedDict of torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())
        s = b"\x80\x02ccollections\nOrderedDict\n)R("
        for i, (name, kind, shape) in enumerate(tensors):
            numel = 1
            for d in shape: numel *= d
            stride, acc = [], 1
            for d in reversed(shape): stride.insert(0, acc); acc *= d
            s += b"X" + struct.pack("<I", len(name)) + name.encode()
            s += b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(X" + struct.pack("<I", 7) + b"storage" + b"ctorch\n" + kind.encode() + b"\n"
            s += b"X" + struct.pack("<I", len(str(i))) + str(i).encode() + b"X" + struct.pack("<I", 3) + b"cpu" + b"J" + struct.pack("<i", numel) + b"tQ"
            s += b"J" + struct.pack("<i", 0) + b"(" + b"".join(b"J" + struct.pack("<i", d) for d in shape) + b"t"
            s += b"(" + b"".join(b"J" + struct.pack("<i", d) for d in stride) + b"t" + b"\x89ccollections\nOrderedDict\n)RtR"
        return s + b"u."
    tensors = [("model.embed_tokens.weight", "FloatStorage", [4, 3]), ("model.norm.weight", "HalfStorage", [3]),
               ("lm_head.weight", "BFloat16Storage", [4, 3])]
    size = {"FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2}
    with zipfile.ZipFile(f"{out}/pytorch_model.bin", "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle(tensors))
        for i, (_, kind, shape) in enumerate(tensors):
            numel = 1
            for d in shape: numel *= d
            z.writestr(f"archive/data/{i}", bytes(range(numel * size[kind])))
        z.writestr("archive/version", "3\n")
PY
      ;;
    stats)
      $q calibrate models/kjvwiki-9m --calib data/kjv/kjv_heldout.txt --nsamples 2 --seqlen 64 -o "$s/st" --quiet >/dev/null
      cp "$s/st/manifest.json" "$seeds/" ;;
    st_index)
      printf '{"metadata": {"total_size": 24}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}' > "$seeds/index.json" ;;
    onnx)
      $q convert "$stories/stories260K.bin" --tokenizer "$stories/tok512.bin" --bits 4 --group-size 32 -o "$s/o/model.onnx" --quiet >/dev/null
      cp "$s/o/model.onnx" "$seeds/" ;;
  esac
  rm -rf "$s"
fi
corpus=tests/fuzz/corpus/$t
mkdir -p "$corpus"
dict=tests/fuzz/dict/$t.dict
work=build-fuzz/work/$t
mkdir -p "$work"
cd build-fuzz
args=(-max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 -max_len=2000000)
[[ -f ../$dict ]] && args+=(-dict="../$dict")
# New inputs go to work/ (scratch); crashers are written here as crash-*; add them to the corpus by hand.
"./bin/fuzz_$t" "${args[@]}" "work/$t" "../$corpus" "seeds/$t" 2>&1 | tee "fuzz-$t.log" | grep -E "^(stat::|#[0-9]+ +DONE|==[0-9]+==ERROR|SUMMARY)" || true
grep -q "ERROR" "fuzz-$t.log" && exit 1
exit 0
