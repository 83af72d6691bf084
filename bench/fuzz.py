"""The long fuzz run: the generators of ``tests/fuzz_inputs.py`` over many protocol and
model files, each through the command line and the loaders (see ``tests/test_fuzz.py``).

    OMP_NUM_THREADS=1 python3 bench/fuzz.py --protocols 6000 --models 4000

Prints how many files were generated, how many were rejected cleanly (one error line, exit
status 2), how many were valid, and every crash (any other exception or exit status).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tests/ helpers

from tests.fuzz_inputs import (  # noqa: E402
    check_model_file,
    check_protocol_file,
    model_files,
    protocol_files,
)


def fuzz(kind: str, examples: int, seed: int, workdir: Path) -> tuple[Counter, dict]:
    """Run ``examples`` generated files of ``kind`` (``protocol`` or ``model``)."""
    marker = workdir / "INJECTED"
    strategy, check = ((protocol_files, check_protocol_file) if kind == "protocol"
                       else (model_files, check_model_file))
    outcomes: Counter = Counter()
    crashes: dict[str, bytes] = {}

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy(str(marker)))
    def one(content: bytes) -> None:
        try:
            outcomes[check(content, workdir)] += 1
        except Exception as exc:  # noqa: BLE001 - every other outcome is a crash to report
            outcomes["crash"] += 1
            crashes.setdefault(f"{type(exc).__name__}: {str(exc)[:200]}", content[:300])
        if marker.exists():
            outcomes["code executed"] += 1
            marker.unlink()

    one()
    return outcomes, crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", type=int, default=6000)
    parser.add_argument("--models", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for kind, examples in (("protocol", args.protocols), ("model", args.models)):
            started = time.perf_counter()
            outcomes, crashes = fuzz(kind, examples, args.seed, Path(tmp))
            total = sum(v for k, v in outcomes.items() if k != "code executed")
            print(f"{kind} files: {total} generated, {outcomes['rejected']} rejected cleanly "
                  f"(exit 2, one error line), {outcomes['valid']} valid, "
                  f"{outcomes['crash']} crashes, {outcomes['code executed']} executed code; "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            for message, content in crashes.items():
                print(f"  crash {message}\n    input {content!r}")
            failed += outcomes["crash"] + outcomes["code executed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
