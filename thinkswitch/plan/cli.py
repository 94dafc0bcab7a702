"""`thinkswitch-plan`'s command line: the run's overrides, the cards, a price, a calibration file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from thinkswitch.errors import ConfigError
from thinkswitch.plan import __doc__ as DOC
from thinkswitch.plan.calibration import check_rows
from thinkswitch.plan.render import plan_text
from thinkswitch.sizing.cards import card, custom_card
from thinkswitch.sizing.timing import Assumptions, calibrate

ALL_CARDS = ("3070", "4090", "l4", "a100-80", "h100", "h200")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="thinkswitch-plan", description=DOC.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DOC.split("\n\n", 1)[1])
    p.add_argument("overrides", nargs="*", help="the overrides a run takes (key=value, group=option)")
    p.add_argument("--cards", default=None, help="comma list of: 3070, 4090, l4, a100-80, h100, h200 (default: all)")
    p.add_argument("--memory", help="a card of your own: its memory as CUDA reports it (torch.cuda.mem_get_info's "
                   "total), e.g. 7.78GB (read as GiB)")
    p.add_argument("--bandwidth", help="its memory bandwidth, e.g. 448GB/s")
    p.add_argument("--tflops", help="its dense bf16 compute, e.g. 40TFLOPS (default: 90 FLOP per byte of bandwidth)")
    p.add_argument("--usd-per-hour", type=float, default=None, help="price per card-hour (default: cost.gpu_hour_usd, "
                   "else the card's typical price)")
    p.add_argument("--calibrate", type=Path, help="a `make gpu-check` output (JSON lines): sets the efficiency "
                   "factors and MFU from its measurements")
    p.add_argument("--prompt-tokens", type=int, default=Assumptions.prompt_tokens)
    p.add_argument("--answer-tokens", type=int, default=Assumptions.answer_tokens)
    args = p.parse_intermixed_args(argv)  # overrides before, between or after the options
    bad = [f"{flag}: must be > 0, got {value}" for flag, value in
           (("--prompt-tokens", args.prompt_tokens), ("--answer-tokens", args.answer_tokens)) if value < 1]
    if args.usd_per_hour is not None and not args.usd_per_hour >= 0:
        bad.append(f"--usd-per-hour: must be >= 0, got {args.usd_per_hour}")
    if bad:
        p.exit(2, f"error: {'; '.join(bad)}\n")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    try:
        if bool(args.memory) != bool(args.bandwidth):
            raise ConfigError("--memory and --bandwidth go together (a card of your own)")
        cards = [card(k) for k in (args.cards.split(",") if args.cards else [])]
        if args.memory:
            cards.append(custom_card(args.memory, args.bandwidth, args.tflops, args.usd_per_hour))
        if not cards:
            cards = [card(k) for k in ("3070", "4090", "l4", "a100-80", "h100", "h200")]
        a = Assumptions(prompt_tokens=args.prompt_tokens, answer_tokens=args.answer_tokens)
        if args.calibrate:
            check_rows(args.calibrate)
            a = calibrate(args.calibrate, a)
        sys.stdout.write(plan_text(args.overrides, cards, a, args.usd_per_hour))
    except (ConfigError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except Exception as e:  # Hydra's composition errors: a bad override
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            from thinkswitch.cli import composition_error

            sys.stderr.write(composition_error(e) + "\n")
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
