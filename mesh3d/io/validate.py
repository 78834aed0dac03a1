"""Validate glTF/GLB files with the Khronos glTF-Validator (the npm package ``gltf-validator``).

The validator runs in node through ``gltf_validate.mjs`` beside this file; one node process checks a
whole batch of files, so its start-up (~0.2 s) is paid once per call, not once per file. The package
is found in ``$MESH3D_NODE_MODULES`` or ``<repo>/node_modules`` (``make node_modules/.installed``
installs it there from ``package-lock.json``).

A report is a plain dict per file::

    {"path": "a.glb", "numErrors": 1, "numWarnings": 2, "numInfos": 15, "numHints": 0,
     "messages": [{"code": "SKIN_SKELETON_INVALID", "severity": "error",
                   "message": "Skeleton node is not a common root.", "pointer": "/skins/0/skeleton"}],
     "truncated": False, "validatorVersion": "2.0.0-dev.3.10"}

The counts are always the full counts; ``messages`` holds at most ``max_messages`` entries, errors
first (``truncated`` says when some were cut). A message locates its issue by ``pointer`` (a JSON
pointer into the glTF) or ``offset`` (a byte offset in a GLB). Input the validator refuses outright
(not glTF at all) gets one error of code ``VALIDATOR_REJECTED``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Union

from mesh3d.errors import Mesh3DError

SCRIPT = Path(__file__).with_name("gltf_validate.mjs")
REPO_ROOT = Path(__file__).resolve().parents[2]
SEVERITIES = ("error", "warning", "info", "hint")  # the validator's severity codes 0..3
# Paths per node process: keeps the command line far below the OS limit for any batch size.
BATCH = 256


def node_modules_dir() -> Path:
    """The node_modules folder searched for the validator: ``$MESH3D_NODE_MODULES`` or ``<repo>/node_modules``."""
    env = os.environ.get("MESH3D_NODE_MODULES")
    return Path(env).resolve() if env else REPO_ROOT / "node_modules"


def _problem() -> str:
    """Why the validator cannot run here, or "" when it can."""
    if shutil.which("node") is None:
        return "node not found: install Node.js (>= 18) to validate glTF files"
    if not (node_modules_dir() / "gltf-validator" / "package.json").is_file():
        return (
            f"glTF-Validator not installed in {node_modules_dir()}: run `make node_modules/.installed` "
            "in the mesh3d repository (npm ci), or set MESH3D_NODE_MODULES to a node_modules folder "
            "holding the npm package gltf-validator"
        )
    return ""


def validator_available() -> bool:
    """True when node and the gltf-validator package are both present."""
    return _problem() == ""


def _report(raw: dict, path: Path) -> dict:
    """The flat report of one file from the validator's nested JSON report."""
    issues = raw["issues"]
    messages = []
    for m in issues["messages"]:
        msg = {"code": m["code"], "severity": SEVERITIES[m["severity"]], "message": m["message"]}
        for key in ("pointer", "offset"):
            if key in m:
                msg[key] = m[key]
        messages.append(msg)
    return {
        "path": str(path),
        "numErrors": int(issues["numErrors"]),
        "numWarnings": int(issues["numWarnings"]),
        "numInfos": int(issues["numInfos"]),
        "numHints": int(issues["numHints"]),
        "messages": messages,
        "truncated": bool(issues["truncated"]),
        "validatorVersion": raw["validatorVersion"],
    }


def validate_gltf(paths: Union[str, Path, Iterable[Union[str, Path]]], max_messages: int = 100) -> list[dict]:
    """Validate glTF (.gltf with its external buffers) and GLB files; one report per path, in order.

    ``max_messages`` caps the messages kept per file (the counts stay complete). Raises Mesh3DError
    when a file is missing or node or the validator is not installed.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise Mesh3DError(f"cannot validate {p}: no such file")
    problem = _problem()
    if problem:
        raise Mesh3DError(problem)
    env = dict(os.environ, MESH3D_NODE_MODULES=str(node_modules_dir()))
    reports = []
    for start in range(0, len(paths), BATCH):
        batch = paths[start : start + BATCH]
        cmd = ["node", str(SCRIPT), "--max-messages", str(int(max_messages)), *map(str, batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 or len(lines) != len(batch):
            raise Mesh3DError(f"glTF-Validator failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        reports.extend(_report(json.loads(line), p) for line, p in zip(lines, batch))
    return reports


def format_report(report: dict, verbose: bool = False) -> str:
    """A human summary of one report: the counts, then one line per error and warning.

    With ``verbose`` infos and hints are listed too. For ``mesh3d validate FILE...``.
    """

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    counts = [report[k] for k in ("numErrors", "numWarnings", "numInfos", "numHints")]
    status = "INVALID" if counts[0] else "valid"
    head = ", ".join(plural(n, w) for n, w in zip(counts, SEVERITIES))
    lines = [f"{report['path']}: {status} ({head})"]
    shown = [m for m in report["messages"] if verbose or m["severity"] in ("error", "warning")]
    for m in shown:
        where = m.get("pointer") or (f"byte {m['offset']}" if "offset" in m else "")
        lines.append(f"  {m['severity']:<7} {m['code']}" + (f" at {where}" if where else "") + f": {m['message']}")
    listed = sum(counts) if verbose else counts[0] + counts[1]
    if listed > len(shown):
        lines.append(f"  ... {listed - len(shown)} more not shown")
    return "\n".join(lines)
