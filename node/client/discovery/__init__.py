"""Client-side discovery (docs/discovery.md): find and verify a node through whichever channel still works.

This is the library API client authors read and nodes use for their own seeds (docs/discovery.md):

    from node.client.discovery import DiscoveryConfig, discover, parse_entry
    result = await discover(DiscoveryConfig(trust=frozenset([registry_key]), registries=("https://reg.example",),
                                            doh=("https://dns.example/dns-query",), names=("_homing.example.org",),
                                            cache=Path("nodes.json"), extra=(parse_entry("homing://node/…"),),
                                            want=1))
    best = result.proven[0] if result.proven else None   # fastest node that proved its pinned id
    result.to_json()                                     # exactly `homing discover --json`

Submodules: `model` (pure data and rules), `cache` (the file of nodes that worked), `sources` (registry and DoH),
`handshake` (the proof-of-id the racer uses), `run` (the orchestration under one deadline).
"""

from node.client.discovery.cache import CACHE_NODES_MAX, load_cache, merge_cache, save_cache
from node.client.discovery.handshake import HandshakeFn, default_handshake
from node.client.discovery.model import Candidate, DiscoveryResult, Found, Source, parse_entry
from node.client.discovery.run import DiscoveryConfig, ProgressFn, discover

__all__ = [
    "CACHE_NODES_MAX",
    "Candidate",
    "DiscoveryConfig",
    "DiscoveryResult",
    "Found",
    "HandshakeFn",
    "ProgressFn",
    "Source",
    "default_handshake",
    "discover",
    "load_cache",
    "merge_cache",
    "parse_entry",
    "save_cache",
]
