"""Plot helpers shared by every recipe: matplotlib with the Agg backend and atomic PNG writes."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110, **savefig_kwargs) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file + rename), create parent dirs, close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi, **savefig_kwargs)
        tmp.replace(path)
    finally:
        pyplot().close(fig)
        tmp.unlink(missing_ok=True)
    from dforce.engine.rundir import note_written

    note_written(path)  # listed in its run directory's marker: dforce wrote it
    return path
