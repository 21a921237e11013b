"""Write the seed corpora: `python -m fuzz.make_corpus` -> fuzz/corpus/<target>/<digest>, one valid input a file.

Seeds come from `Target.seeds()` (valid messages built with fixed test keys), so the corpus is deterministic;
tests/adversarial/test_fuzz_corpus.py fails when a format changes and the committed corpus is out of date.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def expected() -> dict[str, dict[str, bytes]]:
    """target name -> file name -> contents."""
    from fuzz.targets import TARGETS  # here, not on import: fuzz.run imports CORPUS before instrumenting the targets

    return {t.name: {hashlib.sha256(s).hexdigest()[:16]: s for s in t.seeds()} for t in TARGETS}


def main() -> None:
    seeds = expected()
    shutil.rmtree(CORPUS, ignore_errors=True)
    for name, files in seeds.items():
        folder = CORPUS / name
        folder.mkdir(parents=True)
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)
    print(f"wrote {sum(len(f) for f in seeds.values())} seeds for {len(seeds)} targets under {CORPUS}")


if __name__ == "__main__":
    main()
