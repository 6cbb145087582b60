"""Birder-layout checkpoints (`.pt`): writing them, and telling which registered network one holds.

A birder checkpoint is a `torch.save` dict with `state`, `birder_version`, `task`, `signature`,
`class_to_idx` and `rgb_stats` (optionally `config`); it does not name its network. We find it, in order:
an explicit name, a `network` entry (written by this project), birder's file naming (`NETWORK[_TAG].pt`),
and last a structural match of the state dict against birder's registry (cached per birder version)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from identify.errors import IdentifyError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("state", "signature", "class_to_idx", "rgb_stats")


def write_checkpoint(
    net: torch.nn.Module,
    network: str,
    class_to_idx: dict[str, int],
    size: tuple[int, int],
    rgb_stats: dict[str, Any],
    path: Path,
) -> Path:
    """Save `net` in birder's layout (plus our `network` entry, which birder ignores). Returns `path`."""
    import birder
    from birder.net.base import get_signature

    signature = get_signature(input_shape=(1, 3, *size), num_outputs=len(class_to_idx))
    payload = {
        "state": net.state_dict(),
        "birder_version": birder.__version__,
        "task": net.task,
        "signature": signature,
        "class_to_idx": class_to_idx,
        "rgb_stats": rgb_stats,
        "network": network,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, checked for birder's keys. Raises IdentifyError on anything else."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise IdentifyError("model_not_found", f"no checkpoint at {path}") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise IdentifyError("bad_checkpoint", f"{path} is not a readable torch checkpoint ({exc})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise IdentifyError("bad_checkpoint", f"{path} is not in birder's layout (needs {', '.join(REQUIRED_KEYS)})")
    return payload


def classification_networks() -> list[str]:
    from birder.model_registry import Task, registry

    return registry.list_models(task=Task.IMAGE_CLASSIFICATION)


def network_from_filename(path: Path, names: list[str]) -> str | None:
    """The longest registered network that the file stem names, as birder names files (`NETWORK[_TAG]`)."""
    stem = path.stem
    matches = [name for name in names if stem == name or stem.startswith(f"{name}_") or stem.startswith(f"{name}-")]
    return max(matches, key=len) if matches else None


def _key_fingerprint(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def _fingerprint_cache_path() -> Path:
    import birder

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "identify" / f"birder-{birder.__version__}-state-keys.json"


def _registry_fingerprints(names: list[str]) -> dict[str, str]:
    """network -> fingerprint of its state-dict keys. Costs about a minute once per birder version."""
    from birder.model_registry import registry

    cache = _fingerprint_cache_path()
    if cache.is_file():
        try:
            return json.loads(cache.read_text())
        except ValueError:
            pass  # a damaged cache is rebuilt below
    log.warning("indexing birder's network registry once (about a minute); cached in %s", cache)
    table: dict[str, str] = {}
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        for name in names:
            try:
                table[name] = _key_fingerprint(list(registry.net_factory(name, 10, 3).state_dict()))
            except Exception:  # a few networks cannot be built on the meta device; they cannot match
                continue
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    os.replace(tmp, cache)
    return table


def _shapes_match(name: str, payload: dict[str, Any]) -> bool:
    from birder.common.lib import get_channels_from_signature, get_num_labels_from_signature, get_size_from_signature
    from birder.model_registry import registry

    signature = payload["signature"]
    state = payload["state"]
    try:
        with torch.device("meta"):
            net = registry.net_factory(
                name,
                get_num_labels_from_signature(signature),
                get_channels_from_signature(signature),
                config=payload.get("config") or None,
                size=get_size_from_signature(signature),
            )
    except Exception:
        return False
    expected = net.state_dict()
    return expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in expected)


def network_from_structure(payload: dict[str, Any], names: list[str]) -> str | None:
    """The registered network whose state dict has exactly the checkpoint's keys and shapes."""
    wanted = _key_fingerprint(list(payload["state"]))
    fingerprints = _registry_fingerprints(names)
    candidates = [name for name in names if fingerprints.get(name) == wanted]
    return next((name for name in candidates if _shapes_match(name, payload)), None)


def resolve_network(path: Path, payload: dict[str, Any], network: str | None = None) -> str:
    """Which birder network `payload` (read from `path`) holds. Raises IdentifyError if none fits."""
    names = classification_networks()
    if network is not None:
        if network not in names:
            raise IdentifyError("unknown_network", f"birder has no image-classification network named {network!r}")
        return network
    stored = payload.get("network")
    if isinstance(stored, str) and stored in names:
        return stored
    from_name = network_from_filename(path, names)
    if from_name is not None and _shapes_match(from_name, payload):
        return from_name
    found = network_from_structure(payload, names)
    if found is None:
        raise IdentifyError(
            "unknown_network",
            f"cannot tell which birder network {path} holds: pass --network NAME or name the file NETWORK[_TAG].pt",
        )
    return found
