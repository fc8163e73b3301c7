"""The process's memory does not grow with the number of call shapes a corpus brings: token-budget calls take
a new shape (rows x longest row) almost every call, and oneDNN, torch's CPU kernel library, would keep a
kernel for each of up to 1,024 shapes, hundreds of MB over a large corpus. Each case runs in a fresh process,
since oneDNN reads its cache's capacity once, at the first model call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from distilbeam.transforms.tasks.runtime import ONEDNN_CACHE_CAPACITY
from tests.conftest import REPO

# Loads the classifier as a task does, runs it over 500 call shapes, and prints the resident memory grown
# between the 100th shape and the last, with the cache capacity oneDNN read.
PROBE = """
import json, os, sys
from pathlib import Path
import torch
from distilbeam.transforms.tasks import Runtime
from tests.transforms.handlers import handler_for

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

handler = handler_for("classify", Path(sys.argv[1]), runtime=Runtime(device="cpu", torch_threads=1))
loaded = handler.load_model()
shapes = [(rows, length) for length in range(4, 104) for rows in (1, 3, 5, 7, 9)]
marks = []
with torch.inference_mode():
    for n, (rows, length) in enumerate(shapes):
        ids = torch.ones((rows, length), dtype=torch.long)
        loaded.model(input_ids=ids, attention_mask=ids)
        if n in (99, len(shapes) - 1):
            marks.append(rss_mb())
capacity = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
print(json.dumps({"grown_mb": marks[1] - marks[0], "capacity": capacity}))
"""


def probe(model: Path, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    environ.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(model)], env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_memory_stays_flat_over_hundreds_of_call_shapes(models_dir):
    got = probe(models_dir / "classifier")
    # 400 new shapes after the first 100: about 26 MB with oneDNN's default capacity, here a few.
    assert got["grown_mb"] < 10, got
    assert got["capacity"] == str(ONEDNN_CACHE_CAPACITY)


def test_a_capacity_the_user_set_is_kept(models_dir):
    assert probe(models_dir / "classifier", ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024")["capacity"] == "1024"
