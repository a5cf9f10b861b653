import json
import os
import sys
from pathlib import Path

# Triton reads TRITON_INTERPRET when @triton.jit runs, so it must be set before
# anything imports the kernels: Triton kernels then run on CPU tensors.
os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Under mutation testing (mutmut runs pytest in its own process, from mutants/), the tests
    covering a mutant run fastest first, by the durations mutmut recorded: a mutant is then
    killed by its quickest failing test instead of after minutes of slower ones."""
    stats = Path("mutmut-stats.json")
    if "mutmut" not in sys.modules or not stats.is_file():
        return
    durations = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
