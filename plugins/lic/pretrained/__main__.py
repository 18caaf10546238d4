"""``python -m plugins.lic.pretrained``: the shipped models and what they measure on ``samples``."""

from __future__ import annotations

import sys

from plugins.lic.pretrained import MANIFEST, entries


def main() -> int:
    known = entries()
    if not known:
        print(f"no shipped models ({MANIFEST} is missing)", file=sys.stderr)
        return 1
    print(f"{'name':<36} {'λ':>7} {'steps':>6} {'bpp':>6} {'PSNR':>6} {'L_D':>6}")
    for e in known:
        s = e.record.get("eval", {})
        print(
            f"{e.name:<36} {e.lmbda:>7g} {e.steps:>6} {s.get('bpp', float('nan')):>6.3f} "
            f"{s.get('psnr', float('nan')):>6.2f} {s.get('L_D', float('nan')):>6.3f}"
        )
    print(f"(bpp and PSNR entropy-coded on the samples photographs; files in {MANIFEST.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
