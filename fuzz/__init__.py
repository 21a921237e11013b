"""Fuzzing every decoder homing exposes to untrusted input (docs/security.md, "Adversarial input").

- `fuzz.targets`: one `Target` per decoder: how raw fuzz bytes become the decoder's input, which exceptions the
  decoder documents, and seed inputs built from valid messages. The hypothesis tests in tests/adversarial/ and
  the atheris harness share this table, so both check the same contract.
- `fuzz.harness NAME [libFuzzer flags] [CORPUS...]`: one coverage-guided atheris run of one target.
- `fuzz.run --seconds N`: every harness for N seconds each, forked from one instrumented import; exit 1 on any
  crash, timeout or undocumented exception (the crashing input is kept and its path printed).
- `fuzz.make_corpus`: regenerates `fuzz/corpus/<target>/` from valid messages (deterministic keys and values).
"""
