"""The cards a run can be planned for: memory, bandwidth, bf16 compute and a typical price, in one table.

Sources (vendor specification sheets; dense bf16 tensor throughput, no sparsity; GeForce cards at their
FP32-accumulate rate, half the FP16-accumulate one):
- RTX 3070: NVIDIA GeForce RTX 3070 specifications and the Ampere GA10x whitepaper (GA104: 184 tensor
  cores, 1.73 GHz boost): 8 GB GDDR6, 448 GB/s, 40.6 TFLOPS bf16.
- RTX 4090: NVIDIA Ada Lovelace (AD102) whitepaper: 24 GB GDDR6X, 1,008 GB/s, 165.2 TFLOPS bf16.
- L4: NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, 121 TFLOPS bf16.
- A100 80GB SXM: NVIDIA A100 datasheet: 80 GB HBM2e, 2,039 GB/s, 312 TFLOPS bf16.
- H100 SXM: NVIDIA H100 datasheet: 80 GB HBM3, 3,350 GB/s, 989 TFLOPS bf16.
- H200 SXM: NVIDIA H200 datasheet: 141 GB HBM3e, 4,800 GB/s, 989 TFLOPS bf16.
Memory is planned at what CUDA reports as the card's total (`torch.cuda.mem_get_info`'s total, the "total capacity"
of torch's out-of-memory messages), not the size on the box: ECC and the driver's reservations come off first. RTX
3070: 7.78 GiB of 8 (torch's out-of-memory messages on that card); RTX 4090: 23.65 GiB; L4: 22.05 GiB; A100 80GB:
79.15 GiB; H100 SXM: 79.19 GiB; H200: 139.8 GiB (as reported by torch on those cards, rounded; a card's own
`make gpu-check` env row gives the exact figure).
Prices are typical on-demand rental rates per card-hour on GPU clouds and marketplaces (late 2025, rounded;
they vary by provider and week): an assumption, printed with every plan, overridden by `--usd-per-hour` or
`cost.gpu_hour_usd`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from thinkswitch.sizing.shapes import GiB

GB = 10**9
CUDA_CONTEXT = GiB // 2  # assumed: what the CUDA context and torch take before the model loads
CARD_NOTE = ("Bandwidth and dense bf16 TFLOPS from the vendors' specification sheets; memory as CUDA reports the "
             "card's total (torch's total capacity, e.g. 7.78 GiB on an 8 GB RTX 3070, 79.19 GiB on an H100 80GB), "
             "not the size on the box; prices are typical on-demand rates (late 2025), an assumption; free memory "
             "before a model loads: that total less 0.5 GiB of CUDA context.")


@dataclass(frozen=True)
class Card:
    """One GPU: what the memory plan and the time model need."""

    key: str  # the name `--cards` takes
    name: str
    memory_bytes: int  # the total CUDA reports (usable), not the nominal size
    bandwidth: float  # bytes/s (memory bandwidth)
    bf16_flops: float  # dense bf16 tensor FLOP/s
    usd_per_hour: Optional[float]  # typical rental price; None: unknown
    nominal_gb: Optional[int] = None  # the size on the box (GB, as sold), for the description

    @property
    def free_bytes(self) -> int:
        """Free before a model loads: the card less `CUDA_CONTEXT`."""
        return self.memory_bytes - CUDA_CONTEXT

    def describe(self) -> str:
        price = f", ~{self.usd_per_hour:.2f} USD/h" if self.usd_per_hour is not None else ""
        sold = f" of {self.nominal_gb} GB" if self.nominal_gb else ""
        return (f"{self.name} ({self.memory_bytes / GiB:.2f} GiB{sold}, {self.bandwidth / GB:,.0f} GB/s, "
                f"{self.bf16_flops / 1e12:.0f} TFLOPS bf16{price})")


# key: name, nominal memory (GB, as sold), memory CUDA reports (GiB), bandwidth (GB/s), dense bf16 TFLOPS, USD per hour
_TABLE = {
    "3070": ("RTX 3070", 8, 7.78, 448, 40.6, 0.15),
    "4090": ("RTX 4090", 24, 23.65, 1008, 165.2, 0.50),
    "l4": ("L4", 24, 22.05, 300, 121, 0.70),
    "a100-80": ("A100 80GB", 80, 79.15, 2039, 312, 1.80),
    "h100": ("H100 SXM", 80, 79.19, 3350, 989, 2.80),
    "h200": ("H200 SXM", 141, 139.8, 4800, 989, 3.80),
}
CARDS = {key: Card(key, name, int(usable * GiB), bw * GB, tflops * 1e12, usd, nominal)
         for key, (name, nominal, usable, bw, tflops, usd) in _TABLE.items()}
# names a GPU reports (torch.cuda.get_device_name), matched case-insensitively, most specific first
_REPORTED = (("h200", "h200"), ("h100", "h100"), ("a100", "a100-80"), ("4090", "4090"), ("3070", "3070"),
             ("l4", "l4"))


def card(key: str) -> Card:
    """A card of the table by its key (`3070`, `h100`, ...)."""
    try:
        return CARDS[key.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown card {key!r}; known: {', '.join(CARDS)} (or --memory and --bandwidth)") from None


def card_for_device_name(name: str) -> Optional[Card]:
    """The table's card for a name a GPU reports (`NVIDIA H200`), or None."""
    lowered = name.lower()
    return next((CARDS[key] for part, key in _REPORTED if part in lowered), None)


def parse_amount(text: str, unit: str) -> float:
    """`8GB` / `8GiB` (-> bytes, binary: cards are sold in binary sizes), `448GB/s` (-> bytes/s, decimal as vendors
    give bandwidth), `40TFLOPS` (-> FLOP/s)."""
    raw = str(text).strip().replace(" ", "")
    scales = {"bytes": {"GIB": GiB, "GB": GiB, "MIB": 2**20, "MB": 2**20, "TB": 2**40, "TIB": 2**40},
              "bandwidth": {"GB/S": GB, "TB/S": 1000 * GB, "MB/S": 10**6},
              "flops": {"TFLOPS": 1e12, "PFLOPS": 1e15, "GFLOPS": 1e9}}[unit]
    for suffix, scale in sorted(scales.items(), key=lambda kv: -len(kv[0])):
        if raw.upper().endswith(suffix):
            try:
                value = float(raw[: -len(suffix)])
            except ValueError:
                break
            if value > 0:
                return value * scale
    raise ValueError(f"expected an amount like {' or '.join('1' + s.replace('/S', '/s') for s in scales)}, "
                     f"got {text!r}")


def custom_card(memory: str, bandwidth: str, tflops: Optional[str] = None,
                usd_per_hour: Optional[float] = None) -> Card:
    """A card given by its numbers (`--memory 8GB --bandwidth 448GB/s [--tflops 40TFLOPS]`); compute defaults
    to the bandwidth's ratio on an RTX 3070 (90 FLOP per byte) when not given."""
    mem, bw = parse_amount(memory, "bytes"), parse_amount(bandwidth, "bandwidth")
    flops = parse_amount(tflops, "flops") if tflops else bw * CARDS["3070"].bf16_flops / CARDS["3070"].bandwidth
    return Card("custom", "your card", int(mem), bw, flops, usd_per_hour)
