#!/usr/bin/env python3
"""Dev-only: how each layer of our CPU network scales from one thread to more, inside the
network. Runs `streamtrack bench --layers --json` with `RAYON_NUM_THREADS` set to each of
the thread counts in turn, for several alternating rounds (so a machine whose speed drifts
slows every count alike), and prints per layer the median over the rounds of its time at
each count and the speed-up from the first count to the last; then the same per operation
type, the layers' sum and the network's median.

Set beside `cargo bench -p cpu-conv` with the same `RAYON_NUM_THREADS` values: a
convolution that scales well there, called again and again on the same input, and not
inside the network points at what passes between layers (caches, wake-ups), not at the
kernel.

Usage: layer_scaling.py MODEL [--video V] [--threads 1 2] [--rounds N] [--frames N]
Needs: a built streamtrack (STREAMTRACK=path/to/binary, default target/release/streamtrack).
"""
import argparse
import collections
import json
import os
import statistics
import subprocess


def bench(args, threads):
    """One `bench --layers --json` run: its report for the model."""
    command = [
        os.environ.get("STREAMTRACK", "target/release/streamtrack"),
        "--log-level", "warn",
        "bench", args.video, "-m", args.model, "--device", "cpu",
        "--frames", str(args.frames), "--warmup", "3", "--layers", "--json",
    ]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)[0]


def network_ms(report):
    return next(s["median_ms"] for s in report["stages"] if s["stage"] == "network")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--video", default="../shared/data/video/traffic-640x360.mp4")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()

    # layer index -> thread count -> one time per round
    times = collections.defaultdict(lambda: collections.defaultdict(list))
    labels, network = {}, collections.defaultdict(list)
    for round_ in range(args.rounds):
        for threads in args.threads:
            report = bench(args, threads)
            network[threads].append(network_ms(report))
            for layer in report["layers"]:
                labels[layer["index"]] = (layer["op"], layer["layer"] or "")
                times[layer["index"]][threads].append(layer["ms"])
        print(
            f"round {round_ + 1}: network "
            + ", ".join(f"{t} threads {network[t][-1]:.2f} ms" for t in args.threads)
        )

    first, last = args.threads[0], args.threads[-1]
    medians = {
        i: {t: statistics.median(per[t]) for t in args.threads} for i, per in times.items()
    }
    counts = " ".join(f"{t:>9}" for t in args.threads)
    print(f"\n{'':>4} {'op':<27} {'layer':<36} {counts}  {first}->{last}")
    for i in sorted(medians):
        op, layer = labels[i]
        cells = " ".join(f"{medians[i][t]:9.3f}" for t in args.threads)
        print(f"{i:>4} {op:<27} {layer:<36} {cells}  {scaling(medians[i], first, last)}")

    per_op = collections.defaultdict(lambda: collections.Counter())
    for i, per in medians.items():
        per_op[labels[i][0]].update(per)
    print(f"\n{'op':<27} {counts}  {first}->{last}")
    for op, per in sorted(per_op.items(), key=lambda kv: -kv[1][first]):
        cells = " ".join(f"{per[t]:9.3f}" for t in args.threads)
        print(f"{op:<27} {cells}  {scaling(per, first, last)}")
    total = collections.Counter()
    for per in medians.values():
        total.update(per)
    print(f"{'sum of layers':<27} " + " ".join(f"{total[t]:9.3f}" for t in args.threads)
          + f"  {scaling(total, first, last)}")
    net = {t: statistics.median(network[t]) for t in args.threads}
    print(f"{'network median':<27} " + " ".join(f"{net[t]:9.3f}" for t in args.threads)
          + f"  {scaling(net, first, last)}")


def scaling(per, first, last):
    """The speed-up from `first` threads to `last`, as text."""
    return f"{per[first] / per[last]:.2f}x" if per[last] > 0 else "-"


if __name__ == "__main__":
    main()
