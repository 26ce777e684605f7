"""Is the GPU stack usable? `python -m runners.doctor --config X [--nproc N] [--quick]` (`make doctor`).

One line per check, PASS / FAIL / SKIP with the reason and the fix; the checks live in
engine.doctor (GPU runs run their quick part before any work). Exit code 0 when nothing
FAILs, 1 when a check FAILs, 2 for a usage or config error.
"""
import sys

from engine.doctor import main
from engine.errors import run_command

if __name__ == "__main__":
    sys.exit(run_command(main))
