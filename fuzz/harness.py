"""One atheris (libFuzzer) run of one target: `python -m fuzz.harness NAME [libFuzzer flags] [CORPUS_DIR...]`.

The homing packages are instrumented for coverage as they are imported, so libFuzzer steers towards new code
paths in the decoders. An exception the target does not document ends the run with the crashing input saved
(`-artifact_prefix=`) and a non-zero exit; `python -m fuzz.run` drives every target this way, importing the
targets once and forking a process per target (`instrumented_targets`, then `fuzz`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from fuzz.targets import Target

INSTRUMENTED = ["node", "bootstrap", "fuzz"]  # top-level packages; atheris's `include` matches no finer


def instrumented_targets() -> dict[str, Target]:
    """Import `fuzz.targets` and every homing module it reaches with coverage instrumentation (about 5 s of CPU).

    A module imported before this is not instrumented, and libFuzzer would fuzz it blind: that is refused.
    """
    import atheris

    if "fuzz.targets" in sys.modules:
        raise RuntimeError("fuzz.targets was imported before instrumentation: its coverage would be invisible")
    with atheris.instrument_imports(include=INSTRUMENTED):
        from fuzz.targets import BY_NAME
    return BY_NAME


def fuzz(target: Target, libfuzzer_args: list[str]) -> NoReturn:
    """Hand this process to libFuzzer for `target`; libFuzzer ends the process (exit 0 when its time is up)."""
    import atheris

    atheris.Setup([sys.argv[0], *libfuzzer_args], target.run)
    atheris.Fuzz()
    raise SystemExit("libFuzzer returned without ending the process")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m fuzz.harness NAME [libFuzzer flags] [CORPUS_DIR...]")
    targets = instrumented_targets()
    name = sys.argv[1]
    if name not in targets:
        sys.exit(f"unknown target {name!r}; targets: {', '.join(targets)}")
    fuzz(targets[name], sys.argv[2:])


if __name__ == "__main__":
    main()
