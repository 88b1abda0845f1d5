"""Figures in reports: matplotlib on its file-only backend (reports are written by flow
processes and Ray workers without a display), saved as PNG bytes for the artifact store."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, imported only when a report draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, title: str, dpi: int) -> bytes:
    """``fig`` titled, laid out and saved as PNG; closed afterwards (figures are not freed otherwise)."""
    plt = pyplot()
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
