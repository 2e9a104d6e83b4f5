"""Train the FNO surrogate of paper 1 end to end (data -> training -> shipped checkpoint); resumable.

The pipeline is :func:`probinv.surrogate.train_fno` (also ``probinv train-fno``, with the same options); this script
calls it and writes the session summary to ``benchmarks/results/train_fno.json``. Reproduce the shipped network
(about 5 CPU-hours on 2 cores for the full schedule)::

    OMP_NUM_THREADS=2 python3 benchmarks/train_fno.py --data fno_data.nc --samples 5000 \\
        --checkpoint fno_train.pt --export probinv/surrogate/pretrained/paper1.pt

A quick smoke run::

    OMP_NUM_THREADS=2 python3 benchmarks/train_fno.py --data /tmp/small.nc --samples 60 --val 20 --steps 20 \\
        --batch-size 10 --checkpoint /tmp/ck.pt --export /tmp/fno.pt
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from probinv._files import atomic_path  # noqa: E402
from probinv.surrogate import pipeline  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=pipeline.__doc__)
    args = pipeline.add_arguments(ap).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    command = "python3 benchmarks/train_fno.py " + " ".join(sys.argv[1:] if argv is None else argv)
    res = pipeline.train_fno(**pipeline.train_fno_kwargs(args), command=command)
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_fno.json")
    with atomic_path(results) as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
