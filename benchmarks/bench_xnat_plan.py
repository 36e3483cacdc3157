"""XNAT requests and time to plan a run, per session, on an emulated site (printed, not a test).

    .venv/bin/python benchmarks/bench_xnat_plan.py [--sessions 50 500] [--collections 3]

For each size: a strict emulator (tests/xnat_emulator) holding one project of N MR
sessions, each with four scans (scout, T1W, STIR, T2) and, for every pushed session
(all of them), the platform's proposal plus ``--collections - 1`` radiologist SEGs.
The plan a run makes (``list_sessions`` then ``find_cleaned`` with every session's
receipt, what :func:`vhi.cohort.plan.plan_cohort` does for a site) is timed, and the
requests the emulator served are counted: the target is O(sites + sessions), i.e. a
constant number of requests per session whatever the number of collections.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from vhi.sources import make_source  # noqa: E402

from xnat_emulator import XnatEmulator  # noqa: E402
from xnat_emulator.model import ROI_XSI, Assessor, Scan  # noqa: E402
from xnat_emulator.seed import ensure_session  # noqa: E402

USER, PASSWORD = "bench", "bench-pw"
SCANS = (("1", "AAHScout"), ("2", "T1_TSE_COR"), ("3", "STIR_COR_OBL"), ("4", "T2_TSE_COR"))


def seed(emu: XnatEmulator, sessions: int, collections: int) -> dict[str, dict]:
    """N sessions (metadata only: planning downloads nothing); receipts by session key."""
    receipts = {}
    store = emu.store
    with store.lock:
        for n in range(sessions):
            subject, label = f"S{n // 2:04d}", f"E{n:05d}_{'pre' if n % 2 == 0 else 'post'}"
            exp = ensure_session(store, "BENCH", subject, label, uid=f"1.2.3.{n}", date="2024-01-02")
            for scan_id, kind in SCANS:
                exp.scans.append(Scan(id=scan_id, type=kind, series_description=kind,
                                      uid=f"1.2.3.{n}.{scan_id}", frames=23))
            stir_uid = f"1.2.3.{n}.3"
            for c in range(collections):
                ident = f"RoiCollection_{n:05d}_{c}"
                store.state.assessors[ident] = Assessor(
                    id=ident, label=f"VHI_PROPOSAL_{label}" if c == 0 else f"SEG_2024010{c}_000000_000_S3",
                    project="BENCH", session_id=exp.id, xsi_type=ROI_XSI, insert_date=store.insert_date(),
                    fields={"collectionType": "SEG", "name": "SEG", "UID": f"2.25.{n}.{c}"},
                    series_uids=[stir_uid])
            receipts[f"A/{subject}/{label}"] = {"collections_before": []}
        store.save()
    return receipts


def run(sessions: int, collections: int) -> tuple[int, float, int]:
    with tempfile.TemporaryDirectory() as tmp, XnatEmulator(Path(tmp), users={USER: PASSWORD}) as emu:
        receipts = seed(emu, sessions, collections)
        os.environ["XNAT_USER"], os.environ["XNAT_PASS"] = USER, PASSWORD
        source = make_source({"type": "xnat", "server": emu.url, "project": "BENCH",
                              "timepoint_pattern": "_(pre|post)$"}, "A")
        before = len(emu.log.entries)
        start = time.perf_counter()
        with source:
            listed = source.list_sessions()
            found = source.find_cleaned(listed, receipts)
        seconds = time.perf_counter() - start
        requests = len(emu.log.entries) - before
        assert len(listed) == sessions and len(found) == sessions * (collections > 1)
        return requests, seconds, len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[50])
    parser.add_argument("--collections", type=int, default=3,
                        help="ROI collections per session (the proposal and radiologist saves)")
    args = parser.parse_args()
    print(f"{'sessions':>8} {'requests':>8} {'per session':>11} {'seconds':>8} {'ms/session':>10} cleaned")
    for n in args.sessions:
        requests, seconds, cleaned = run(n, args.collections)
        print(f"{n:>8} {requests:>8} {requests / n:>11.2f} {seconds:>8.2f} {1000 * seconds / n:>10.1f} "
              f"{cleaned}")


if __name__ == "__main__":
    main()
