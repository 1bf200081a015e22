"""The GPU table of the capacity planner: datasheet figures, cited in ``docs/models.md``.

FLOP/s are *dense* tensor-core peaks (NVIDIA's datasheets print the 2:4-sparsity figure
first; the dense one is half of it). Memory is the board's memory in bytes (decimal GB, as
the datasheets count it), bandwidth its peak memory bandwidth in bytes per second.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9
TERA = 10**12


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU model's figures."""

    name: str
    label: str
    memory_bytes: int
    bandwidth_bytes_per_s: float
    bf16_flops: float
    """Dense BF16 tensor FLOP/s (FP32 accumulate)."""
    fp8_flops: float | None = None
    """Dense FP8 tensor FLOP/s; None where the GPU has no FP8 tensor cores."""

    @property
    def fp8(self) -> bool:
        """Whether the GPU computes in FP8 (Hopper, Ada); others run FP8 weights as BF16."""
        return self.fp8_flops is not None

    def flops(self, quant: str) -> float:
        """Dense FLOP/s a model quantised as ``quant`` computes at.

        FP8 weights on an FP8 GPU compute in FP8; everything else (bf16, and the
        weight-only int8 / int4 / FP8-on-Ampere schemes, which dequantise to BF16)
        computes at the BF16 rate.
        """
        if quant == "fp8" and self.fp8_flops is not None:
            return self.fp8_flops
        return self.bf16_flops


_GPUS = (
    Gpu("h100-80gb", "NVIDIA H100 SXM 80GB", 80 * GB, 3.35 * TERA, 989.5 * TERA, 1979 * TERA),
    Gpu("h200", "NVIDIA H200 SXM 141GB", 141 * GB, 4.8 * TERA, 989.5 * TERA, 1979 * TERA),
    Gpu("a100-80gb", "NVIDIA A100 SXM 80GB", 80 * GB, 2.039 * TERA, 312 * TERA),
    Gpu("l40s", "NVIDIA L40S 48GB", 48 * GB, 0.864 * TERA, 362.05 * TERA, 733 * TERA),
    Gpu(
        "rtx-4090",
        "NVIDIA GeForce RTX 4090 24GB",
        24 * GB,
        1.008 * TERA,
        165.2 * TERA,
        330.3 * TERA,
    ),
    Gpu("rtx-3090", "NVIDIA GeForce RTX 3090 24GB", 24 * GB, 0.936 * TERA, 71 * TERA),
    Gpu("a10g", "NVIDIA A10G 24GB (AWS G5)", 24 * GB, 0.6 * TERA, 70 * TERA),
)

GPUS: dict[str, Gpu] = {gpu.name: gpu for gpu in _GPUS}
"""The GPU table by name."""


def gpu(name: str) -> Gpu | None:
    """The GPU called ``name`` (case-insensitive; ``h100`` means the 80 GB SXM), or None."""
    key = name.strip().lower()
    return GPUS.get(key) or GPUS.get(_ALIASES.get(key, ""))


_ALIASES = {
    "h100": "h100-80gb",
    "h100-sxm": "h100-80gb",
    "h200-141gb": "h200",
    "a100": "a100-80gb",
    "l40s-48gb": "l40s",
    "rtx4090": "rtx-4090",
    "rtx3090": "rtx-3090",
}
