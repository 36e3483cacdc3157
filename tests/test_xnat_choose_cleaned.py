"""Which ROI collection is a session's cleaning: table-driven, no server.

The one rule of every source (``vhi.sources.cleaning``) on what the XNAT source finds: the
newest SEG collection on the STIR series that is neither the proposal nor among the
collections that existed when the proposal was last pushed changed (the receipt's
``collections_before``). Server dates only order the collections saved after the push; a
replaced proposal's date is never used.
"""

from __future__ import annotations

import pytest

from vhi.cohort.ids import Session
from vhi.sources import make_source
from vhi.sources.cleaning import PushRecord, choose_cleaning
from vhi.sources.xnat.roi import CONTOUR_REASON, contours_only

PROPOSAL = "VHI_PROPOSAL_S1"
STIR, T2 = "1.2.3.1", "1.2.3.2"


def col(ident: str, label: str, kind: str = "SEG", date: str = "", series: str = STIR) -> dict:
    return {"id": ident, "label": label, "type": kind, "name": "", "uid": f"uid-{ident}",
            "insert_date": date, "series": [series]}


OURS = col("P", PROPOSAL, date="2024-01-01 10:00:00.000")

CASES = [
    # (case, collections, before, chosen id, contour labels)
    ("a receipt without the list of what was there: nothing is taken",
     [OURS, col("A", "SEG_1", date="2024-01-02")], None, None, []),
    ("no proposal on the server", [col("A", "SEG_1", date="2024-01-02")], [], None, []),
    ("one cleaning after the push", [OURS, col("A", "SEG_1", date="2024-01-02")], [], "A", []),
    ("equal dates: the later viewer label",
     [OURS, col("A", "SEG_20240102_101010_001_S3", date="2024-01-02 10:10:10.000"),
      col("B", "SEG_20240102_101010_002_S3", date="2024-01-02 10:10:10.000")], [], "B", []),
    ("missing dates: the later viewer label",
     [OURS, col("A", "SEG_20240103_090000_000_S3"), col("B", "SEG_20240102_090000_000_S3")], [], "A", []),
    ("proposal replaced after the cleaning: the old cleaning is not taken",
     [col("P", PROPOSAL, date="2024-01-01 10:00:00.000"), col("A", "SEG_1", date="2024-01-02")],
     ["A"], None, []),
    ("replaced, dates kept by the server, then a new cleaning",
     [col("P", PROPOSAL, date="2024-01-01"), col("A", "SEG_1", date="2024-01-02"),
      col("B", "SEG_2", date="2024-01-05")], ["A"], "B", []),
    ("replaced, dates reset by the server (proposal newest): a new cleaning still counts",
     [col("P", PROPOSAL, date="2024-01-09"), col("B", "SEG_2", date="2024-01-05")], [], "B", []),
    ("RTSTRUCT only: nothing to collect, the reason says why",
     [OURS, col("R", "RT_1", "RTSTRUCT", "2024-01-02"), col("M", "AIM_1", "AIM", "2024-01-02")], [],
     None, ["AIM_1", "RT_1"]),
    ("contours and a SEG: the SEG", [OURS, col("R", "RT_1", "RTSTRUCT", "2024-01-03"),
                                     col("A", "SEG_1", date="2024-01-02")], [], "A", []),
    ("a cleaned SEG on another series is not the STIR's",
     [OURS, col("A", "SEG_1", date="2024-01-02", series=T2)], [], None, []),
    ("a SEG with added voxels is still the cleaning (only its series and time matter)",
     [OURS, col("A", "SEG_added_voxels", date="2024-01-02")], [], "A", []),
    ("a collection that was there before the push, and a new one",
     [OURS, col("O", "SEG_old", date="2024-01-08"), col("A", "SEG_1", date="2024-01-02")], ["O"], "A", []),
]


@pytest.mark.parametrize(("collections", "before", "chosen", "contours"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choose_cleaned(collections, before, chosen, contours, monkeypatch):
    assert _chosen(collections, before, STIR, monkeypatch) == chosen
    assert contours_only(collections, PROPOSAL, STIR, before) == contours


def _chosen(collections, before, stir, monkeypatch):
    """The id the rule picks among what the XNAT source makes of ``collections``."""
    source = make_source({"type": "xnat", "server": "https://xnat.example.org", "project": "P"}, site="s")
    monkeypatch.setattr(source, "_collections", lambda session: ("E1", stir, collections))
    receipt = {"pushed_at": "2024-01-01T10:00:00+00:00", "collection": {"id": "P", "uid": "uid-P"}}
    if before is not None:  # a receipt from before the list was kept has none: nothing is taken
        receipt["collections_before"] = before
    saves = source.cleaning_saves(SESSION, receipt)
    got = choose_cleaning(PushRecord.from_receipt(receipt), saves)
    return got.vhi.saved.id if got.vhi else None


SESSION = Session("s", "SUBJ", "S1", "pre", {})


def test_unknown_stir_series_does_not_filter(monkeypatch):
    collections = [OURS, col("A", "SEG_1", date="2024-01-02", series=T2)]
    assert _chosen(collections, [], "", monkeypatch) == "A"
    assert CONTOUR_REASON == "cleaned as contours (RTSTRUCT/AIM): save as a segmentation"
