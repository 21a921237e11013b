"""Keep OpenSSL out of a running node until something needs TLS (issue #17, docs/performance.md "Process cost").

A node serves plain TCP and UDP (TLS, if any, usually ends at a proxy in front of it), and its hashes are SHA-1
for the WebSocket accept key, SHA-256 and BLAKE2b for small inputs. Yet importing trio loads OpenSSL twice over: its
TLS stream imports `ssl` (libssl, libcrypto), and its DTLS module imports `hmac`, whose `hashlib` loads libcrypto
through `_hashlib`. Measured on this machine (Python 3.11, Debian's OpenSSL 3): 4.5 MiB of the node's idle RSS,
for code an idle node never runs.

`defer_openssl()`, called by `homing node run` before anything imports trio, changes two things in this process:

1. `hashlib` uses CPython's built-in implementations (`_sha1`, `_sha256`, `_sha512`, `_blake2`, `_sha3`, `_md5`)
   instead of OpenSSL's: every algorithm the node uses is there, with the same results
   (tests/unit/test_leanimports.py), at 0.5-0.75 µs per small digest either way. This is hashlib's documented
   fallback for a Python built without OpenSSL; `_hashlib` is marked absent in `sys.modules` so its import fails
   as it would there.
2. `ssl` is a stand-in module until the first use of one of its names; that use imports the real `ssl` (libssl
   and libcrypto load then), copies its names into the stand-in, so modules that imported the stand-in see the
   real objects from then on, and puts the real module in `sys.modules`. The push sender's HTTPS connections and
   a TLS listener work as before, a moment later the first time.

A node run inside another program (tests, `homing demo`) leaves that program's imports alone, as gcpolicy.py does
with the collector: only the process that is nothing but a node changes them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any


def defer_openssl() -> bool:
    """Apply both changes if neither module is loaded yet; False (and nothing changed) if either already is."""
    if any(name in sys.modules for name in ("ssl", "_ssl", "hashlib", "_hashlib", "hmac")):
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # "import _hashlib" now raises ImportError
    sys.modules["ssl"] = _stand_in("ssl")
    return True


def _stand_in(name: str) -> types.ModuleType:
    """A module named `name` that imports the real one when one of its attributes is first read."""
    stand_in = types.ModuleType(name)
    stand_in.__spec__ = importlib.util.find_spec(name)
    lock = threading.Lock()  # trio's worker threads (getaddrinfo) may be the first to touch it

    def load() -> types.ModuleType:
        with lock:
            current = sys.modules.get(name)
            if current is not None and current is not stand_in:
                return current
            sys.modules.pop(name, None)
            try:
                real = importlib.import_module(name)
            except BaseException:
                sys.modules[name] = stand_in
                raise
            # the real names, so that `import ssl` done earlier sees them directly from now on; our own
            # __getattr__ stays only for names the real module lacks, which then raise AttributeError from it
            stand_in.__dict__.update({k: v for k, v in real.__dict__.items() if k != "__getattr__"})
            return real

    def __getattr__(attr: str) -> Any:  # PEP 562: called only for names the module's dict lacks
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # import machinery probing (__path__, __file__...) does not load it
        return getattr(load(), attr)

    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]
    return stand_in
