#!/usr/bin/env python3
"""Dev-only: ByteTrack settings chosen leave-one-sequence-out on the shared MOT17 sequences.

For every setting on a small grid (track buffer, first-association match threshold, new-track
threshold, and the published additions that need no parameter: NSA Kalman noise, BoT-SORT's
xywh box state, OC-SORT's re-update, filled gaps; 480 settings, about twelve minutes on two
cores),
`streamtrack eval mot --track` scores each set of three sequences (pooled, as
TrackEval combines them); each fold picks the setting with the best pooled HOTA on its three
(with SELECT=hota+idf1: the best pooled HOTA + IDF1, the two figures the tracking target
names) and is scored on the fourth, which it never saw. Prints the folds, the held-out sequences
beside the reference tracker (Ultralytics ByteTrack, ../shared/data/README.md), the held-out
results pooled, and what the fixed defaults give on the same sequences. Last, the setting the
same rule picks on all four is scored on TUD-Campus and TUD-Stadtmitte, which no fold saw.

Usage: STREAMTRACK=path/to/binary [SELECT=hota|hota+idf1] scripts/tracker_loso.py
(DATA=../shared/data by default)
"""
import itertools
import os
import subprocess
import sys
import tempfile

STREAMTRACK = os.environ.get("STREAMTRACK", "target/release/streamtrack")
DATA = os.environ.get("DATA", "../shared/data")
SEQUENCES = ["MOT17-02", "MOT17-04", "MOT17-05", "MOT17-09"]
# Reference per sequence (HOTA, IDF1) and pooled HOTA, from ../shared/data/README.md.
REFERENCE = {
    "MOT17-02": (33.18, 39.63),
    "MOT17-04": (53.06, 62.23),
    "MOT17-05": (42.93, 54.55),
    "MOT17-09": (48.11, 58.50),
}
HELD_BACK = ["TUD-Campus", "TUD-Stadtmitte"]
REFERENCE_HELD_BACK = {"TUD-Campus": (47.71, 67.17), "TUD-Stadtmitte": (51.53, 71.04)}
REFERENCE_COMBINED_HOTA = 47.87
# Ultralytics' bytetrack.yaml: a 30-frame buffer is one second on these 30 fps sequences
# (MOT17-05 runs at 14 fps, where the reference keeps 30 frames, about 2 s).
# What each fold maximises on its three training sequences.
SELECT = os.environ.get("SELECT", "hota")
if SELECT not in ("hota", "hota+idf1"):
    sys.exit(f"SELECT must be hota or hota+idf1, not {SELECT}")
REFERENCE_SETTINGS = {"track_buffer": 1.0, "match_thresh": 0.8, "new_track_thresh": 0.25}
GRID = {
    "track_buffer": [0.5, 1.0, 1.5, 2.0, 3.0],
    "match_thresh": [0.7, 0.8, 0.9],
    "new_track_thresh": [0.25, 0.4],
    "nsa": ["false", "true"],
    "box_state": ['"xyah"', '"xywh"'],
    "oru": ["false", "true"],
    "fill_gaps": ["false", "true"],
}


def evaluate(settings, sequences, workdir, track=True):
    """Rows of `eval mot` as {name: (hota, mota, idf1, idsw)} for `sequences` under `settings`."""
    config = os.path.join(workdir, "config.toml")
    with open(config, "w") as f:
        f.write("[tracker]\n")
        for key, value in settings.items():
            f.write(f"{key} = {value}\n")
    res = os.path.join(workdir, "res")
    args = [STREAMTRACK, "-q", "eval", "mot", "--config", config, "--gt-root",
            f"{DATA}/mot", "--res", res] + (["--track"] if track else []) + sequences
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] != "sequence":
            rows[parts[0]] = tuple(float(v) for v in parts[1:5])
    return rows


def main():
    settings_grid = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    with tempfile.TemporaryDirectory() as workdir:
        held_out = {}
        chosen = {}
        def best_on(train):
            def score(settings):
                hota, _, idf1, _ = evaluate(settings, train, workdir)["COMBINED"]
                return hota + idf1 if SELECT == "hota+idf1" else hota

            return max(settings_grid, key=score)

        for test in SEQUENCES:
            train = [s for s in SEQUENCES if s != test]
            best = best_on(train)
            chosen[test] = best
            held_out[test] = evaluate(best, [test], workdir)[test]
            print(f"fold {test}: chosen on {', '.join(train)}: {best}")
        # The held-out tracks of the four folds, scored together.
        pooled_dir = os.path.join(workdir, "pooled")
        os.makedirs(os.path.join(pooled_dir, "res"))
        for test in SEQUENCES:
            evaluate(chosen[test], [test], workdir)
            os.replace(os.path.join(workdir, "res", f"{test}.txt"),
                       os.path.join(pooled_dir, "res", f"{test}.txt"))
        pooled = evaluate({}, SEQUENCES, pooled_dir, track=False)["COMBINED"]
        defaults = evaluate({}, SEQUENCES, workdir)
        as_reference = evaluate(REFERENCE_SETTINGS, SEQUENCES, workdir)
        on_all = best_on(SEQUENCES)
        held_back = evaluate(on_all, HELD_BACK, workdir)
    print("\nsequence     held-out HOTA  IDF1  IDSW | reference HOTA  IDF1 | ours with the "
          "reference's settings HOTA  IDF1 | defaults HOTA  IDF1")
    for s in SEQUENCES:
        h, r, a, d = held_out[s], REFERENCE[s], as_reference[s], defaults[s]
        print(f"{s}      {h[0]:7.2f} {h[2]:6.2f} {h[3]:5.0f} |         {r[0]:6.2f} {r[1]:6.2f} |"
              f"                              {a[0]:6.2f} {a[2]:6.2f} |"
              f"       {d[0]:6.2f} {d[2]:6.2f}")
    print(f"held out, pooled: HOTA {pooled[0]:.2f} MOTA {pooled[1]:.2f} IDF1 {pooled[2]:.2f} "
          f"IDSW {pooled[3]:.0f} (reference HOTA {REFERENCE_COMBINED_HOTA}, "
          f"{pooled[0] - REFERENCE_COMBINED_HOTA:+.2f}); defaults pooled: HOTA "
          f"{defaults['COMBINED'][0]:.2f}; ours with the reference's settings pooled: HOTA "
          f"{as_reference['COMBINED'][0]:.2f}")
    print(f"\nchosen on all four: {on_all}")
    for s in HELD_BACK:
        h, r = held_back[s], REFERENCE_HELD_BACK[s]
        print(f"{s:15} HOTA {h[0]:6.2f} IDF1 {h[2]:6.2f} IDSW {h[3]:3.0f} | reference HOTA "
              f"{r[0]:6.2f} IDF1 {r[1]:6.2f}")


if __name__ == "__main__":
    sys.exit(main())
