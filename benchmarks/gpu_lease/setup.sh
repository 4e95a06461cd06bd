# Call 1 on a lent GPU machine (carry .dev/w): install the wheels, link cuBLAS 13 under CUDA 12's name for
# CTranslate2 when no CUDA 12 is there, write /tmp/dev/env.sh for the later calls, check the imports.
set -x
mkdir -p /tmp/dev
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/w/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
find_lib() { find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$1" -print 2>/dev/null | head -1; }
C12=$(find_lib 'libcublas.so.12*'); C13=$(find_lib 'libcublas.so.13*')
mkdir -p /tmp/cu
if [ -n "$C12" ]; then LIBDIR=$(dirname "$C12"); else
  LIBDIR=$(dirname "$C13")
  ln -sf "$LIBDIR/libcublas.so.13" /tmp/cu/libcublas.so.12
  ln -sf "$LIBDIR/libcublasLt.so.13" /tmp/cu/libcublasLt.so.12
fi
STUB=$PWD/benchmarks/gpu_lease/av_stub
echo "export PYTHONPATH=/tmp/site:$STUB:$PWD PYTHONUNBUFFERED=1 LD_LIBRARY_PATH=/tmp/cu:$LIBDIR:\$LD_LIBRARY_PATH" > /tmp/dev/env.sh
. /tmp/dev/env.sh
python3 -c "import ctranslate2 as c; print('ct2', c.__version__, c.get_cuda_device_count(), c.get_supported_compute_types('cuda'))"
python3 -c "import stream_server.app, benchmarks.run, benchmarks.cpu_layout; print('imports ok')"
nproc; python3 --version
