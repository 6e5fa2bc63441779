#!/usr/bin/env python3
"""Dev-only: official TrackEval figures for the tracks `streamtrack eval mot --track` wrote,
to check our Rust port of the metrics. Needs `pip install trackeval numpy==1.26.4 scipy`.

    streamtrack eval mot --gt-root ../shared/data/mot --res /tmp/res --track MOT17-02 MOT17-04
    python3 scripts/trackeval_check.py ../shared/data/mot /tmp/res MOT17-02 MOT17-04
"""
import os
import sys
import tempfile

import trackeval


def main():
    gt_root, res_dir, seqs = sys.argv[1], sys.argv[2], sys.argv[3:]
    work = tempfile.mkdtemp(prefix="trackeval-")
    gt_folder = os.path.join(work, "gt")
    data = os.path.join(work, "trackers", "streamtrack", "data")
    os.makedirs(data)
    for seq in seqs:
        os.makedirs(os.path.join(gt_folder, seq, "gt"))
        src = os.path.abspath(os.path.join(gt_root, seq))
        os.symlink(os.path.join(src, "gt.txt"), os.path.join(gt_folder, seq, "gt", "gt.txt"))
        os.symlink(os.path.join(src, "seqinfo.ini"), os.path.join(gt_folder, seq, "seqinfo.ini"))
        os.symlink(os.path.abspath(os.path.join(res_dir, f"{seq}.txt")),
                   os.path.join(data, f"{seq}.txt"))
    seqmap = os.path.join(work, "seqmap.txt")
    with open(seqmap, "w") as f:
        f.write("name\n" + "".join(f"{s}\n" for s in seqs))
    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": gt_folder, "TRACKERS_FOLDER": os.path.join(work, "trackers"),
        "TRACKERS_TO_EVAL": ["streamtrack"], "SEQMAP_FILE": seqmap, "SKIP_SPLIT_FOL": True,
        "BENCHMARK": "MOT17", "SPLIT_TO_EVAL": "train", "PRINT_CONFIG": False,
    })
    evaluator = trackeval.Evaluator({"PRINT_RESULTS": False, "PRINT_CONFIG": False,
                                     "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                                     "PLOT_CURVES": False, "TIME_PROGRESS": False})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
    results, _ = evaluator.evaluate([dataset], metrics)
    per_seq = results["MotChallenge2DBox"]["streamtrack"]
    for seq in seqs + ["COMBINED_SEQ"]:
        r = per_seq[seq]["pedestrian"]
        print(f"{seq}: HOTA {100 * r['HOTA']['HOTA'].mean():.3f} "
              f"MOTA {100 * r['CLEAR']['MOTA']:.3f} IDF1 {100 * r['Identity']['IDF1']:.3f} "
              f"IDSW {r['CLEAR']['IDSW']}")


if __name__ == "__main__":
    main()
