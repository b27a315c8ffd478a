#!/usr/bin/env bash
# Regenerates kvx's reference fixtures (tests/fixtures/smollm2_*.json, smollm2_f32_*.json and
# the tokenizer fixtures) with llama.cpp through llama-cpp-python.
#
#   tools/reference/make-fixtures.sh            (or: make reference)
#
# Creates .venv-ref (gitignored) with tools/reference/requirements.txt unless REF_PYTHON names
# a python that already has them (e.g. REF_PYTHON=/tmp/refvenv/bin/python).  llama-cpp-python
# is compiled from source (a few minutes) with a portable x86-64 build that still uses AVX2 and
# AVX-512, so fixtures do not depend on the -march of whoever made them.  Needs the model
# (make model) and the corpus (made here with tools/gather-corpus.sh when missing).
# Extra arguments go to gen_model_fixtures.py (e.g. --only ppl).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
model=${KVX_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}

die() { echo "reference: error: $*" >&2; exit 1; }

if [ -n "${REF_PYTHON:-}" ]; then
  py=$REF_PYTHON
  [ -x "$py" ] || die "REF_PYTHON=$py is not an executable python"
else
  venv=$repo/.venv-ref
  py=$venv/bin/python
  if ! "$py" -c 'import llama_cpp, numpy' 2>/dev/null; then
    echo "reference: creating $venv (builds llama.cpp; takes a few minutes)" >&2
    python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$py" -m pip install --quiet --upgrade pip
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      "$py" -m pip install --quiet --no-binary llama-cpp-python -r "$here/requirements.txt" ||
      die "pip could not install $here/requirements.txt (needs cmake, a C++ compiler, network)"
  fi
fi
want=$(sed -n 's/^llama-cpp-python==//p' "$here/requirements.txt")
have=$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)') ||
  die "$py cannot import llama_cpp"
[ "$have" = "$want" ] || die "$py has llama-cpp-python $have, the fixtures are pinned to $want"

[ -f "$model" ] || die "$model is missing (make model)"
[ -f data/corpus/eval.txt ] || bash tools/gather-corpus.sh

if [ -f "$here/gen_tokenizer_fixtures.py" ]; then
  echo "reference: tokenizer fixtures" >&2
  "$py" "$here/gen_tokenizer_fixtures.py"
else
  echo "reference: $here/gen_tokenizer_fixtures.py not present; skipping tokenizer fixtures" >&2
fi
echo "reference: model fixtures (teacher logits, perplexity, greedy)" >&2
"$py" "$here/gen_model_fixtures.py" --model "$model" "$@"
echo "reference: model fixtures of the float32 copy (teacher logits, greedy)" >&2
"$py" "$here/gen_model_fixtures.py" --model "$model" --f32 --teacher-tokens 1024 \
  --only teacher,greedy "$@"
