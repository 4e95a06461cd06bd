# Last call (carry .dev/a2): rebuild the audio, then run what "$@" names from the repo root with the
# environment set, e.g. bash benchmarks/gpu_lease/run.sh python3 -m benchmarks.run --quick --device cuda \
#   --model /tmp/dev/model --systems ours --workloads turns --levels 64,256 --skip-install --output-dir $OUT
. /tmp/dev/env.sh
python3 -m benchmarks.gpu_lease.unpack /tmp/dev/a1 .dev/a2 /tmp/dev/audio | tail -1
export BENCH_AUDIO_DIR=/tmp/dev/audio
"$@"
