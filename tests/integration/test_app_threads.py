"""The server's process-wide thread policy, checked in a fresh process (as the server runs) with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Starts the app in this fresh process (lifespan in TestClient's thread, the real model), and reports the
# numpy BLAS and OpenMP pools before, while running and after shutdown.
PROBE = """
import json
import ctranslate2  # CTranslate2's OpenMP runtime is loaded: its pool must stay as it is
from starlette.testclient import TestClient
from threadpoolctl import threadpool_info
from stream_server.app import create_app
from stream_server.config import Settings

def pools():
    info = threadpool_info()
    return {api: sorted({p["num_threads"] for p in info if p["user_api"] == api}) for api in ("blas", "openmp")}

before = pools()
with TestClient(create_app(Settings())) as client:
    ready = client.get("/readyz").status_code
    running = pools()
print(json.dumps({"before": before, "running": running, "after": pools(), "ready": ready}))
"""


def test_started_server_runs_numpy_blas_on_one_thread() -> None:
    # numpy starts one BLAS thread per core (OPENBLAS_NUM_THREADS is set to 2 here to make that so on any
    # machine); their spinning between feature extractions cost a 16-core GPU machine 13 cores at 64 streams
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ready"] == 200
    assert seen["before"]["blas"] == [2]
    assert seen["running"]["blas"] == [1]
    assert seen["after"]["blas"] == [2]  # a stopped app gives an embedding program its limits back
    assert seen["running"]["openmp"] == seen["before"]["openmp"] != []
