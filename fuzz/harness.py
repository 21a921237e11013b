"""One atheris (libFuzzer) run of one target: `python -m fuzz.harness NAME [libFuzzer flags] [CORPUS_DIR...]`.

The homing packages are instrumented for coverage as they are imported, so libFuzzer steers towards new code
paths in the decoders. An exception the target does not document ends the run with the crashing input saved
(`-artifact_prefix=`) and a non-zero exit; `python -m fuzz.run` drives every target this way.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m fuzz.harness NAME [libFuzzer flags] [CORPUS_DIR...]")
    import atheris

    with atheris.instrument_imports(include=["node", "bootstrap", "fuzz"]):
        from fuzz.targets import BY_NAME
    name = sys.argv[1]
    if name not in BY_NAME:
        sys.exit(f"unknown target {name!r}; targets: {', '.join(BY_NAME)}")
    target = BY_NAME[name]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
