"""Batch-1 latency: generated C++ against jax.jit on XLA CPU, for the bundled example model(s).

Run: python benchmarks/latency.py   (prints a table; nothing is asserted)
"""
from __future__ import annotations

import numpy as np

import jaxpr2sofie as j2s
from jaxpr2sofie.cli import _machine, latency_table
from jaxpr2sofie.examples import jet_tagger, jet_tagger_params


def main():
    print(f"machine: {_machine()}\n")
    for batch in (1, 64):
        x = np.zeros((batch, 16), np.float32)
        params = jet_tagger_params()
        m = j2s.convert(jet_tagger, params, x, name=f"JetTaggerB{batch}")
        print(f"jet tagger MLP 16-64-64-5, batch {batch}")
        print(latency_table(m, jet_tagger, params, x))
        print()


if __name__ == "__main__":
    main()
