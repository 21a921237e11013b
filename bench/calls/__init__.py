"""Call setup time between two real Chromium pages over a real 3-node federation (docs/performance.md, "Call setup")."""
