#!/usr/bin/env bash
# The video benchmark on two cores: teacher forcing in one process, DF then full-sequence in another, then
# all three scored together on more held-out videos (benchmarks/video.py --eval-only --train-report).
#
#   [OUT=name] [FNET=dir] [RUNS=dir] benchmarks/video_benchmark.sh CONFIG TAG [EPISODES] [overrides...]
#
#   OUT=video benchmarks/video_benchmark.sh video_vizdoom32_spatial video_vizdoom32 32   # headline
#   FNET=benchmarks/results/studies/video_feature_net \
#     benchmarks/video_benchmark.sh video_digits16_spatial video_digits16 32 train.steps=7500
#
# Training runs go to RUNS (default runs/bench_TAG)/<method>; the Fréchet feature net is FNET (default
# benchmarks/results/TAG_feature_net; trained by the first process if missing, then shared). Writes
# results/TAG_{tf,dffs}.{json,md} (the training processes, scored on 8 held-out videos) and
# results/OUT.{json,md} + GIF/PNGs (all three methods on EPISODES held-out videos; OUT defaults to TAG).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
if [ $# -lt 2 ] || ! "$py" -c "import sys; from dforce.engine.config import resolve_preset; resolve_preset(sys.argv[1])" "$1" 2>/dev/null; then
    echo "usage: [OUT=name] [FNET=dir] [RUNS=dir] $0 CONFIG TAG [EPISODES] [overrides...] (CONFIG: a preset name or YAML file; got '${1:-}')" >&2
    exit 2
fi
config=$1; tag=$2; episodes=${3:-32}; shift $(( $# < 3 ? $# : 3 ))
out=${OUT:-$tag}
runs=${RUNS:-runs/bench_$tag}
fnet=${FNET:-benchmarks/results/${tag}_feature_net}
common=(--config "$config" --runs "$runs" --feature-net "$fnet" --quiet)
"$py" benchmarks/video.py "${common[@]}" --name "${tag}_tf" --methods teacher_forcing --no-media "$@" &
tf=$!
# the second process starts once the first has saved the feature net (provenance.json is written last)
while [ ! -e "$fnet/provenance.json" ] && kill -0 "$tf" 2>/dev/null; do sleep 5; done
"$py" benchmarks/video.py "${common[@]}" --name "${tag}_dffs" --methods df,full_sequence --no-media "$@"
wait "$tf"
"$py" benchmarks/video.py "${common[@]}" --name "$out" --eval-only --episodes "$episodes" \
    --train-report "benchmarks/results/${tag}_tf.json" --train-report "benchmarks/results/${tag}_dffs.json" "$@"
