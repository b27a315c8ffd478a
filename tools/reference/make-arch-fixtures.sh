#!/usr/bin/env bash
# Regenerates tests/fixtures/arch/: tiny random Hugging Face models (safetensors + config.json)
# and their float32 reference logits from transformers (tools/reference/gen_arch_fixtures.py),
# and tiny tokenizer.json files with their encodings by `tokenizers`
# (tools/reference/gen_hf_tokenizer_fixtures.py).
#
#   tools/reference/make-arch-fixtures.sh          (or: make reference-arch)
#
# Creates .venv-arch (gitignored) with tools/reference/requirements-arch.txt unless ARCH_PYTHON
# names a python that already has them.  The fixtures are committed: the tests and CI need
# neither torch nor transformers.  Extra arguments go to gen_arch_fixtures.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

die() { echo "reference-arch: error: $*" >&2; exit 1; }

req=$here/requirements-arch.txt
if [ -n "${ARCH_PYTHON:-}" ]; then
  py=$ARCH_PYTHON
  [ -x "$py" ] || die "ARCH_PYTHON=$py is not an executable python"
else
  venv=$repo/.venv-arch
  py=$venv/bin/python
  if ! "$py" -c 'import torch, transformers, safetensors' 2>/dev/null; then
    echo "reference-arch: creating $venv (torch from PyPI: several GB, a few minutes)" >&2
    python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet -r "$req" || die "pip could not install $req (needs PyPI)"
  fi
fi
# the fixtures are pinned to the versions in requirements-arch.txt
for pkg in torch transformers; do
  want=$(sed -n "s/^$pkg==//p" "$req")
  have=$("$py" -c "import $pkg; print($pkg.__version__.split('+')[0])") || die "$py cannot import $pkg"
  [ "$have" = "$want" ] || die "$py has $pkg $have, the fixtures are pinned to $want"
done
"$py" "$here/gen_arch_fixtures.py" --out tests/fixtures/arch "$@"
"$py" "$here/gen_hf_tokenizer_fixtures.py" --out tests/fixtures/arch
