"""What the core install and each extra put on disk; one JSON line.

Walks the dependency closure of xlsearch's core requirements and of each extra through the
installed distributions' metadata (``importlib.metadata``; environment markers evaluated
here) and adds up the size of every file each distribution installed. An extra's figure is
what it adds on top of the core. Run it in an environment where ``pip install -e
".[test,e5,ray,parquet,eval]"`` has been done (after ``pip install torch==2.13.0``).

    python bench/bench_install.py
"""
from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

from packaging.requirements import Requirement

MIB = 2 ** 20


def size_of(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        try:
            total += file.locate().stat().st_size
        except OSError:
            pass
    return total


def closure(requirements: list[str], extra: str | None = None) -> set[str]:
    """Names of the installed distributions ``requirements`` pull in, recursively."""
    seen: set[str] = set()
    todo = [(r, extra) for r in requirements]
    while todo:
        text, wanted = todo.pop()
        requirement = Requirement(text)
        env = {"extra": wanted or ""}
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [(r, extra_) for r in dist.requires or [] for extra_ in ([None] + sorted(requirement.extras))]
    return seen


def main() -> int:
    xlsearch = metadata.distribution("xlsearch")
    requires = xlsearch.requires or []
    core_reqs = [r for r in requires if "extra ==" not in r]
    extras = sorted({Requirement(r).marker._markers[0][2].value for r in requires if "extra ==" in r})  # noqa: SLF001
    sizes = {name: size_of(metadata.distribution(name)) for name in
             closure(core_reqs) | {n for e in extras for n in closure(
                 [r.split(";")[0] for r in requires if f'extra == "{e}"' in r])}}
    core = closure(core_reqs)
    out = {"core": {"packages": len(core), "mib": round(sum(sizes[n] for n in core) / MIB, 1),
                    "torch_mib": round(sizes.get("torch", 0) / MIB, 1),
                    "largest": sorted(((n, round(sizes[n] / MIB, 1)) for n in core), key=lambda x: -x[1])[:6]}}
    for extra in extras:
        names = closure([r.split(";")[0] for r in requires if f'extra == "{extra}"' in r]) - core
        out[extra] = {"adds_packages": len(names), "adds_mib": round(sum(sizes[n] for n in names) / MIB, 1),
                      "largest": sorted(((n, round(sizes[n] / MIB, 1)) for n in names), key=lambda x: -x[1])[:4]}
    print(json.dumps({"bench": "install_size", **out, "python": platform.python_version(),
                      "machine": platform.machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
