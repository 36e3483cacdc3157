"""The published method in pure numpy.

Two STIR thresholds and residue removal (``lesions``), the automatic normal-marrow
reference (``reference``), VHI and agreement measures (``measure``).
"""
