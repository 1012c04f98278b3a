"""What this CPU computes natively, from the flags the kernel reports.

The scorer's `auto` choice depends on it: bf16 matmuls are fast only with
AMX or AVX-512 BF16 (elsewhere they are emulated, ~100x slower than fp32),
int8 ones gain most with VNNI. Flags come from /proc/cpuinfo; where that is
missing (macOS, Windows) nothing is assumed and the portable choice is made.
DISTILL_CPU_FLAGS (space-separated, e.g. "avx2" or "amx_bf16 avx512_bf16")
replaces what the CPU reports: for containers that hide flags, or to force the
portable path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
OVERRIDE = "DISTILL_CPU_FLAGS"
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def amx(self) -> bool:
        """AMX tiles for bf16: the one bf16 flag that has always meant fast bf16 here."""
        return "amx_bf16" in self.flags

    @property
    def int8(self) -> bool:
        return any(flag in self.flags for flag in INT8_FLAGS)

    def describe(self) -> str:
        found = [flag for flag in BF16_FLAGS + INT8_FLAGS if flag in self.flags]
        return ", ".join(found) or "no bf16/int8 matrix extensions"


@lru_cache(maxsize=1)
def cpu_features(cpuinfo: Path = CPUINFO) -> CpuFeatures:
    """The first processor's flags (all cores of a machine report the same), or DISTILL_CPU_FLAGS."""
    if OVERRIDE in os.environ:
        return CpuFeatures(frozenset(os.environ[OVERRIDE].split()))
    return CpuFeatures(read_flags(cpuinfo))


def read_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """What the kernel reports, without the override (empty where unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
