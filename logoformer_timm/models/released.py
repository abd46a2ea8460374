"""Checkpoints released by other authors (the DFER zoo): where to download them and what the authors report.

Such weights are not on the Hub: their pretrained cfg names the official download page (``origin_url``) and a
description of the file, so ``pretrained=True`` without ``pretrained_cfg_overlay=dict(file=...)`` raises naming
both. Their accuracy was not measured by this project (it has not used the DFER data sets): each cfg's ``notes`` and
:data:`REPORTED_RESULTS` carry the authors' own figure, labelled as theirs, with its source.
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional

__all__ = ['ReportedResult', 'REPORTED_RESULTS', 'released_cfg']


@dataclass(frozen=True)
class ReportedResult:
    """A test result the authors report for one released file (UAR / WAR in %), and where they report it."""

    dataset: str
    fold: Optional[int]
    uar: Optional[float]  # None where the authors publish no UAR for this file
    war: Optional[float]  # None where the authors publish no figure for this file
    source: str

    def describe(self) -> str:
        """One line, labelled as the authors' figure: 'Reported by the authors (not measured here): ...'."""
        split = f' fold {self.fold}' if self.fold is not None else ''
        uar = 'UAR not reported' if self.uar is None else f'UAR {self.uar:.2f}'
        war = 'WAR not reported' if self.war is None else f'WAR {self.war:.2f}'
        return (f'Reported by the authors (not measured by this project): {self.dataset}{split} '
                f'{uar} / {war}, source: {self.source}')


# 'arch.tag' -> the authors' reported result for that file (filled by :func:`released_cfg`)
REPORTED_RESULTS: Dict[str, ReportedResult] = {}


def released_cfg(
        name: str,
        base_cfg: Dict[str, Any],
        download_page: str,
        file_description: str,
        reported: ReportedResult,
        **overrides: Any,
) -> Dict[str, Any]:
    """The pretrained cfg of released file ``name`` ('arch.tag'): ``base_cfg`` plus download page, file and result."""
    REPORTED_RESULTS[name] = reported
    return dict(
        base_cfg, origin_url=download_page, description=file_description, notes=(reported.describe(),), **overrides)
